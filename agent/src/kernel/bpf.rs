//! The eBPF datapath: its programs, loaded and verified once for the agent, and the maps every
//! namespace and device share. A device is attached with `filter`'s cls_bpf filters (legacy
//! tc, direct action; see ebpf/faults.bpf.c for why not TCX), whose classid is the
//! attachment the program looks its faults up by.
//!
//! Filters outlive faultd on purpose: a netlink filter holds its program and maps, so a fault
//! keeps its effect, and its kernel-side deadline, if faultd is killed.

use std::{
    collections::BTreeSet,
    fs,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::Path,
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues},
    programs::SchedClassifier,
    util::nr_cpus,
    Ebpf, EbpfLoader,
};

use super::{
    filter::{BpfFilter, DATAPATH_PRIORITY, STEER_PRIORITY},
    KernelError,
};
use crate::abi::{
    FlActionCounters, FlCandidates, FlConn, FlConnKey, FlCounters, FlFault, FlPrefixData,
    FlProtectedList, PrefixKey, MAP_ACTION_COUNTERS, MAP_CONNS, MAP_COUNTERS, MAP_FAULTS,
    MAP_PREFIXES, MAP_PROTECTED, MAP_SCRATCH, PREFIX_ATTACHMENT_BITS, PROG_EGRESS, PROG_INGRESS,
    PROG_INGRESS_STEER,
};

/// The compiled datapath (ebpf/faults.bpf.c), embedded at build time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faults.bpf.o"));

/// The maps a restarted faultd takes over (the connections its faults saw open included); the
/// per-CPU scratch map is each load's own.
const PINNED_MAPS: [&str; 6] = [
    MAP_FAULTS,
    MAP_COUNTERS,
    MAP_ACTION_COUNTERS,
    MAP_PREFIXES,
    MAP_PROTECTED,
    MAP_CONNS,
];
const PROGRAMS: [&str; 3] = [PROG_EGRESS, PROG_INGRESS, PROG_INGRESS_STEER];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Egress,
    Ingress,
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::Egress, Hook::Ingress];

    pub fn name(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Self::Egress => PROG_EGRESS,
            Self::Ingress => PROG_INGRESS,
        }
    }
}

/// A slot's counters: what every CPU counts on its own, summed, and what the actions count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounters {
    pub traffic: FlCounters,
    pub actions: FlActionCounters,
}

pub struct Datapath {
    ebpf: Ebpf,
    faults: Array<MapData, FlFault>,
    counters: PerCpuArray<MapData, FlCounters>,
    action_counters: Array<MapData, FlActionCounters>,
    prefixes: LpmTrie<MapData, FlPrefixData, FlCandidates>,
    protected: Array<MapData, FlProtectedList>,
    conns: HashMap<MapData, FlConnKey, FlConn>,
    /// Duplicates of every map's descriptor, to read what the kernel charges for them.
    map_fds: Vec<OwnedFd>,
    /// What each possible CPU adds to the maps' size (the per-CPU maps' values).
    per_cpu_bytes: u64,
    cpus: usize,
    slots: u32,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { map, source }
}

