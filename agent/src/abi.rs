//! Rust mirrors of `ebpf/include/faultline.h`, the one definition of the datapath's map layouts,
//! and the trie key as the model works with it. A leaf: it imports nothing of this crate, and
//! both the fault model (`fault`) and the kernel plane (`kernel`) build on it.
//!
//! A unit test reads the BTF of the compiled object and checks every struct's size and every
//! field's offset against these types, so the two cannot drift apart silently.

use aya::Pod;

/// Fault slots when faultd is not told otherwise (`--max-faults` sizes the maps at load).
pub const DEFAULT_FAULT_SLOTS: u32 = 1024;
/// Entries of the remote-address trie, for the whole agent.
pub const MAX_PREFIXES: u32 = 16384;
pub const MAX_CANDIDATES: usize = 32;
pub const MAX_LOCAL_CIDRS: usize = 8;
pub const MAX_PORT_RANGES: usize = 8;
pub const MAX_PROTECTED: usize = 32;
/// TCP connections the `fl_conns` LRU tracks, for the whole agent.
pub const MAX_CONNS: u32 = 16384;
/// Payload bits a corrupt fault flips in one packet, at most.
pub const MAX_CORRUPT_BITS: u32 = 8;

pub const DIR_EGRESS: usize = 0;
pub const DIR_INGRESS: usize = 1;
pub const HOOK_EGRESS: u8 = 1 << DIR_EGRESS;
pub const HOOK_INGRESS: u8 = 1 << DIR_INGRESS;

pub const ACTION_PARTITION: u32 = 1;
pub const ACTION_LOSS: u32 = 2;
pub const ACTION_BURST_LOSS: u32 = 3;
pub const ACTION_DELAY: u32 = 4;
pub const ACTION_RESET: u32 = 5;
pub const ACTION_REJECT: u32 = 6;
pub const ACTION_CORRUPT: u32 = 7;
pub const ACTION_STALL: u32 = 8;

/// `FlAction::flags`: a reset (or a stall that resets) tells the peer too.
pub const ACTION_F_PEER: u32 = 1;
/// `FlAction::flags`: a corrupt fault leaves the L4 checksum wrong.
pub const ACTION_F_BROKEN: u32 = 2;
/// `FlAction::flags`: a stall resets the connection past its budget rather than dropping.
pub const ACTION_F_RESET: u32 = 4;

/// `FlMatch::connections`.
pub const CONN_ALL: u8 = 0;
pub const CONN_NEW: u8 = 1;
pub const CONN_ESTABLISHED: u8 = 2;

/// Bits of the trie key taken by the attachment before the address starts.
pub const PREFIX_ATTACHMENT_BITS: u32 = 32;

