/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one definition of every layout shared between the eBPF datapath and faultd.
 * agent/src/kernel/abi.rs mirrors these structs; a unit test compares both against the
 * BTF of the compiled object, so a change here that is not made there fails the build's tests.
 *
 * Addresses are IPv6-sized: IPv4 is stored as an IPv4-mapped IPv6 address (::ffff:a.b.c.d)
 * so one trie and one comparison serve both families.
 */
#ifndef FAULTLINE_H
#define FAULTLINE_H

#include <linux/types.h>

/*
 * One set of maps serves every namespace and device: a packet's entries in fl_prefixes are
 * those of the filter that runs the program, which carries its attachment id as its classid
 * (skb->tc_classid when the program starts). faultd sizes fl_faults and both counter maps
 * at load (--max-faults); these are the object's defaults.
 */
#define FL_MAX_FAULTS 1024       /* fault slots, for the whole agent */
#define FL_MAX_PREFIXES 16384    /* remote-address trie entries, for the whole agent */
#define FL_MAX_CANDIDATES 32     /* faults that may overlap one remote address on one device */
#define FL_MAX_LOCAL_CIDRS 8     /* `src` CIDRs per fault */
#define FL_MAX_PORT_RANGES 8     /* `sport` / `dport` ranges per fault */
#define FL_MAX_PROTECTED 32      /* the policy's protected targets */
#define FL_MAX_CONNS 16384       /* TCP connections tracked (fl_conns, an LRU), for the agent */
#define FL_MAX_CORRUPT_BITS 8    /* bits a corrupt fault flips in one packet */

/* Index of the per-direction counters. */
#define FL_DIR_EGRESS 0
#define FL_DIR_INGRESS 1

/* fl_match.hooks */
#define FL_HOOK_EGRESS (1 << FL_DIR_EGRESS)
#define FL_HOOK_INGRESS (1 << FL_DIR_INGRESS)

/* fl_action.kind */
#define FL_ACTION_PARTITION 1  /* drop every matching packet */
#define FL_ACTION_LOSS 2       /* drop with probability loss_threshold / 2^32 */
#define FL_ACTION_BURST_LOSS 3 /* Gilbert-Elliott: two states, each with its own loss */
#define FL_ACTION_DELAY 4      /* steer into the fault's netem class (at ingress, via its ifb) */
#define FL_ACTION_RESET 5      /* answer TCP segments (not SYN, not RST) with a RST */
#define FL_ACTION_REJECT 6     /* answer a SYN with RST/ACK, a UDP datagram with port unreachable */
#define FL_ACTION_CORRUPT 7    /* flip payload bits with probability corrupt_threshold / 2^32 */
#define FL_ACTION_STALL 8      /* per TCP connection and direction: stall_bytes of payload, then none */

/* fl_action.flags */
#define FL_ACTION_F_PEER 1   /* FL_ACTION_RESET, FL_ACTION_STALL with F_RESET: the peer gets a RST too */
#define FL_ACTION_F_BROKEN 2 /* FL_ACTION_CORRUPT: the L4 checksum is left wrong, not recomputed */
#define FL_ACTION_F_RESET 4  /* FL_ACTION_STALL: past the budget, reset rather than drop */

/* fl_match.connections: which TCP connections a fault acts on. Other protocols have no opening
 * to see: every flow of theirs is new. */
#define FL_CONN_ALL 0
#define FL_CONN_NEW 1         /* opened (a SYN seen) after the fault was applied */
#define FL_CONN_ESTABLISHED 2 /* the others */

/* fl_conn.flags */
#define FL_CONN_F_NEW 1 /* the fault saw this connection's SYN */
/* A stall's budget is set for direction d (FL_DIR_*): fl_conn.budget_end[d] holds. */
#define FL_CONN_F_BUDGET(d) (2 << (d))

/* A CIDR as pre-masked address words and the mask, both in network byte order. */
struct fl_cidr {
	__u32 addr[4];
	__u32 mask[4];
};

/* An inclusive port range in host byte order. */
struct fl_port_range {
	__u16 first;
	__u16 last;
};

/*
 * What a fault matches, written as this host sends the flow: `local` is this host's side.
 * At ingress the packet's source is the remote side. Remote CIDRs are not here: they are
 * the keys of fl_prefixes, so a fault is only ever examined for packets of its remote CIDRs.
 */
struct fl_match {
	__u8 hooks;             /* FL_HOOK_* */
	__u8 proto;             /* IPPROTO_*; 0 = any */
	__u8 local_cidr_count;  /* 0 = any local address */
	__u8 local_port_count;  /* 0 = any local port */
	__u8 remote_port_count; /* 0 = any remote port */
	__u8 connections;       /* FL_CONN_* */
	__u8 pad[2];
	__u32 flow_threshold; /* a flow is hit when its hash < threshold; 0 = every flow */
	__u32 flow_seed;      /* mixes the flow hash so faults pick independent flows */
	struct fl_cidr local[FL_MAX_LOCAL_CIDRS];
	struct fl_port_range local_ports[FL_MAX_PORT_RANGES];
	struct fl_port_range remote_ports[FL_MAX_PORT_RANGES];
};

