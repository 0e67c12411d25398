/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Replies built from the packet they answer, for reset and reject faults: the skb is cut to
 * the reply's length (bpf_skb_change_tail) and rewritten whole from a frame built in per-CPU
 * scratch memory, then sent where it must go by the caller (bpf_redirect). Private to
 * faults.bpf.c; nothing here is shared with faultd.
 *
 * Checksums: IPv4 and ICMP checksums are always complete. A TCP checksum depends on the skb:
 * CHECKSUM_PARTIAL (a local send on a device that offloads checksums, and what a veth carries
 * across) wants only the pseudo-header sum in the field, the device or the stack adds the
 * rest; anything else wants the complete sum. tc cannot read ip_summed, so fl_is_partial
 * asks bpf_l4_csum_replace, which leaves the field of a CHECKSUM_PARTIAL skb alone.
 * A locally delivered CHECKSUM_PARTIAL skb is trusted as verified, so either form reaches
 * the local stack intact.
 */
#ifndef FAULTLINE_REPLY_H
#define FAULTLINE_REPLY_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* linux/icmp.h would pull in libc's headers, which a BPF target has none of. */
#define FL_ICMP_DEST_UNREACH 3
#define FL_ICMP_PORT_UNREACH 3
#define FL_ICMPV6_DEST_UNREACH 1
#define FL_ICMPV6_PORT_UNREACH 4

#define FL_TCP_SYN 0x02
#define FL_TCP_RST 0x04
#define FL_TCP_ACK 0x10

#define FL_IP4_HLEN 20
#define FL_IP6_HLEN 40
#define FL_TCP_HLEN 20
#define FL_ICMP_HLEN 8
/* The datagram's first bytes an ICMP error quotes after its IP header: the UDP header. */
#define FL_QUOTE_L4 8

/* Frame offsets: Ethernet, then IP, then L4. */
#define FL_L3 ETH_HLEN
#define FL_L4_V4 (ETH_HLEN + FL_IP4_HLEN)
#define FL_L4_V6 (ETH_HLEN + FL_IP6_HLEN)
#define FL_TCP_RST_V4 (FL_L4_V4 + FL_TCP_HLEN)
#define FL_TCP_RST_V6 (FL_L4_V6 + FL_TCP_HLEN)
#define FL_ICMP_V4 (FL_L4_V4 + FL_ICMP_HLEN + FL_IP4_HLEN + FL_QUOTE_L4)
#define FL_ICMP_V6 (FL_L4_V6 + FL_ICMP_HLEN + FL_IP6_HLEN + FL_QUOTE_L4)
#define FL_FRAME_MAX FL_ICMP_V6

/* A reply under construction, and the pseudo-header its checksum covers. The frame starts two
 * bytes into the struct so that its IP and L4 headers are 4-byte aligned. */
struct fl_frame {
	__u8 pad[2];
	__u8 bytes[FL_FRAME_MAX];
	__u32 pseudo[10];
};

/* What the answered packet said, as fl_parse read it. */
struct fl_answered {
	__u8 mac_dst[ETH_ALEN]; /* as in the Ethernet header: destination, then source */
	__u8 mac_src[ETH_ALEN];
	__u32 src[4]; /* IPv4 in the last word */
	__u32 dst[4];
	__u16 sport; /* network order */
	__u16 dport;
	__u8 v6;
};

static __always_inline __u16 fl_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* The Ethernet header of a reply: to the answered packet's sender when `back`. */
static __always_inline void fl_frame_eth(struct fl_frame *f, const struct fl_answered *a, int back,
					  __u16 proto)
{
	__builtin_memcpy(f->bytes, back ? a->mac_src : a->mac_dst, ETH_ALEN);
	__builtin_memcpy(f->bytes + ETH_ALEN, back ? a->mac_dst : a->mac_src, ETH_ALEN);
	*(__u16 *)(f->bytes + 2 * ETH_ALEN) = bpf_htons(proto);
}