pub const MAP_FAULTS: &str = "fl_faults";
pub const MAP_COUNTERS: &str = "fl_counters";
pub const MAP_ACTION_COUNTERS: &str = "fl_action_counters";
pub const MAP_PREFIXES: &str = "fl_prefixes";
pub const MAP_PROTECTED: &str = "fl_protected";
pub const MAP_SCRATCH: &str = "fl_scratch";
pub const MAP_CONNS: &str = "fl_conns";
pub const PROG_EGRESS: &str = "fl_egress";
pub const PROG_INGRESS: &str = "fl_ingress";
pub const PROG_INGRESS_STEER: &str = "fl_ingress_steer";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlCidr {
    pub addr: [u32; 4],
    pub mask: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlPortRange {
    pub first: u16,
    pub last: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlMatch {
    pub hooks: u8,
    pub proto: u8,
    pub local_cidr_count: u8,
    pub local_port_count: u8,
    pub remote_port_count: u8,
    pub connections: u8,
    pub pad: [u8; 2],
    pub flow_threshold: u32,
    pub flow_seed: u32,
    pub local: [FlCidr; MAX_LOCAL_CIDRS],
    pub local_ports: [FlPortRange; MAX_PORT_RANGES],
    pub remote_ports: [FlPortRange; MAX_PORT_RANGES],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlAction {
    pub kind: u32,
    pub loss_threshold: u32,
    pub burst_enter: u32,
    pub burst_exit: u32,
    pub burst_loss_bad: u32,
    pub burst_loss_good: u32,
    pub class_id: u32,
    pub flags: u32,
    pub corrupt_threshold: u32,
    pub corrupt_bits: u32,
    pub stall_bytes: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlFault {
    pub deadline_ns: u64,
    pub match_: FlMatch,
    pub action: FlAction,
    pub burst_bad: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlCounters {
    pub matched_packets: [u64; 2],
    pub matched_bytes: [u64; 2],
    pub dropped_packets: [u64; 2],
    pub dropped_bytes: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlActionCounters {
    pub resets_sent: [u64; 2],
    pub rejects_sent: [u64; 2],
    pub corrupted_packets: [u64; 2],
    pub allowed_bytes: [u64; 2],
}

/// The data part of `struct fl_prefix_key`; aya's `lpm_trie::Key` supplies `prefix_len`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlPrefixData {
    pub attachment: u32,
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlCandidates {
    pub count: u32,
    pub slots: [u32; MAX_CANDIDATES],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlProtected {
    pub cidr: FlCidr,
    pub ports: FlPortRange,
    pub proto: u8,
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlProtectedList {
    pub count: u32,
    pub entries: [FlProtected; MAX_PROTECTED],
}

/// Key of `fl_conns`: one TCP connection as one fault (its slot) sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlConnKey {
    pub slot: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub local: [u32; 4],
    pub remote: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlConn {
    pub flags: u32,
    pub budget_end: [u32; 2],
    pub allowed_end: [u32; 2],
    pub pad: u32,
}

// SAFETY: plain-old-data: repr(C), only integer fields, every bit pattern valid, and padding is
// explicit so no uninitialised bytes reach the kernel.
unsafe impl Pod for FlFault {}
// SAFETY: as above.
unsafe impl Pod for FlCounters {}
// SAFETY: as above.
unsafe impl Pod for FlActionCounters {}
// SAFETY: as above.
unsafe impl Pod for FlPrefixData {}
// SAFETY: as above.
unsafe impl Pod for FlCandidates {}
// SAFETY: as above.
unsafe impl Pod for FlProtectedList {}
// SAFETY: as above.
unsafe impl Pod for FlConnKey {}
// SAFETY: as above.
unsafe impl Pod for FlConn {}

/// A remote-address prefix under one attachment (a device in a namespace): a key of the
/// `fl_prefixes` trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrefixKey {
    pub attachment: u32,
    pub addr: [u8; 16],
    /// Address bits, 0..=128 (the trie's prefix_len adds the 32 attachment bits).
    pub len: u32,
}

pub fn mask(len: u32) -> u128 {
    u128::MAX.checked_shl(128 - len).unwrap_or(0)
}

impl PrefixKey {
    /// The key for the first `len` bits of `addr` (host bits cleared, as the trie sees it).
    pub fn new(attachment: u32, addr: [u8; 16], len: u32) -> PrefixKey {
        PrefixKey {
            attachment,
            addr: (u128::from_be_bytes(addr) & mask(len)).to_be_bytes(),
            len,
        }
    }

    pub fn contains(&self, other: &PrefixKey) -> bool {
        if self.attachment != other.attachment || other.len < self.len {
            return false;
        }
        let mask = mask(self.len);
        u128::from_be_bytes(self.addr) & mask == u128::from_be_bytes(other.addr) & mask
    }

    /// Every key this one contains lies in this range of the key order (attachment, addr, len).
    pub fn subtree(&self) -> std::ops::RangeInclusive<PrefixKey> {
        let low = u128::from_be_bytes(self.addr) & mask(self.len);
        let high = low | !mask(self.len);
        PrefixKey::new(self.attachment, low.to_be_bytes(), 0)..=PrefixKey {
            attachment: self.attachment,
            addr: high.to_be_bytes(),
            len: 128,
        }
    }
}

impl std::fmt::Display for PrefixKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.len >= 96 => write!(f, "{v4}/{}", self.len - 96),
            _ if self.len == 0 => write!(f, "any address"),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}

#[cfg(test)]
#[path = "abi_btf_tests.rs"]
mod btf_tests;