/* Probabilities are fractions of 2^32: p = value / 2^32, and 0xffffffff means certain. */
struct fl_action {
	__u32 kind;           /* FL_ACTION_* */
	__u32 loss_threshold; /* FL_ACTION_LOSS */
	__u32 burst_enter;    /* Gilbert-Elliott p: good -> bad */
	__u32 burst_exit;     /* Gilbert-Elliott r: bad -> good */
	__u32 burst_loss_bad; /* Gilbert-Elliott 1-h: loss while bad */
	__u32 burst_loss_good;/* Gilbert-Elliott 1-k: loss while good */
	__u32 class_id;       /* FL_ACTION_DELAY: htb class handle, written to skb->priority */
	__u32 flags;          /* FL_ACTION_F_* */
	__u32 corrupt_threshold; /* FL_ACTION_CORRUPT: probability a matching packet is corrupted */
	__u32 corrupt_bits;      /* FL_ACTION_CORRUPT: payload bits flipped, 1..FL_MAX_CORRUPT_BITS */
	__u32 stall_bytes;    /* FL_ACTION_STALL: payload bytes each connection passes per direction */
	__u32 pad;
};

/* Value of fl_faults, indexed by slot. A slot whose deadline has passed matches nothing. */
struct fl_fault {
	__u64 deadline_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns); 0 = free slot */
	struct fl_match match;
	struct fl_action action;
	__u32 burst_bad;   /* Gilbert-Elliott state, written by the datapath: 1 = bad */
	__u32 pad;
};

/*
 * Value of fl_counters (per CPU), indexed by slot, each array indexed by FL_DIR_*: what every
 * matching packet adds to, so each CPU has its own.
 */
struct fl_counters {
	__u64 matched_packets[2];
	__u64 matched_bytes[2];
	__u64 dropped_packets[2];
	__u64 dropped_bytes[2];
};

/*
 * Value of fl_action_counters (one for all CPUs, added to atomically), indexed by slot: what
 * only one action adds to, on packets it already spends far more on than an atomic add.
 * Per CPU, these would double the datapath's memory on a many-CPU host.
 */
struct fl_action_counters {
	__u64 resets_sent[2];  /* RSTs built (the local side's and, when asked, the peer's) */
	__u64 rejects_sent[2]; /* RST/ACKs and ICMP port unreachables built */
	__u64 corrupted_packets[2]; /* packets whose payload a corrupt fault changed (or, with a
				     * broken checksum it cannot carry, dropped: see fl_corrupt) */
	__u64 allowed_bytes[2]; /* payload bytes a stall let through, each byte once */
};

/* Key of fl_prefixes: the attachment (one device, one namespace), then the remote address;
 * prefix_len counts both. */
struct fl_prefix_key {
	__u32 prefix_len; /* 32 (attachment) + 0..128 address bits */
	__u32 attachment;
	__u8 addr[16];
};

/* Value of fl_prefixes: every fault whose remote CIDR contains this prefix. */
struct fl_candidates {
	__u32 count;
	__u32 slots[FL_MAX_CANDIDATES];
};

/* Traffic no fault may touch (the policy's protected targets), checked before any fault. */
struct fl_protected {
	struct fl_cidr cidr;        /* either side's address */
	struct fl_port_range ports; /* either side's port; 0-65535 = any port */
	__u8 proto;                 /* IPPROTO_*; 0 = any */
	__u8 pad[3];
};

/* The single value of fl_protected_list. */
struct fl_protected_list {
	__u32 count;
	struct fl_protected entries[FL_MAX_PROTECTED];
};

/*
 * Key of fl_conns: one TCP connection as one fault sees it. The slot is part of the key so
 * faults track connections independently, and faultd deletes a fault's entries with it.
 */
struct fl_conn_key {
	__u32 slot;
	__u16 local_port;
	__u16 remote_port;
	__u32 local[4];
	__u32 remote[4];
};

/*
 * Value of fl_conns. A stall counts in sequence numbers, so a retransmission is not counted
 * twice: per direction, the budget ends at budget_end (the first sequence number the fault
 * saw, or the SYN's plus one, plus stall_bytes), and allowed_end is how far data has passed.
 */
struct fl_conn {
	__u32 flags; /* FL_CONN_F_* */
	__u32 budget_end[2];
	__u32 allowed_end[2];
	__u32 pad;
};

#endif