/* An IPv4 header (no options) with its checksum; the pseudo-header of its L4 in f->pseudo. */
static __always_inline void fl_frame_ip4(struct fl_frame *f, const struct fl_answered *a, int back,
					  __u8 proto, __u16 l4_len)
{
	struct iphdr *ip = (struct iphdr *)(f->bytes + FL_L3);
	__u32 saddr = back ? a->dst[3] : a->src[3];
	__u32 daddr = back ? a->src[3] : a->dst[3];

	__builtin_memset(ip, 0, FL_IP4_HLEN);
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(FL_IP4_HLEN + l4_len);
	ip->frag_off = bpf_htons(0x4000); /* don't fragment */
	ip->ttl = 64;
	ip->protocol = proto;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = ~fl_fold(bpf_csum_diff(0, 0, (__be32 *)ip, FL_IP4_HLEN, 0));
	f->pseudo[0] = saddr;
	f->pseudo[1] = daddr;
	f->pseudo[2] = bpf_htonl(((__u32)proto << 16) | l4_len);
}

/* An IPv6 header; the pseudo-header of its L4 in f->pseudo. */
static __always_inline void fl_frame_ip6(struct fl_frame *f, const struct fl_answered *a, int back,
					  __u8 proto, __u16 l4_len)
{
	struct ipv6hdr *ip6 = (struct ipv6hdr *)(f->bytes + FL_L3);
	const __u32 *saddr = back ? a->dst : a->src;
	const __u32 *daddr = back ? a->src : a->dst;

	__builtin_memset(ip6, 0, FL_IP6_HLEN);
	ip6->version = 6;
	ip6->payload_len = bpf_htons(l4_len);
	ip6->nexthdr = proto;
	ip6->hop_limit = 64;
	__builtin_memcpy(&ip6->saddr, saddr, 16);
	__builtin_memcpy(&ip6->daddr, daddr, 16);
	__builtin_memcpy(f->pseudo, saddr, 16);
	__builtin_memcpy(f->pseudo + 4, daddr, 16);
	f->pseudo[8] = bpf_htonl(l4_len);
	f->pseudo[9] = bpf_htonl(proto);
}

/* Whether the skb's L4 checksum is left to the device or stack (CHECKSUM_PARTIAL): a
 * non-pseudo change through bpf_l4_csum_replace moves the field of any other skb. The field
 * holds what it held on entry on return: the probe's own change is undone without touching
 * skb->csum, which it never entered. */
static __always_inline int fl_is_partial(struct __sk_buff *skb, __u32 check_off)
{
	__u16 before = 0, after = 0;

	if (bpf_skb_load_bytes(skb, check_off, &before, sizeof(before)) < 0)
		return 0;
	if (bpf_l4_csum_replace(skb, check_off, 0, bpf_htons(1), 2) < 0)
		return 0;
	if (bpf_skb_load_bytes(skb, check_off, &after, sizeof(after)) < 0)
		return 0;
	if (after != before) {
		bpf_skb_store_bytes(skb, check_off, &before, sizeof(before), 0);
		return 0;
	}
	return 1;
}

/* Writes the frame's first `len` bytes over the skb, cut or grown to `len` first. */
static __always_inline int fl_frame_store(struct __sk_buff *skb, struct fl_frame *f, __u32 len)
{
	if (len > FL_FRAME_MAX)
		return -1;
	if (bpf_skb_change_tail(skb, len, 0) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, 0, f->bytes, len, BPF_F_RECOMPUTE_CSUM);
}

/*
 * Rewrites the skb into a bare TCP segment (no options, no payload) with `flags`, `seq` and
 * `ack` (host order), between the answered packet's endpoints: from its receiver to its
 * sender when `back`, else the same way.
 */