fn prog_err(what: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> KernelError {
    move |source| KernelError::Program { what, source }
}

fn syscall(call: &'static str) -> impl FnOnce(std::io::Error) -> KernelError {
    move |source| KernelError::Syscall { call, source }
}

impl Datapath {
    /// Loads and verifies the programs, with fault slots for `slots` faults. With `pins`, the
    /// maps are the ones pinned in that directory (an earlier faultd's, faults and counters
    /// included, whose size then rules) or, where none is, new ones pinned there; without,
    /// fresh unpinned maps. Fails with `Unsupported` on kernels that cannot run the programs.
    pub fn load(pins: Option<&Path>, slots: u32) -> Result<Self, KernelError> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_FAULTS, slots);
        loader.map_max_entries(MAP_COUNTERS, slots);
        loader.map_max_entries(MAP_ACTION_COUNTERS, slots);
        if let Some(dir) = pins {
            fs::create_dir_all(dir).map_err(syscall("create pin directory"))?;
            for map in PINNED_MAPS {
                loader.map_pin_path(map, dir.join(map));
            }
        }
        let unsupported = |detail: String| KernelError::Unsupported {
            feature: "ebpf_faults",
            detail,
        };
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| unsupported(e.to_string()))?;
        for name in PROGRAMS {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(KernelError::MissingObject(name))?
                .try_into()
                .map_err(prog_err(name))?;
            program.load().map_err(|e| unsupported(format!("{e:?}")))?;
        }
        let mut map_fds = Vec::new();
        let mut per_cpu_bytes = 0;
        let mut account = |map: &Map| -> Result<(), KernelError> {
            if let Map::Array(data)
            | Map::PerCpuArray(data)
            | Map::LpmTrie(data)
            | Map::LruHashMap(data) = map
            {
                map_fds.push(
                    data.fd()
                        .as_fd()
                        .try_clone_to_owned()
                        .map_err(syscall("dup"))?,
                );
            }
            if let Map::PerCpuArray(data) = map {
                let info = data.info().map_err(map_err("per-CPU map"))?;
                // Each possible CPU holds every entry's value, rounded up to 8 bytes.
                per_cpu_bytes += u64::from(info.max_entries())
                    * u64::from(info.value_size()).next_multiple_of(8);
            }
            Ok(())
        };
        // The scratch map stays with the programs; its memory counts all the same.
        if let Some(scratch) = ebpf.map(MAP_SCRATCH) {
            account(scratch)?;
        }
        let mut take = |name: &'static str| -> Result<Map, KernelError> {
            let map = ebpf
                .take_map(name)
                .ok_or(KernelError::MissingObject(name))?;
            account(&map)?;
            Ok(map)
        };
        let faults = Array::try_from(take(MAP_FAULTS)?).map_err(map_err(MAP_FAULTS))?;
        let counters = PerCpuArray::try_from(take(MAP_COUNTERS)?).map_err(map_err(MAP_COUNTERS))?;
        let action_counters =
            Array::try_from(take(MAP_ACTION_COUNTERS)?).map_err(map_err(MAP_ACTION_COUNTERS))?;
        let prefixes = LpmTrie::try_from(take(MAP_PREFIXES)?).map_err(map_err(MAP_PREFIXES))?;
        let protected = Array::try_from(take(MAP_PROTECTED)?).map_err(map_err(MAP_PROTECTED))?;
        let conns = HashMap::try_from(take(MAP_CONNS)?).map_err(map_err(MAP_CONNS))?;
        let cpus = nr_cpus().map_err(|(_, source)| KernelError::Syscall {
            call: "nr_cpus",
            source,
        })?;
        // Pinned maps of an earlier faultd keep their size.
        let slots = faults.len().min(counters.len()).min(action_counters.len());
        Ok(Self {
            ebpf,
            faults,
            counters,
            action_counters,
            prefixes,
            protected,
            conns,
            map_fds,
            per_cpu_bytes,
            cpus,
            slots,
        })
    }

    /// Fault slots: 0..slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    fn program(&self, name: &'static str) -> Result<&SchedClassifier, KernelError> {
        self.ebpf
            .program(name)
            .ok_or(KernelError::MissingObject(name))?
            .try_into()
            .map_err(prog_err(name))
    }

    /// The filter that attaches the datapath to `hook` of a device, as `attachment`.
    pub fn filter(&self, hook: Hook, attachment: u32) -> Result<BpfFilter<'_>, KernelError> {
        let name = hook.program();
        let fd = self.program(name)?.fd().map_err(prog_err(name))?;
        Ok(BpfFilter {
            program: fd.as_fd(),
            name,
            priority: DATAPATH_PRIORITY,
            classid: Some(attachment),
            redirect_to: None,
        })
    }

    /// The ingress steering filter of a device whose delayed packets go to the egress of `ifb`.
    pub fn steer_filter(&self, ifb: u32) -> Result<BpfFilter<'_>, KernelError> {
        let fd = self
            .program(PROG_INGRESS_STEER)?
            .fd()
            .map_err(prog_err(PROG_INGRESS_STEER))?;
        Ok(BpfFilter {
            program: fd.as_fd(),
            name: PROG_INGRESS_STEER,
            priority: STEER_PRIORITY,
            classid: None,
            redirect_to: Some(ifb),
        })
    }

    /// What the kernel charges for the datapath: the `memlock` of every map and program, as
    /// /proc/self/fdinfo reports it.
    pub fn memory(&self) -> Result<u64, KernelError> {
        let mut fds: Vec<i32> = self.map_fds.iter().map(AsRawFd::as_raw_fd).collect();
        for name in PROGRAMS {
            let fd = self.program(name)?.fd().map_err(prog_err(name))?;
            fds.push(fd.as_fd().as_raw_fd());
        }
        let mut total = 0;
        for fd in fds {
            let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
                .map_err(syscall("read fdinfo"))?;
            total += info
                .lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|value| value.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// What each possible CPU adds to what the kernel charges (the per-CPU maps' values), and
    /// how many possible CPUs there are.
    pub fn per_cpu(&self) -> (u64, usize) {
        (self.per_cpu_bytes, self.cpus)
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
                    attachment: data.attachment,
                    addr: data.addr,
                    len: key.prefix_len().saturating_sub(PREFIX_ATTACHMENT_BITS),
                })
            })
            .collect()
    }

    pub fn write_fault(&mut self, slot: u32, value: &FlFault) -> Result<(), KernelError> {
        self.faults.set(slot, value, 0).map_err(map_err(MAP_FAULTS))
    }

    pub fn reset_counters(&mut self, slot: u32) -> Result<(), KernelError> {
        let zeros = PerCpuValues::try_from(vec![FlCounters::default(); self.cpus])
            .map_err(syscall("per-cpu values"))?;
        self.counters
            .set(slot, zeros, 0)
            .map_err(map_err(MAP_COUNTERS))?;
        self.action_counters
            .set(slot, FlActionCounters::default(), 0)
            .map_err(map_err(MAP_ACTION_COUNTERS))
    }

    /// The slot's counters, the per-CPU ones summed over CPUs; the action counters only when
    /// `with_actions` (zero otherwise), which saves a system call per fault.
    pub fn read_counters(
        &self,
        slot: u32,
        with_actions: bool,
    ) -> Result<SlotCounters, KernelError> {
        let per_cpu = self.counters.get(&slot, 0).map_err(map_err(MAP_COUNTERS))?;
        let mut traffic = FlCounters::default();
        for c in per_cpu.iter() {
            for dir in 0..2 {
                traffic.matched_packets[dir] += c.matched_packets[dir];
                traffic.matched_bytes[dir] += c.matched_bytes[dir];
                traffic.dropped_packets[dir] += c.dropped_packets[dir];
                traffic.dropped_bytes[dir] += c.dropped_bytes[dir];
            }
        }
        let actions = if with_actions {
            self.action_counters
                .get(&slot, 0)
                .map_err(map_err(MAP_ACTION_COUNTERS))?
        } else {
            FlActionCounters::default()
        };
        Ok(SlotCounters { traffic, actions })
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

impl Datapath {
    /// Deletes the tracked connections of every slot in `slots` (faults being removed, or
    /// slots no fault holds any more), in one pass over the table.
    pub fn forget_connections(&mut self, slots: &BTreeSet<u32>) -> Result<(), KernelError> {
        if slots.is_empty() {
            return Ok(());
        }
        // Collected first: deleting while walking a hash makes the walk start over.
        let mut doomed = Vec::new();
        for key in self.conns.keys() {
            let key = key.map_err(map_err(MAP_CONNS))?;
            if slots.contains(&key.slot) {
                doomed.push(key);
            }
        }
        for key in doomed {
            match self.conns.remove(&key) {
                Ok(()) => {}
                // The LRU may have evicted it meanwhile.
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => {
                    return Err(KernelError::Map {
                        map: MAP_CONNS,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// The slots that have tracked connections.
    pub fn connection_slots(&self) -> Result<BTreeSet<u32>, KernelError> {
        self.conns
            .keys()
            .map(|key| Ok(key.map_err(map_err(MAP_CONNS))?.slot))
            .collect()
    }
}

fn trie_key(key: &PrefixKey) -> Key<FlPrefixData> {
    Key::new(
        PREFIX_ATTACHMENT_BITS + key.len,
        FlPrefixData {
            attachment: key.attachment,
            addr: key.addr,
        },
    )
}
