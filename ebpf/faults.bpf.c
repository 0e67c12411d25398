// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * faultline datapath: drops the packets of active faults at the tc clsact hooks, and steers
 * those of delay faults into their netem classes. One load serves every device in every
 * namespace: each filter's classid tells the program which device's faults apply.
 *
 * Attached with legacy cls_bpf in direct-action mode (not TCX): TCX maps TC_ACT_STOLEN to
 * "next", and STOLEN is the only verdict that drops at egress without telling the sending
 * stack (SHOT makes sendto() fail with ENOBUFS, which is local congestion, not wire loss).
 * Packets no fault drops get TC_ACT_UNSPEC so the filters after ours still run.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "faultline.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FL_MAX_FAULTS);
	__type(key, __u32);
	__type(value, struct fl_fault);
} fl_faults SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_MAX_FAULTS);
	__type(key, __u32);
	__type(value, struct fl_counters);
} fl_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FL_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fl_prefix_key);
	__type(value, struct fl_candidates);
} fl_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_protected_list);
} fl_protected SEC(".maps");

/*
 * A packet seen from this host: local is our side whichever way it travels. It lives in
 * fl_scratch rather than on the stack so that fl_apply_fault, a global function, takes scalars
 * only: kernels before 5.12 refuse a pointer argument to a global function.
 */
struct fl_packet {
	__u32 local[4];
	__u32 remote[4];
	__u16 local_port;
	__u16 remote_port;
	__u8 proto;
	__u8 pad[3];
	__u32 segs;
	__u32 len;
	__u32 steer_class; /* set by the first matching delay fault */
};

/* One packet being classified per CPU: a tc program runs to completion on its CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_packet);
} fl_scratch SEC(".maps");

/* fl_apply_fault's answer for a delay fault: steer the packet, keep looking for drops. */
#define FL_STEER 1000
/* skb->cb word (tc's scratch space) by which fl_ingress marks a packet for the ifb. */
#define FL_CB_STEER 0
#define FL_STEER_MARK 0xfa17dea1

static __always_inline void fl_mapped_v4(__u32 out[4], __u32 addr)
{
	out[0] = 0;
	out[1] = 0;
	out[2] = bpf_htonl(0xffff);
	out[3] = addr;
}

static __always_inline void fl_copy_v6(__u32 out[4], const struct in6_addr *addr)
{
	out[0] = addr->in6_u.u6_addr32[0];
	out[1] = addr->in6_u.u6_addr32[1];
	out[2] = addr->in6_u.u6_addr32[2];
	out[3] = addr->in6_u.u6_addr32[3];
}

/* Fills pkt from the skb; returns 0 for IPv4/IPv6 packets, -1 for anything else. */
static __always_inline int fl_parse(struct __sk_buff *skb, int dir, struct fl_packet *pkt)
{
	__u32 src[4], dst[4];
	__u32 l4_off;
	__u16 ports[2] = {0, 0};

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		fl_mapped_v4(src, ip.saddr);
		fl_mapped_v4(dst, ip.daddr);
		pkt->proto = ip.protocol;
		l4_off = ETH_HLEN + ip.ihl * 4;
		/* Only the first fragment carries ports. */
		if (ip.frag_off & bpf_htons(0x1fff))
			pkt->proto = 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		fl_copy_v6(src, &ip6.saddr);
		fl_copy_v6(dst, &ip6.daddr);
		pkt->proto = ip6.nexthdr;
		l4_off = ETH_HLEN + sizeof(ip6);
		/* Neighbour discovery is IPv6's ARP: it passes as ARP does, so a fault cannot make
		 * a peer it spares (a protected one, another port's flows) unreachable. */
		if (pkt->proto == IPPROTO_ICMPV6) {
			__u8 type;

			if (bpf_skb_load_bytes(skb, l4_off, &type, 1) == 0 && type >= 133 && type <= 137)
				return -1;
		}
	} else {
		return -1;
	}

	if (pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)) < 0)
			ports[0] = ports[1] = 0;
	}

	if (dir == FL_DIR_EGRESS) {
		__builtin_memcpy(pkt->local, src, sizeof(src));
		__builtin_memcpy(pkt->remote, dst, sizeof(dst));
		pkt->local_port = bpf_ntohs(ports[0]);
		pkt->remote_port = bpf_ntohs(ports[1]);
	} else {
		__builtin_memcpy(pkt->local, dst, sizeof(dst));
		__builtin_memcpy(pkt->remote, src, sizeof(src));
		pkt->local_port = bpf_ntohs(ports[1]);
		pkt->remote_port = bpf_ntohs(ports[0]);
	}
	pkt->segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	pkt->len = skb->len;
	return 0;
}

