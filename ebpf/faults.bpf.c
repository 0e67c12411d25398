// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * faultline datapath: drops the packets of active faults at the tc clsact hooks, steers those
 * of delay faults into their netem classes, answers those of reset and reject faults with
 * the RST or ICMP error a peer would send (include/reply.h), holds TCP connections to a byte
 * budget for stall faults, and flips payload bits in the packets of corrupt faults
 * (include/corrupt.h). One load serves every device in every namespace: each filter's classid
 * tells the program which device's faults apply.
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
#include "reply.h"
#include "corrupt.h"

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
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FL_MAX_FAULTS);
	__type(key, __u32);
	__type(value, struct fl_action_counters);
} fl_action_counters SEC(".maps");

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
 * TCP connections as faults see them: those whose SYN a fault with `connections` new or
 * established saw, and every connection a stall holds to its budget. Bounded: the least
 * recently used go first (a forgotten connection then counts as established, and a stall
 * starts its budget over from the next segment). faultd deletes a fault's entries with it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FL_MAX_CONNS);
	__type(key, struct fl_conn_key);
	__type(value, struct fl_conn);
} fl_conns SEC(".maps");

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
	__u8 tcp_flags;
	__u8 replyable;    /* TCP or UDP right after a plain IP header: a reply can quote it */
	__u8 pad2[2];
	__u32 tcp_seq; /* host order */
	__u32 tcp_ack;
	__u32 l3_len;      /* the IP header's length of the packet: header and payload */
	__u32 l4_off;      /* offsets from the Ethernet header, TCP and UDP only */
	__u32 payload_off;
	__u32 payload;     /* L4 payload bytes, as the IP header counts them */
	/* Set by a stall whose budget ends inside the packet, for fl_trim: payload bytes kept. */
	__u32 trim_keep;
	/* Set by the fault that answers (reset, reject) or trims (stall) the packet. */
	__u32 reply_slot;
	__u32 reply_kind;
	__u32 reply_flags;
	/* Set by the corrupt fault that picked the packet, for fl_corrupt; 0 bits = none did. */
	__u32 corrupt_slot;
	__u32 corrupt_bits;
	__u32 corrupt_flags;
	struct fl_answered answered;
	/* Not cleared per packet: each reply builder writes what it sends before reading it. */
	struct fl_frame frame;
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
/* fl_apply_fault's answer for a reset or reject fault: fl_reply answers the packet. (A corrupt
 * fault answers TC_ACT_UNSPEC: the packet may still be dropped by a later fault.) */
