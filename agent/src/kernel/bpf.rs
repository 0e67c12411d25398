//! The eBPF datapath of one network namespace: the loaded programs and their maps. Their
//! filters on devices are `filter`'s (legacy tc cls_bpf, direct action; see ebpf/faults.bpf.c
//! for why not TCX). Callers must be inside the namespace (see `netns::Netns::run`).
//!
//! Filters outlive faultd on purpose: a netlink filter holds its program and maps, so a fault
//! keeps its effect, and its kernel-side deadline, if faultd is killed.

use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, MapData, PerCpuArray, PerCpuValues},
    programs::SchedClassifier,
    util::nr_cpus,
    Ebpf, EbpfLoader,
};
use std::{os::fd::AsFd, path::Path};

use super::{
    filter::{self, BpfFilter, DATAPATH_PRIORITY, STEER_PRIORITY},
    KernelError,
};
use crate::abi::{
    FlCandidates, FlCounters, FlFault, FlPrefixData, FlProtectedList, PrefixKey, MAP_COUNTERS,
    MAP_FAULTS, MAP_PREFIXES, MAP_PROTECTED, PREFIX_IFINDEX_BITS, PROG_EGRESS, PROG_INGRESS,
    PROG_INGRESS_STEER,
};

/// The compiled datapath (ebpf/faults.bpf.c), embedded at build time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faults.bpf.o"));

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Egress,
    Ingress,
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::Egress, Hook::Ingress];

    fn program(self) -> &'static str {
        match self {
            Self::Egress => PROG_EGRESS,
            Self::Ingress => PROG_INGRESS,
        }
    }
}

pub struct Datapath {
    ebpf: Ebpf,
    faults: Array<MapData, FlFault>,
    counters: PerCpuArray<MapData, FlCounters>,
    prefixes: LpmTrie<MapData, FlPrefixData, FlCandidates>,
    protected: Array<MapData, FlProtectedList>,
    cpus: usize,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath").finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { map, source }
}