static __always_inline int fl_cidr_contains(const struct fl_cidr *cidr, const __u32 addr[4])
{
	return ((addr[0] & cidr->mask[0]) == cidr->addr[0]) &&
	       ((addr[1] & cidr->mask[1]) == cidr->addr[1]) &&
	       ((addr[2] & cidr->mask[2]) == cidr->addr[2]) &&
	       ((addr[3] & cidr->mask[3]) == cidr->addr[3]);
}

static __always_inline int fl_port_range_has(const struct fl_port_range *range, __u16 port)
{
	return port >= range->first && port <= range->last;
}

/* Whether the policy protects the packet: then no fault may touch it. */
static __always_inline int fl_is_protected(const struct fl_packet *pkt)
{
	__u32 zero = 0;
	struct fl_protected_list *list = bpf_map_lookup_elem(&fl_protected, &zero);

	if (!list)
		return 0;
	for (int i = 0; i < FL_MAX_PROTECTED; i++) {
		const struct fl_protected *p;

		if (i >= list->count)
			break;
		p = &list->entries[i];
		if (p->proto && p->proto != pkt->proto)
			continue;
		if (!fl_cidr_contains(&p->cidr, pkt->local) && !fl_cidr_contains(&p->cidr, pkt->remote))
			continue;
		if (fl_port_range_has(&p->ports, pkt->local_port) ||
		    fl_port_range_has(&p->ports, pkt->remote_port))
			return 1;
	}
	return 0;
}

static __always_inline int fl_port_in(const struct fl_port_range *ranges, __u8 count, __u16 port)
{
	if (count == 0)
		return 1;
	for (int i = 0; i < FL_MAX_PORT_RANGES; i++) {
		if (i >= count)
			break;
		if (port >= ranges[i].first && port <= ranges[i].last)
			return 1;
	}
	return 0;
}

