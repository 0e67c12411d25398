//! Rust mirrors of `ebpf/include/faultline.h`, the one definition of the datapath's map layouts.
//!
//! A unit test reads the BTF of the compiled object and checks every struct's size and every
//! field's offset against these types, so the two cannot drift apart silently.

use aya::Pod;

pub const MAX_FAULTS: u32 = 16384;
pub const MAX_CANDIDATES: usize = 32;
pub const MAX_LOCAL_CIDRS: usize = 8;
pub const MAX_PORT_RANGES: usize = 8;
pub const MAX_PROTECTED: usize = 32;

pub const DIR_EGRESS: usize = 0;
pub const DIR_INGRESS: usize = 1;
pub const HOOK_EGRESS: u8 = 1 << DIR_EGRESS;
pub const HOOK_INGRESS: u8 = 1 << DIR_INGRESS;

pub const ACTION_PARTITION: u32 = 1;
pub const ACTION_LOSS: u32 = 2;
pub const ACTION_BURST_LOSS: u32 = 3;
pub const ACTION_DELAY: u32 = 4;

/// Bits of the trie key taken by the ifindex before the address starts.
pub const PREFIX_IFINDEX_BITS: u32 = 32;

pub const MAP_FAULTS: &str = "fl_faults";
pub const MAP_COUNTERS: &str = "fl_counters";
pub const MAP_PREFIXES: &str = "fl_prefixes";
pub const MAP_PROTECTED: &str = "fl_protected";
pub const PROG_EGRESS: &str = "fl_egress";
pub const PROG_INGRESS: &str = "fl_ingress";

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
    pub pad: [u8; 3],
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
    pub ifb_ifindex: u32,
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

/// The data part of `struct fl_prefix_key`; aya's `lpm_trie::Key` supplies `prefix_len`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlPrefixData {
    pub ifindex: u32,
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

// SAFETY: plain-old-data: repr(C), only integer fields, every bit pattern valid, and padding is
// explicit so no uninitialised bytes reach the kernel.
unsafe impl Pod for FlFault {}
// SAFETY: as above.
unsafe impl Pod for FlCounters {}
// SAFETY: as above.
unsafe impl Pod for FlPrefixData {}
// SAFETY: as above.
unsafe impl Pod for FlCandidates {}
// SAFETY: as above.
unsafe impl Pod for FlProtectedList {}

#[cfg(test)]
#[path = "abi_btf_tests.rs"]
mod btf_tests;