static __always_inline int fl_tcp_reply(struct __sk_buff *skb, struct fl_frame *f,
					const struct fl_answered *a, int back, __u8 flags, __u32 seq,
					__u32 ack)
{
	__u32 l4 = a->v6 ? FL_L4_V6 : FL_L4_V4;
	__u32 len = a->v6 ? FL_TCP_RST_V6 : FL_TCP_RST_V4;
	__u8 *tcp;
	__u16 check;
	__u64 sum;

	if (a->v6) {
		fl_frame_eth(f, a, back, ETH_P_IPV6);
		fl_frame_ip6(f, a, back, IPPROTO_TCP, FL_TCP_HLEN);
		tcp = f->bytes + FL_L4_V6;
	} else {
		fl_frame_eth(f, a, back, ETH_P_IP);
		fl_frame_ip4(f, a, back, IPPROTO_TCP, FL_TCP_HLEN);
		tcp = f->bytes + FL_L4_V4;
	}
	__builtin_memset(tcp, 0, FL_TCP_HLEN);
	*(__u16 *)tcp = back ? a->dport : a->sport;
	*(__u16 *)(tcp + 2) = back ? a->sport : a->dport;
	*(__u32 *)(tcp + 4) = bpf_htonl(seq);
	*(__u32 *)(tcp + 8) = bpf_htonl(ack);
	tcp[12] = (FL_TCP_HLEN / 4) << 4;
	tcp[13] = flags;
	if (fl_frame_store(skb, f, len) < 0)
		return -1;
	sum = bpf_csum_diff(0, 0, f->pseudo, a->v6 ? 40 : 12, 0);
	if (fl_is_partial(skb, l4 + 16))
		check = fl_fold(sum);
	else
		check = ~fl_fold(bpf_csum_diff(0, 0, (__be32 *)tcp, FL_TCP_HLEN, sum));
	return bpf_skb_store_bytes(skb, l4 + 16, &check, sizeof(check), BPF_F_RECOMPUTE_CSUM);
}

/*
 * Rewrites a UDP datagram (IPv4 without options, or IPv6 without extension headers) into the
 * ICMP or ICMPv6 port unreachable its receiver would send back, quoting the datagram's IP and
 * UDP headers.
 */
static __always_inline int fl_port_unreachable(struct __sk_buff *skb, struct fl_frame *f,
					       const struct fl_answered *a)
{
	__u8 *icmp;
	__u64 sum;

	if (a->v6) {
		icmp = f->bytes + FL_L4_V6;
		__builtin_memset(icmp, 0, FL_ICMP_HLEN);
		if (bpf_skb_load_bytes(skb, FL_L3, icmp + FL_ICMP_HLEN, FL_IP6_HLEN + FL_QUOTE_L4) < 0)
			return -1;
		fl_frame_eth(f, a, 1, ETH_P_IPV6);
		fl_frame_ip6(f, a, 1, IPPROTO_ICMPV6, FL_ICMP_HLEN + FL_IP6_HLEN + FL_QUOTE_L4);
		icmp[0] = FL_ICMPV6_DEST_UNREACH;
		icmp[1] = FL_ICMPV6_PORT_UNREACH;
		sum = bpf_csum_diff(0, 0, f->pseudo, 40, 0);
		sum = bpf_csum_diff(0, 0, (__be32 *)icmp, FL_ICMP_HLEN + FL_IP6_HLEN + FL_QUOTE_L4,
				    sum);
		*(__u16 *)(icmp + 2) = ~fl_fold(sum);
		return fl_frame_store(skb, f, FL_ICMP_V6);
	}
	icmp = f->bytes + FL_L4_V4;
	__builtin_memset(icmp, 0, FL_ICMP_HLEN);
	if (bpf_skb_load_bytes(skb, FL_L3, icmp + FL_ICMP_HLEN, FL_IP4_HLEN + FL_QUOTE_L4) < 0)
		return -1;
	fl_frame_eth(f, a, 1, ETH_P_IP);
	fl_frame_ip4(f, a, 1, IPPROTO_ICMP, FL_ICMP_HLEN + FL_IP4_HLEN + FL_QUOTE_L4);
	icmp[0] = FL_ICMP_DEST_UNREACH;
	icmp[1] = FL_ICMP_PORT_UNREACH;
	sum = bpf_csum_diff(0, 0, (__be32 *)icmp, FL_ICMP_HLEN + FL_IP4_HLEN + FL_QUOTE_L4, 0);
	*(__u16 *)(icmp + 2) = ~fl_fold(sum);
	return fl_frame_store(skb, f, FL_ICMP_V4);
}

#endif