/* A 32-bit mix (murmur3 finaliser) of the flow; the same for both directions of a flow. */
static __always_inline __u32 fl_mix(__u32 h, __u32 v)
{
	v *= 0xcc9e2d51;
	v = (v << 15) | (v >> 17);
	v *= 0x1b873593;
	h ^= v;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 fl_flow_hash(const struct fl_packet *pkt, __u32 seed)
{
	__u32 h = seed;

	for (int i = 0; i < 4; i++) {
		h = fl_mix(h, pkt->local[i]);
		h = fl_mix(h, pkt->remote[i]);
	}
	h = fl_mix(h, ((__u32)pkt->local_port << 16) | pkt->remote_port);
	h = fl_mix(h, pkt->proto);
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline int fl_matches(const struct fl_match *m, const struct fl_packet *pkt,
				      int dir)
{
	if (!(m->hooks & (1 << dir)))
		return 0;
	if (m->proto && m->proto != pkt->proto)
		return 0;
	if (m->local_cidr_count) {
		int hit = 0;

		for (int i = 0; i < FL_MAX_LOCAL_CIDRS; i++) {
			if (i >= m->local_cidr_count)
				break;
			if (fl_cidr_contains(&m->local[i], pkt->local)) {
				hit = 1;
				break;
			}
		}
		if (!hit)
			return 0;
	}
	if (!fl_port_in(m->local_ports, m->local_port_count, pkt->local_port))
		return 0;
	if (!fl_port_in(m->remote_ports, m->remote_port_count, pkt->remote_port))
		return 0;
	if (m->flow_threshold && fl_flow_hash(pkt, m->flow_seed) >= m->flow_threshold)
		return 0;
	return 1;
}

/* True with probability threshold / 2^32; the all-ones threshold means always. */
static __always_inline int fl_chance(__u32 threshold)
{
	return threshold == 0xffffffff || bpf_get_prandom_u32() < threshold;
}

/* netem's gemodel: move between states, then lose with the new state's probability. */
static __always_inline int fl_burst_loss(struct fl_fault *fault)
{
	const struct fl_action *a = &fault->action;
	__u32 bad = fault->burst_bad;

	if (bad ? fl_chance(a->burst_exit) : fl_chance(a->burst_enter))
		bad = !bad;
	fault->burst_bad = bad;
	return fl_chance(bad ? a->burst_loss_bad : a->burst_loss_good);
}

/*
 * One draw per skb, as netem does: a GSO packet of n segments is lost whole with probability p,
 * so the expected share of wire packets lost is p; losses come in bursts of n. Counters count
 * wire packets (segments).
 */
static __always_inline int fl_should_drop(struct fl_fault *fault)
{
	switch (fault->action.kind) {
	case FL_ACTION_PARTITION:
		return 1;
	case FL_ACTION_LOSS:
		return fl_chance(fault->action.loss_threshold);
	case FL_ACTION_BURST_LOSS:
		return fl_burst_loss(fault);
	}
	return 0;
}

/*
 * One candidate fault against the CPU's packet in fl_scratch; returns the verdict if it drops
 * the packet, FL_STEER for a delay fault, else TC_ACT_UNSPEC. Global (not inlined), so the
 * verifier checks it once rather than once per candidate: inlined, the candidate loop exceeds
 * the verifier's instruction budget. Scalars only, for kernels before 5.12.
 */
__attribute__((noinline)) int fl_apply_fault(__u32 slot, __u32 dir, __u64 now)
{
	struct fl_counters *counters;
	struct fl_fault *fault;
	struct fl_packet *pkt;
	__u32 zero = 0;

	pkt = bpf_map_lookup_elem(&fl_scratch, &zero);
	if (!pkt)
		return TC_ACT_UNSPEC;
	dir &= 1; /* a bounded index for the verifier */
	fault = bpf_map_lookup_elem(&fl_faults, &slot);
	if (!fault || now >= fault->deadline_ns)
		return TC_ACT_UNSPEC;
	if (!fl_matches(&fault->match, pkt, dir))
		return TC_ACT_UNSPEC;
	counters = bpf_map_lookup_elem(&fl_counters, &slot);
	if (counters) {
		counters->matched_packets[dir] += pkt->segs;
		counters->matched_bytes[dir] += pkt->len;
	}
	if (fault->action.kind == FL_ACTION_DELAY) {
		if (!pkt->steer_class)
			pkt->steer_class = fault->action.class_id;
		return FL_STEER;
	}
	if (!fl_should_drop(fault))
		return TC_ACT_UNSPEC;
	if (counters) {
		counters->dropped_packets[dir] += pkt->segs;
		counters->dropped_bytes[dir] += pkt->len;
	}
	return dir == FL_DIR_EGRESS ? TC_ACT_STOLEN : TC_ACT_SHOT;
}

static __always_inline int fl_handle(struct __sk_buff *skb, int dir)
{
	/* cls_bpf sets tc_classid to the filter's classid before running the program. */
	struct fl_prefix_key key = {.prefix_len = 32 + 128, .attachment = skb->tc_classid};
	struct fl_candidates *candidates;
	struct fl_packet *pkt;
	__u32 zero = 0;
	__u64 now;

	pkt = bpf_map_lookup_elem(&fl_scratch, &zero);
	if (!pkt)
		return TC_ACT_UNSPEC;
	__builtin_memset(pkt, 0, sizeof(*pkt));
	if (fl_parse(skb, dir, pkt) < 0)
		return TC_ACT_UNSPEC;
	__builtin_memcpy(key.addr, pkt->remote, sizeof(key.addr));
	candidates = bpf_map_lookup_elem(&fl_prefixes, &key);
	if (!candidates)
		return TC_ACT_UNSPEC;
	/* Only packets some fault may match pay for the pass-list. */
	if (fl_is_protected(pkt))
		return TC_ACT_UNSPEC;

	now = bpf_ktime_get_ns();
	for (int i = 0; i < FL_MAX_CANDIDATES; i++) {
		int verdict;

		if (i >= candidates->count)
			break;
		verdict = fl_apply_fault(candidates->slots[i], dir, now);
		if (verdict != TC_ACT_UNSPEC && verdict != FL_STEER)
			return verdict;
	}
	if (!pkt->steer_class)
		return TC_ACT_UNSPEC;
	/* htb puts a packet whose priority names one of its classes into that class. */
	skb->priority = pkt->steer_class;
	/* At ingress the packet must reach the ifb: fl_ingress_steer's filter hands it over. */
	if (dir == FL_DIR_INGRESS)
		skb->cb[FL_CB_STEER] = FL_STEER_MARK;
	return TC_ACT_UNSPEC;
}

SEC("classifier")
int fl_egress(struct __sk_buff *skb)
{
	return fl_handle(skb, FL_DIR_EGRESS);
}

SEC("classifier")
int fl_ingress(struct __sk_buff *skb)
{
	/* The mark must not survive from whatever used the control block before tc. */
	skb->cb[FL_CB_STEER] = 0;
	return fl_handle(skb, FL_DIR_INGRESS);
}

/*
 * The ingress steering filter, after fl_ingress on the same hook, without direct action: a
 * packet fl_ingress marked is a match (-1), and the filter's act_mirred redirects it to the
 * device's ifb, whose htb holds the delay classes. Not bpf_redirect: before Linux 6.4 it does
 * not mark the packet as redirected, and the ifb drops every packet that lacks the mark.
 */
SEC("classifier")
int fl_ingress_steer(struct __sk_buff *skb)
{
	if (skb->cb[FL_CB_STEER] != FL_STEER_MARK)
		return 0;
	skb->cb[FL_CB_STEER] = 0;
	return -1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