fn prog_err(what: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> KernelError {
    move |source| KernelError::Program { what, source }
}

impl Datapath {
    /// Loads the programs. With `pins`, the maps are the ones pinned in that directory (an
    /// earlier faultd's, faults and counters included) or, where none is, new ones pinned
    /// there; without, fresh unpinned maps. Fails with `Unsupported` on kernels that cannot
    /// run the programs.
    pub fn load(pins: Option<&Path>) -> Result<Self, KernelError> {
        let mut loader = EbpfLoader::new();
        if let Some(dir) = pins {
            std::fs::create_dir_all(dir).map_err(|source| KernelError::Syscall {
                call: "create pin directory",
                source,
            })?;
            for map in [MAP_FAULTS, MAP_COUNTERS, MAP_PREFIXES, MAP_PROTECTED] {
                loader.map_pin_path(map, dir.join(map));
            }
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| KernelError::Unsupported {
            feature: "eBPF tc programs",
            detail: e.to_string(),
        })?;
        for name in [PROG_EGRESS, PROG_INGRESS, PROG_INGRESS_STEER] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(KernelError::MissingObject(name))?
                .try_into()
                .map_err(prog_err(name))?;
            program.load().map_err(|e| KernelError::Unsupported {
                feature: "eBPF tc programs",
                detail: format!("{e:?}"),
            })?;
        }
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(KernelError::MissingObject(name));
        let faults = Array::try_from(take(MAP_FAULTS)?).map_err(map_err(MAP_FAULTS))?;
        let counters = PerCpuArray::try_from(take(MAP_COUNTERS)?).map_err(map_err(MAP_COUNTERS))?;
        let prefixes = LpmTrie::try_from(take(MAP_PREFIXES)?).map_err(map_err(MAP_PREFIXES))?;
        let protected = Array::try_from(take(MAP_PROTECTED)?).map_err(map_err(MAP_PROTECTED))?;
        let cpus = nr_cpus().map_err(|(_, source)| KernelError::Syscall {
            call: "nr_cpus",
            source,
        })?;
        Ok(Self {
            ebpf,
            faults,
            counters,
            prefixes,
            protected,
            cpus,
        })
    }

    fn program(&self, name: &'static str) -> Result<&SchedClassifier, KernelError> {
        self.ebpf
            .program(name)
            .ok_or(KernelError::MissingObject(name))?
            .try_into()
            .map_err(prog_err(name))
    }

    /// Attaches the datapath to `hook` of `ifindex`, replacing a filter of ours left there by
    /// an earlier faultd. The clsact qdisc must exist.
    pub fn attach(&self, ifindex: u32, hook: Hook) -> Result<(), KernelError> {
        let program = self.program(hook.program())?;
        let fd = program.fd().map_err(prog_err(hook.program()))?;
        filter::attach(
            ifindex,
            hook,
            &BpfFilter {
                program: fd.as_fd(),
                name: hook.program(),
                priority: DATAPATH_PRIORITY,
                redirect_to: None,
            },
        )
    }

    /// Attaches the ingress steering filter to `ifindex`: packets the datapath marks for delay
    /// go to the egress of `ifb`.
    pub fn attach_steer(&self, ifindex: u32, ifb: u32) -> Result<(), KernelError> {
        let program = self.program(PROG_INGRESS_STEER)?;
        let fd = program.fd().map_err(prog_err(PROG_INGRESS_STEER))?;
        filter::attach(
            ifindex,
            Hook::Ingress,
            &BpfFilter {
                program: fd.as_fd(),
                name: PROG_INGRESS_STEER,
                priority: STEER_PRIORITY,
                redirect_to: Some(ifb),
            },
        )
    }

    /// Replaces the pass-list of traffic no fault may touch.
    pub fn set_protected(&mut self, list: &FlProtectedList) -> Result<(), KernelError> {
        self.protected
            .set(0, list, 0)
            .map_err(map_err(MAP_PROTECTED))
    }

    pub fn read_fault(&self, slot: u32) -> Result<FlFault, KernelError> {
        self.faults.get(&slot, 0).map_err(map_err(MAP_FAULTS))
    }

    /// Slots holding a fault whose kernel deadline has not passed.
    pub fn live_slots(&self, now_ns: u64) -> Result<Vec<u32>, KernelError> {
        let mut live = Vec::new();
        for (slot, fault) in self.faults.iter().enumerate() {
            if fault.map_err(map_err(MAP_FAULTS))?.deadline_ns > now_ns {
                live.push(slot as u32);
            }
        }
        Ok(live)
    }

    /// Every key in the prefix trie.
    pub fn prefix_keys(&self) -> Result<Vec<PrefixKey>, KernelError> {
        self.prefixes
            .keys()
            .map(|key| {
                let key = key.map_err(map_err(MAP_PREFIXES))?;
                let data = key.data();
                Ok(PrefixKey {
                    ifindex: data.ifindex,
                    addr: data.addr,
                    len: key.prefix_len().saturating_sub(PREFIX_IFINDEX_BITS),
                })
            })
            .collect()
    }

    pub fn write_fault(&mut self, slot: u32, value: &FlFault) -> Result<(), KernelError> {
        self.faults.set(slot, value, 0).map_err(map_err(MAP_FAULTS))
    }

    pub fn reset_counters(&mut self, slot: u32) -> Result<(), KernelError> {
        let zeros =
            PerCpuValues::try_from(vec![FlCounters::default(); self.cpus]).map_err(|source| {
                KernelError::Syscall {
                    call: "per-cpu values",
                    source,
                }
            })?;
        self.counters
            .set(slot, zeros, 0)
            .map_err(map_err(MAP_COUNTERS))
    }

    /// The slot's counters summed over CPUs.
    pub fn read_counters(&self, slot: u32) -> Result<FlCounters, KernelError> {
        let per_cpu = self.counters.get(&slot, 0).map_err(map_err(MAP_COUNTERS))?;
        let mut sum = FlCounters::default();
        for c in per_cpu.iter() {
            for dir in 0..2 {
                sum.matched_packets[dir] += c.matched_packets[dir];
                sum.matched_bytes[dir] += c.matched_bytes[dir];
                sum.dropped_packets[dir] += c.dropped_packets[dir];
                sum.dropped_bytes[dir] += c.dropped_bytes[dir];
            }
        }
        Ok(sum)
    }

    pub fn set_prefix(&mut self, key: &PrefixKey, value: &FlCandidates) -> Result<(), KernelError> {
        self.prefixes
            .insert(&trie_key(key), value, 0)
            .map_err(map_err(MAP_PREFIXES))
    }

    pub fn delete_prefix(&mut self, key: &PrefixKey) -> Result<(), KernelError> {
        match self.prefixes.remove(&trie_key(key)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(KernelError::Map {
                map: MAP_PREFIXES,
                source,
            }),
        }
    }
}

fn trie_key(key: &PrefixKey) -> Key<FlPrefixData> {
    Key::new(
        PREFIX_IFINDEX_BITS + key.len,
        FlPrefixData {
            ifindex: key.ifindex,
            addr: key.addr,
        },
    )
}

/// Removes the datapath's filter from `hook` of `ifindex`, if there; others stay.
pub fn detach(ifindex: u32, hook: Hook) -> Result<(), KernelError> {
    filter::detach(ifindex, hook, DATAPATH_PRIORITY)
}

/// Removes the ingress steering filter from `ifindex`, if there.
pub fn detach_steer(ifindex: u32) -> Result<(), KernelError> {
    filter::detach(ifindex, Hook::Ingress, STEER_PRIORITY)
}