#define FL_REPLY 1001
/* fl_apply_fault's answer for a stall whose budget ends inside the packet: fl_trim cuts it. */
#define FL_TRIM 1002
#define FL_TCP_FIN 0x01
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
	__u32 l4_off, l3_len;
	__u16 ports[2] = {0, 0};

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		fl_mapped_v4(src, ip.saddr);
		fl_mapped_v4(dst, ip.daddr);
		pkt->proto = ip.protocol;
		l4_off = ETH_HLEN + ip.ihl * 4;
		l3_len = bpf_ntohs(ip.tot_len);
		pkt->replyable = ip.ihl == 5;
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
		l3_len = sizeof(ip6) + bpf_ntohs(ip6.payload_len);
		pkt->replyable = 1;
		pkt->answered.v6 = 1;
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
	} else {
		pkt->replyable = 0;
	}
	pkt->l4_off = l4_off;
	pkt->l3_len = l3_len;
	if (pkt->replyable) {
		struct fl_answered *a = &pkt->answered;

		__builtin_memcpy(a->src, src, sizeof(src));
		__builtin_memcpy(a->dst, dst, sizeof(dst));
		a->sport = ports[0];
		a->dport = ports[1];
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

/*
 * The rest of what the faults may need of a packet fl_parse read, which no packet outside a
 * fault's addresses pays for: the TCP header's sequence numbers and flags, where the payload
 * starts and its length, and the MAC addresses a reply swaps.
 */
static __always_inline void fl_parse_rest(struct __sk_buff *skb, struct fl_packet *pkt)
{
	__u32 l4_off = pkt->l4_off;

	if (pkt->proto == IPPROTO_TCP) {
		struct {
			__be32 seq;
			__be32 ack;
			__u8 offset; /* header length in words, in the high nibble */
			__u8 flags;
		} tcp;

		if (bpf_skb_load_bytes(skb, l4_off + 4, &tcp, 10) == 0) {
			pkt->tcp_seq = bpf_ntohl(tcp.seq);
			pkt->tcp_ack = bpf_ntohl(tcp.ack);
			pkt->tcp_flags = tcp.flags;
			pkt->payload_off = l4_off + (tcp.offset >> 4) * 4;
		} else {
			pkt->replyable = 0;
		}
	} else if (pkt->proto == IPPROTO_UDP) {
		pkt->payload_off = l4_off + FL_UDP_HLEN;
	}
	/* A malformed header that claims more than the packet holds carries no payload. */
	if (pkt->payload_off && ETH_HLEN + pkt->l3_len > pkt->payload_off)
		pkt->payload = ETH_HLEN + pkt->l3_len - pkt->payload_off;
	if (pkt->replyable && bpf_skb_load_bytes(skb, 0, pkt->answered.mac_dst, 2 * ETH_ALEN) < 0)
		pkt->replyable = 0;
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

/* Drops the packet at hook `dir` and counts it: egress's verdict takes the skb, ingress's drops. */
static __always_inline int fl_drop(struct fl_counters *counters, const struct fl_packet *pkt,
				   __u32 dir)
{
	if (counters) {
		counters->dropped_packets[dir & 1] += pkt->segs;
		counters->dropped_bytes[dir & 1] += pkt->len;
	}
	return dir == FL_DIR_EGRESS ? TC_ACT_STOLEN : TC_ACT_SHOT;
}

static __always_inline void fl_conn_key_of(struct fl_conn_key *key, __u32 slot,
					   const struct fl_packet *pkt)
{
	key->slot = slot;
	key->local_port = pkt->local_port;
	key->remote_port = pkt->remote_port;
	__builtin_memcpy(key->local, pkt->local, sizeof(key->local));
	__builtin_memcpy(key->remote, pkt->remote, sizeof(key->remote));
}

/*
 * The fault's entry for the packet's TCP connection. A connect's SYN enters the connection
 * afresh, as new; the SYN/ACK answering it enters it as new unless the SYN already did (the
 * fault may see only one of them). With `any`, a connection first seen otherwise is entered
 * too, as established. NULL when there is no entry.
 */
static __always_inline struct fl_conn *fl_track(__u32 slot, const struct fl_packet *pkt, int any)
{
	struct fl_conn_key key = {};
	struct fl_conn *conn;

	fl_conn_key_of(&key, slot, pkt);
	conn = bpf_map_lookup_elem(&fl_conns, &key);
	if (pkt->tcp_flags & FL_TCP_SYN) {
		struct fl_conn opened = {.flags = FL_CONN_F_NEW};

		if (conn && (pkt->tcp_flags & FL_TCP_ACK))
			return conn;
		bpf_map_update_elem(&fl_conns, &key, &opened, BPF_ANY);
		return bpf_map_lookup_elem(&fl_conns, &key);
	}
	if (!conn && any) {
		struct fl_conn seen = {};

		bpf_map_update_elem(&fl_conns, &key, &seen, BPF_NOEXIST);
		conn = bpf_map_lookup_elem(&fl_conns, &key);
	}
	return conn;
}

/*
 * Whether the packet belongs to the connections the fault acts on (`connections`): a TCP
 * connection is new when the fault saw its SYN, else established. Other protocols have no
 * opening to see: all their flows are new.
 */
static __always_inline int fl_connection_matches(const struct fl_match *m,
						  const struct fl_packet *pkt,
						  const struct fl_conn *conn)
{
	int is_new;

	if (m->connections == FL_CONN_ALL)
		return 1;
	if (pkt->proto != IPPROTO_TCP)
		return m->connections == FL_CONN_NEW;
	is_new = conn && (conn->flags & FL_CONN_F_NEW);
	return is_new == (m->connections == FL_CONN_NEW);
}

/* Data up to sequence number `upto` has passed a stall: what passes for the first time counts. */
static __always_inline void fl_allow(struct fl_conn *conn, __u32 slot, __u32 dir, __u32 upto)
{
	struct fl_action_counters *acts;
	__s32 ahead = (__s32)(upto - conn->allowed_end[dir & 1]);

	if (ahead <= 0)
		return;
	conn->allowed_end[dir & 1] = upto;
	acts = bpf_map_lookup_elem(&fl_action_counters, &slot);
	if (acts)
		__sync_fetch_and_add(&acts->allowed_bytes[dir & 1], ahead);
}

/*
 * A stall's verdict on a TCP segment. Per direction the connection's budget ends stall_bytes
 * after the first sequence number the fault saw (the SYN's plus one when it saw the SYN), so
 * a retransmission counts once and ordering does not matter. A segment within the budget
 * passes; one the budget ends inside is cut to it (FL_TRIM); data or a FIN past it is dropped,
 * or answered with a RST (FL_REPLY) for reset_after. Pure ACKs pass: they carry no bytes, and
 * the other direction's data needs them. A SYN opens the budget afresh; a RST passes.
 */
static __always_inline int fl_stall(struct fl_fault *fault, struct fl_conn *conn,
				    struct fl_packet *pkt, __u32 slot, __u32 dir,
				    struct fl_counters *counters)
{
	__u32 budget_flag = FL_CONN_F_BUDGET(dir);
	__u32 end, seq = pkt->tcp_seq;
	__s32 room;

	if (!conn || (pkt->tcp_flags & FL_TCP_RST))
		return TC_ACT_UNSPEC;
	if (pkt->tcp_flags & FL_TCP_SYN) {
		conn->budget_end[dir] = seq + 1 + fault->action.stall_bytes;
		conn->allowed_end[dir] = seq + 1;
		conn->flags |= budget_flag;
		return TC_ACT_UNSPEC;
	}
	if (!(conn->flags & budget_flag)) {
		conn->budget_end[dir] = seq + fault->action.stall_bytes;
		conn->allowed_end[dir] = seq;
		conn->flags |= budget_flag;
	}
	if (!pkt->payload && !(pkt->tcp_flags & FL_TCP_FIN))
		return TC_ACT_UNSPEC;
	end = conn->budget_end[dir];
	room = (__s32)(end - seq);
	if (room > 0 && pkt->payload <= (__u32)room && !(pkt->payload == (__u32)room &&
							  (pkt->tcp_flags & FL_TCP_FIN))) {
		fl_allow(conn, slot, dir, seq + pkt->payload);
		return TC_ACT_UNSPEC;
	}
	if (room > 0 && pkt->payload > (__u32)room) {
		pkt->reply_slot = slot;
		pkt->trim_keep = room;
		return FL_TRIM;
	}
	if (fault->action.flags & FL_ACTION_F_RESET) {
		pkt->reply_slot = slot;
		pkt->reply_kind = FL_ACTION_RESET;
		pkt->reply_flags = fault->action.flags;
		return FL_REPLY;
	}
	return fl_drop(counters, pkt, dir);
}

/*
 * Whether the fault's action applies to the packet at all: a reset answers TCP segments but
 * lets the handshake (SYN) and RSTs through, so a new connection opens and is then reset, and
 * no RST is ever answered; a reject answers what opens a connection (a SYN) or is a UDP
 * datagram; a stall holds TCP. Packets that cannot be answered (IPv4 options, IPv6 extension
 * headers) are dropped instead (fl_reply).
 */
static __always_inline int fl_action_applies(__u32 kind, const struct fl_packet *pkt)
{
	switch (kind) {
	case FL_ACTION_RESET:
		return pkt->proto == IPPROTO_TCP && !(pkt->tcp_flags & (FL_TCP_SYN | FL_TCP_RST));
	case FL_ACTION_REJECT:
		if (pkt->proto == IPPROTO_UDP)
			return 1;
		return pkt->proto == IPPROTO_TCP &&
		       (pkt->tcp_flags & (FL_TCP_SYN | FL_TCP_ACK | FL_TCP_RST)) == FL_TCP_SYN;
	case FL_ACTION_STALL:
		return pkt->proto == IPPROTO_TCP;
	case FL_ACTION_CORRUPT:
		/* TCP and UDP with payload; a later IPv4 fragment has no L4 header (proto 0). */
		return (pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP) && pkt->payload;
	}
	return 1;
}

/*
 * One candidate fault against the CPU's packet in fl_scratch; returns the verdict if it drops
 * the packet, FL_STEER for a delay fault, FL_REPLY for a reset or reject fault (whose slot it
 * notes in the packet), FL_TRIM for a stall's last bytes, else TC_ACT_UNSPEC. A corrupt
 * fault that picks the packet notes itself in the packet for fl_corrupt, unless another did
 * first: one fault corrupts a packet. Global (not inlined), so the verifier checks it once
 * rather than once per candidate: inlined, the candidate loop exceeds the verifier's
 * instruction budget. Scalars only, for kernels before 5.12.
 */
__attribute__((noinline)) int fl_apply_fault(__u32 slot, __u32 dir, __u64 now)
{
	struct fl_counters *counters;
	struct fl_conn *conn = 0;
	struct fl_fault *fault;
	struct fl_packet *pkt;
	__u32 zero = 0;
	int stall;

	pkt = bpf_map_lookup_elem(&fl_scratch, &zero);
	if (!pkt)
		return TC_ACT_UNSPEC;
	dir &= 1; /* a bounded index for the verifier */
	fault = bpf_map_lookup_elem(&fl_faults, &slot);
	if (!fault || now >= fault->deadline_ns)
		return TC_ACT_UNSPEC;
	if (!fl_matches(&fault->match, pkt, dir))
		return TC_ACT_UNSPEC;
	stall = fault->action.kind == FL_ACTION_STALL;
	if (pkt->proto == IPPROTO_TCP && (stall || fault->match.connections != FL_CONN_ALL))
		conn = fl_track(slot, pkt, stall);
	if (!fl_connection_matches(&fault->match, pkt, conn))
		return TC_ACT_UNSPEC;
	if (!fl_action_applies(fault->action.kind, pkt))
		return TC_ACT_UNSPEC;
	counters = bpf_map_lookup_elem(&fl_counters, &slot);
	if (counters) {
		counters->matched_packets[dir] += pkt->segs;
		counters->matched_bytes[dir] += pkt->len;
	}
	switch (fault->action.kind) {
	case FL_ACTION_DELAY:
		if (!pkt->steer_class)
			pkt->steer_class = fault->action.class_id;
		return FL_STEER;
	case FL_ACTION_RESET:
	case FL_ACTION_REJECT:
		pkt->reply_slot = slot;
		pkt->reply_kind = fault->action.kind;
		pkt->reply_flags = fault->action.flags;
		return FL_REPLY;
	case FL_ACTION_STALL:
		return fl_stall(fault, conn, pkt, slot, dir, counters);
	case FL_ACTION_CORRUPT:
		if (!pkt->corrupt_bits && fl_chance(fault->action.corrupt_threshold)) {
			pkt->corrupt_slot = slot;
			pkt->corrupt_bits = fault->action.corrupt_bits;
			pkt->corrupt_flags = fault->action.flags;
		}
		return TC_ACT_UNSPEC;
	}
	if (!fl_should_drop(fault))
		return TC_ACT_UNSPEC;
	return fl_drop(counters, pkt, dir);
}

/* Where a reply goes from hook `dir`: back to this host (the device's ingress) from egress,
 * out of the device from ingress. Sent on as the packet's verdict, or as a copy (`clone`). */
static __always_inline int fl_send_back(struct __sk_buff *skb, __u32 dir, int clone)
{
	__u64 flags = dir == FL_DIR_EGRESS ? BPF_F_INGRESS : 0;

	if (clone)
		return bpf_clone_redirect(skb, skb->ifindex, flags) == 0 ? 0 : -1;
	return bpf_redirect(skb->ifindex, flags);
}

/*
 * Answers the CPU's packet for the fault fl_apply_fault chose, and returns the verdict.
 * A reset makes this host's side see a RST whose sequence number is exactly what it expects
 * next (its rcv_nxt, RFC 5961: at egress the segment's ack, at ingress its seq) and, with
 * FL_ACTION_F_PEER, sends the peer one with what it expects next likewise (at egress the
 * segment's seq, at ingress its ack). A reject answers the packet's sender as a closed port
 * would: RST/ACK for a SYN, port unreachable for a UDP datagram. What cannot be answered is
 * dropped. Global, and so verified once, apart from the candidate loop; the context and a
 * scalar are what kernels before 5.12 let a global function take.
 */
__attribute__((noinline)) int fl_reply(struct __sk_buff *skb, __u32 dir)
{
	struct fl_action_counters *acts;
	struct fl_counters *counters;
	struct fl_packet *pkt;
	__u32 zero = 0, slot;
	__u64 *sent = 0;
	int verdict;

	pkt = bpf_map_lookup_elem(&fl_scratch, &zero);
	if (!pkt)
		return TC_ACT_UNSPEC;
	dir &= 1;
	slot = pkt->reply_slot;
	counters = bpf_map_lookup_elem(&fl_counters, &slot);
	acts = bpf_map_lookup_elem(&fl_action_counters, &slot);
	if (!pkt->replyable)
		goto drop;
	if (pkt->reply_kind == FL_ACTION_REJECT) {
		if (pkt->proto == IPPROTO_UDP) {
			if (fl_port_unreachable(skb, &pkt->frame, &pkt->answered) < 0)
				goto drop;
		} else if (fl_tcp_reply(skb, &pkt->frame, &pkt->answered, 1,
					FL_TCP_RST | FL_TCP_ACK, 0,
					pkt->tcp_seq + 1 + pkt->payload) < 0) {
			goto drop;
		}
		if (acts)
			__sync_fetch_and_add(&acts->rejects_sent[dir], 1);
		return fl_send_back(skb, dir, 0);
	}
	if (acts)
		sent = &acts->resets_sent[dir];
	if (dir == FL_DIR_EGRESS) {
		/* This host's RST comes back in at the device; the peer's goes on out. */
		if (fl_tcp_reply(skb, &pkt->frame, &pkt->answered, 1, FL_TCP_RST, pkt->tcp_ack, 0) < 0)
			goto drop;
		if (!(pkt->reply_flags & FL_ACTION_F_PEER)) {
			if (sent)
				__sync_fetch_and_add(sent, 1);
			return fl_send_back(skb, dir, 0);
		}
		if (fl_send_back(skb, dir, 1) < 0)
			goto drop;
		if (sent)
			__sync_fetch_and_add(sent, 1);
		verdict = fl_tcp_reply(skb, &pkt->frame, &pkt->answered, 0, FL_TCP_RST | FL_TCP_ACK,
				       pkt->tcp_seq, pkt->tcp_ack);
	} else {
		/* The peer's RST goes back out of the device; this host's goes on in. */
		if (pkt->reply_flags & FL_ACTION_F_PEER) {
			if (fl_tcp_reply(skb, &pkt->frame, &pkt->answered, 1,
					 FL_TCP_RST | FL_TCP_ACK, pkt->tcp_ack, pkt->tcp_seq) < 0)
				goto drop;
			if (fl_send_back(skb, dir, 1) < 0)
				goto drop;
			if (sent)
				__sync_fetch_and_add(sent, 1);
		}
		verdict = fl_tcp_reply(skb, &pkt->frame, &pkt->answered, 0, FL_TCP_RST, pkt->tcp_seq,
				       0);
	}
	if (verdict < 0)
		goto drop;
	if (sent)
		__sync_fetch_and_add(sent, 1);
	return TC_ACT_UNSPEC;
drop:
	return fl_drop(counters, pkt, dir);
}

/*
 * Cuts the CPU's packet, a TCP segment its stall's budget ends inside, to the bytes left in
 * the budget, so exactly the budget reaches the other side. Only a CHECKSUM_PARTIAL segment
 * (a local send, and what a veth carries across) can be cut here: its checksum field holds
 * the pseudo-header sum, which changes with the length alone, and the device or the stack
 * sums the payload later. Any other segment, and a GSO packet, is withheld whole instead: TCP
 * sends the data again, and a retransmission after a timeout is one segment, which is cut.
 */
__attribute__((noinline)) int fl_trim(struct __sk_buff *skb, __u32 dir)
{
	struct fl_conn_key key = {};
	struct fl_counters *counters;
	struct fl_packet *pkt;
	struct fl_conn *conn;
	__u32 zero = 0, slot, l4, keep, old_len, new_len;
	__u8 flags;

	pkt = bpf_map_lookup_elem(&fl_scratch, &zero);
	if (!pkt)
		return TC_ACT_UNSPEC;
	dir &= 1;
	slot = pkt->reply_slot;
	counters = bpf_map_lookup_elem(&fl_counters, &slot);
	l4 = pkt->l4_off;
	keep = pkt->trim_keep;
	/* Plain IP headers only (replyable), so l4 is at most FL_L4_V6. */
	if (!pkt->replyable || skb->gso_segs > 1 || keep >= pkt->payload || l4 > FL_L4_V6)
		goto drop;
	if (!fl_is_partial(skb, l4 + 16))
		goto drop;
	old_len = pkt->payload_off - l4 + pkt->payload;
	new_len = pkt->payload_off - l4 + keep;
	if (bpf_skb_change_tail(skb, l4 + new_len, 0) < 0)
		goto drop;
	/* The pseudo-header's length, all of the segment that a CHECKSUM_PARTIAL field holds. */
	if (bpf_l4_csum_replace(skb, l4 + 16, bpf_htons(old_len), bpf_htons(new_len),
				BPF_F_PSEUDO_HDR | 2) < 0)
		goto drop;
	if (pkt->answered.v6) {
		__be16 payload_len = bpf_htons(new_len);

		if (bpf_skb_store_bytes(skb, FL_L3 + 4, &payload_len, 2, 0) < 0)
			goto drop;
	} else {
		__be16 old_total = bpf_htons(FL_IP4_HLEN + old_len);
		__be16 total = bpf_htons(FL_IP4_HLEN + new_len);

		if (bpf_skb_store_bytes(skb, FL_L3 + 2, &total, 2, 0) < 0 ||
		    bpf_l3_csum_replace(skb, FL_L3 + 10, old_total, total, 2) < 0)
			goto drop;
	}
	/* A FIN would now claim the sequence number after the last byte kept. */
	if (pkt->tcp_flags & FL_TCP_FIN) {
		flags = pkt->tcp_flags & ~FL_TCP_FIN;
		if (bpf_skb_store_bytes(skb, l4 + 13, &flags, 1, 0) < 0)
			goto drop;
	}
	fl_conn_key_of(&key, slot, pkt);
	conn = bpf_map_lookup_elem(&fl_conns, &key);
	if (conn)
		fl_allow(conn, slot, dir, pkt->tcp_seq + keep);
	return TC_ACT_UNSPEC;
drop:
	return fl_drop(counters, pkt, dir);
}

/*
 * Corrupts the CPU's packet for the fault fl_apply_fault noted, and returns the verdict
 * (include/corrupt.h says what is flipped and how checksums are kept or broken). With a broken
 * checksum, a CHECKSUM_PARTIAL skb cannot carry it (its checksum is completed later over the
 * corrupted bytes, and a veth peer trusts it unchecked): it is dropped here instead, as the
 * receiving kernel would have discarded it, and counted corrupted and dropped. Global, so
 * verified once; the context and a scalar, as kernels before 5.12 allow.
 */
__attribute__((noinline)) int fl_corrupt(struct __sk_buff *skb, __u32 dir)
{
	struct fl_action_counters *acts;
	struct fl_packet *pkt;
	__u32 zero = 0, slot;
	int flipped;

	pkt = bpf_map_lookup_elem(&fl_scratch, &zero);
	if (!pkt)
		return TC_ACT_UNSPEC;
	dir &= 1;
	slot = pkt->corrupt_slot;
	flipped = fl_flip_payload_bits(skb, pkt->proto, pkt->l4_off, pkt->payload_off,
				       pkt->payload, pkt->corrupt_bits,
				       pkt->corrupt_flags & FL_ACTION_F_BROKEN);
	if (flipped <= 0 && flipped != FL_CORRUPT_UNCARRIABLE)
		return TC_ACT_UNSPEC;
	acts = bpf_map_lookup_elem(&fl_action_counters, &slot);
	if (acts)
		__sync_fetch_and_add(&acts->corrupted_packets[dir], 1);
	if (flipped == FL_CORRUPT_UNCARRIABLE)
		return fl_drop(bpf_map_lookup_elem(&fl_counters, &slot), pkt, dir);
	return TC_ACT_UNSPEC;
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
	__builtin_memset(pkt, 0, __builtin_offsetof(struct fl_packet, frame));
	if (fl_parse(skb, dir, pkt) < 0)
		return TC_ACT_UNSPEC;
	__builtin_memcpy(key.addr, pkt->remote, sizeof(key.addr));
	candidates = bpf_map_lookup_elem(&fl_prefixes, &key);
	if (!candidates)
		return TC_ACT_UNSPEC;
	/* Only packets some fault may match pay for the pass-list and the rest of the parse. */
	if (fl_is_protected(pkt))
		return TC_ACT_UNSPEC;
	fl_parse_rest(skb, pkt);

	now = bpf_ktime_get_ns();
	for (int i = 0; i < FL_MAX_CANDIDATES; i++) {
		int verdict;

		if (i >= candidates->count)
			break;
		verdict = fl_apply_fault(candidates->slots[i], dir, now);
		if (verdict == FL_REPLY)
			return fl_reply(skb, dir);
		if (verdict == FL_TRIM)
			return fl_trim(skb, dir);
		if (verdict != TC_ACT_UNSPEC && verdict != FL_STEER)
			return verdict;
	}
	if (pkt->corrupt_bits) {
		int verdict = fl_corrupt(skb, dir);

		if (verdict != TC_ACT_UNSPEC)
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
