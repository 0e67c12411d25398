//! Turns a validated fault into what the datapath needs: one `fl_fault` slot value, and the
//! remote-address prefixes under which the fault is listed in the `fl_prefixes` trie; and the
//! policy's protected targets into the datapath's pass-list.
//! `PrefixIndex` keeps the trie's contents consistent as faults come and go.

use std::collections::{BTreeMap, BTreeSet};

use super::corrupt::Checksum;
use super::spec::{Action, FaultSpec, StallEnd};
use super::values::{Cidr, Connections, Proto};
use crate::{
    abi::{
        FlAction, FlCandidates, FlCidr, FlFault, FlMatch, FlPortRange, FlProtected,
        FlProtectedList, PrefixKey, ACTION_BURST_LOSS, ACTION_CORRUPT, ACTION_DELAY,
        ACTION_F_BROKEN, ACTION_F_PEER, ACTION_F_RESET, ACTION_LOSS, ACTION_PARTITION,
        ACTION_REJECT, ACTION_RESET, ACTION_STALL, CONN_ALL, CONN_ESTABLISHED, CONN_NEW,
        HOOK_EGRESS, HOOK_INGRESS, MAX_CANDIDATES, MAX_PROTECTED,
    },
    policy::ProtectedTarget,
};

/// Whether packets under this slot value enter `fl_conns` (the condition before `fl_track` in
/// faults.bpf.c): a stall counts per connection, and `connections` other than `all` tells
/// connections apart by whether the fault saw their SYN. Removing any other fault need not
/// walk that table.
pub fn tracks_connections(value: &FlFault) -> bool {
    value.action.kind == ACTION_STALL || value.match_.connections != CONN_ALL
}

/// Whether the datapath adds to this slot's `fl_action_counters`: only the actions that build,
/// cut or change packets count there, so reading a partition's counters need not look.
pub fn counts_actions(value: &FlFault) -> bool {
    matches!(
        value.action.kind,
        ACTION_RESET | ACTION_REJECT | ACTION_STALL | ACTION_CORRUPT
    )
}

/// The `fl_fault` value for `spec` (its deadline is set when it is installed).
pub fn fault_value(spec: &FaultSpec, flow_seed: u32) -> FlFault {
    let target = &spec.target;
    let m = &target.matcher;
    let mut matcher = FlMatch {
        hooks: (if target.direction.has_egress() {
            HOOK_EGRESS
        } else {
            0
        }) | (if target.direction.has_ingress() {
            HOOK_INGRESS
        } else {
            0
        }),
        proto: m.proto.number(),
        local_cidr_count: m.src.len() as u8,
        local_port_count: m.sport.len() as u8,
        remote_port_count: m.dport.len() as u8,
        flow_threshold: target.flows.map_or(0, |f| {
            if f.value() >= 1.0 {
                0
            } else {
                ((f.value() * 4_294_967_296.0) as u32).max(1)
            }
        }),
        flow_seed,
        connections: match target.connections {
            Connections::All => CONN_ALL,
            Connections::New => CONN_NEW,
            Connections::Established => CONN_ESTABLISHED,
        },
        ..FlMatch::default()
    };
    for (slot, cidr) in matcher.local.iter_mut().zip(&m.src) {
        *slot = fl_cidr(*cidr);
    }
    for (slot, range) in matcher.local_ports.iter_mut().zip(&m.sport) {
        *slot = FlPortRange {
            first: range.first(),
            last: range.last(),
        };
    }
    for (slot, range) in matcher.remote_ports.iter_mut().zip(&m.dport) {
        *slot = FlPortRange {
            first: range.first(),
            last: range.last(),
        };
    }
    let action = match &spec.action {
        Action::Partition => FlAction {
            kind: ACTION_PARTITION,
            ..FlAction::default()
        },
        // The class and ifb are known once the qdiscs exist (`Namespace::install`).
        Action::Netem(_) => FlAction {
            kind: ACTION_DELAY,
            ..FlAction::default()
        },
        Action::Loss(p) => FlAction {
            kind: ACTION_LOSS,
            loss_threshold: p.as_u32_fraction(),
            ..FlAction::default()
        },
        Action::BurstLoss(ge) => FlAction {
            kind: ACTION_BURST_LOSS,
            burst_enter: ge.p.as_u32_fraction(),
            burst_exit: ge.r.as_u32_fraction(),
            burst_loss_bad: ge.loss_bad.as_u32_fraction(),
            burst_loss_good: ge.loss_good.as_u32_fraction(),
            ..FlAction::default()
        },
        Action::Reset { peer } => FlAction {
            kind: ACTION_RESET,
            flags: if *peer { ACTION_F_PEER } else { 0 },
            ..FlAction::default()
        },
        Action::Reject => FlAction {
            kind: ACTION_REJECT,
            ..FlAction::default()
        },
        Action::Stall { budget, then } => FlAction {
            kind: ACTION_STALL,
            stall_bytes: *budget,
            flags: match then {
                StallEnd::Drop => 0,
                StallEnd::Reset { peer: false } => ACTION_F_RESET,
                StallEnd::Reset { peer: true } => ACTION_F_RESET | ACTION_F_PEER,
            },
            ..FlAction::default()
        },
        Action::Corrupt(c) => FlAction {
            kind: ACTION_CORRUPT,
            corrupt_threshold: c.percent.as_u32_fraction(),
            corrupt_bits: u32::from(c.bits.get()),
            flags: match c.checksum {
                Checksum::Recompute => 0,
                Checksum::Broken => ACTION_F_BROKEN,
            },
            ..FlAction::default()
        },
    };
    FlFault {
        deadline_ns: 0,
        match_: matcher,
        action,
        burst_bad: 0,
        pad: 0,
    }
}

fn fl_cidr(cidr: Cidr) -> FlCidr {
    let (addr, len) = cidr.to_mapped_v6();
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    let masked = u128::from_be_bytes(addr) & mask;
    let words = |v: u128| {
        let b = v.to_be_bytes();
        // The datapath compares raw header words: keep network byte order in memory.
        [0, 1, 2, 3]
            .map(|i| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]))
    };
    FlCidr {
        addr: words(masked),
        mask: words(mask),
    }
}

/// More protected targets than the datapath's pass-list holds.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the policy names {count} protected targets; the datapath holds at most {MAX_PROTECTED}")]
pub struct TooManyProtected {
    pub count: usize,
}

/// The datapath's pass-list for the policy's protected targets.
pub fn protected_list(targets: &[ProtectedTarget]) -> Result<FlProtectedList, TooManyProtected> {
    if targets.len() > MAX_PROTECTED {
        return Err(TooManyProtected {
            count: targets.len(),
        });
    }
    let mut list = FlProtectedList {
        count: targets.len() as u32,
        entries: [FlProtected::default(); MAX_PROTECTED],
    };
    for (entry, target) in list.entries.iter_mut().zip(targets) {
        *entry = FlProtected {
            cidr: fl_cidr(target.cidr),
            ports: target.ports.map_or(
                FlPortRange {
                    first: 0,
                    last: u16::MAX,
                },
                |r| FlPortRange {
                    first: r.first(),
                    last: r.last(),
                },
            ),
            proto: target.proto.map_or(0, Proto::number),
            pad: [0; 3],
        };
    }
    Ok(list)
}

/// The trie keys for a fault under one attachment (its device): its remote CIDRs, or every
/// address.
pub fn prefix_keys(spec: &FaultSpec, attachment: u32) -> Vec<PrefixKey> {
    let dst = &spec.target.matcher.dst;
    if dst.is_empty() {
        return vec![PrefixKey {
            attachment,
            addr: [0; 16],
            len: 0,
        }];
    }
    let mut keys: Vec<PrefixKey> = dst
        .iter()
        .map(|cidr| {
            let (addr, len) = cidr.to_mapped_v6();
            PrefixKey::new(attachment, addr, len)
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// More faults would overlap one remote address on one device than the datapath examines.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("more than {MAX_CANDIDATES} faults would overlap {network} on one device")]
pub struct TooManyOverlapping {
    pub network: String,
}

/// What to write to the trie: entries to set (key → candidate slots) and keys to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TrieChanges {
    pub set: Vec<(PrefixKey, FlCandidates)>,
    pub delete: Vec<PrefixKey>,
}

/// Which slots own which trie keys. A trie entry lists every slot owning a key that contains
/// it, because the datapath looks up only the longest matching prefix.
#[derive(Debug, Default)]
pub struct PrefixIndex {
    owners: BTreeMap<PrefixKey, BTreeSet<u32>>,
}

impl PrefixIndex {
    pub fn insert(
        &mut self,
        slot: u32,
        keys: &[PrefixKey],
    ) -> Result<TrieChanges, TooManyOverlapping> {
        for key in keys {
            self.owners.entry(*key).or_default().insert(slot);
        }
        let changes = self.entries_within(keys);
        if let Err(e) = &changes {
            tracing::debug!(error = %e, "rolling back prefix insert");
            self.forget(slot, keys);
        }
        changes.map(|set| TrieChanges {
            set,
            delete: Vec::new(),
        })
    }

    /// Every entry the trie should hold.
    pub fn entries(&self) -> Vec<(PrefixKey, FlCandidates)> {
        let all: Vec<PrefixKey> = self.owners.keys().copied().collect();
        // Lists that were written before cannot overflow now.
        self.entries_within(&all).unwrap_or_default()
    }

    pub fn remove(&mut self, slot: u32, keys: &[PrefixKey]) -> TrieChanges {
        let delete = self.forget(slot, keys);
        // Shrinking lists cannot overflow.
        let set = self.entries_within(keys).unwrap_or_default();
        TrieChanges { set, delete }
    }

    /// Forgets every key under `attachment`, for when all of its device's faults go at once;
    /// returns them.
    pub fn remove_attachment(&mut self, attachment: u32) -> Vec<PrefixKey> {
        let first = |attachment| PrefixKey {
            attachment,
            addr: [0; 16],
            len: 0,
        };
        let mut under = self.owners.split_off(&first(attachment));
        if let Some(next) = attachment.checked_add(1) {
            self.owners.append(&mut under.split_off(&first(next)));
        }
        under.into_keys().collect()
    }

    /// Removes `slot` from `keys`; returns the keys nobody owns any more.
    fn forget(&mut self, slot: u32, keys: &[PrefixKey]) -> Vec<PrefixKey> {
        let mut gone = Vec::new();
        for key in keys {
            if let Some(slots) = self.owners.get_mut(key) {
                slots.remove(&slot);
                if slots.is_empty() {
                    self.owners.remove(key);
                    gone.push(*key);
                }
            }
        }
        gone
    }

    /// The entries of every live key inside any of `scope`.
    fn entries_within(
        &self,
        scope: &[PrefixKey],
    ) -> Result<Vec<(PrefixKey, FlCandidates)>, TooManyOverlapping> {
        // Range queries keep an apply or revoke independent of how many faults there are.
        let within: BTreeSet<PrefixKey> = scope
            .iter()
            .flat_map(|s| {
                self.owners
                    .range(s.subtree())
                    .map(|(key, _)| *key)
                    .filter(|key| s.contains(key))
            })
            .collect();
        within
            .into_iter()
            .map(|key| Ok((key, self.candidates(&key)?)))
            .collect()
    }

    /// The slots of every key containing `key`: its ancestors, one lookup per prefix length.
    fn candidates(&self, key: &PrefixKey) -> Result<FlCandidates, TooManyOverlapping> {
        let slots: BTreeSet<u32> = (0..=key.len)
            .filter_map(|len| {
                self.owners
                    .get(&PrefixKey::new(key.attachment, key.addr, len))
            })
            .flat_map(|slots| slots.iter().copied())
            .collect();
        if slots.len() > MAX_CANDIDATES {
            return Err(TooManyOverlapping {
                network: key.to_string(),
            });
        }
        let mut value = FlCandidates {
            count: slots.len() as u32,
            slots: [0; MAX_CANDIDATES],
        };
        for (dst, slot) in value.slots.iter_mut().zip(slots) {
            *dst = slot;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fault::spec::{DurationLimits, FaultWire};

    fn spec(json: &str) -> FaultSpec {
        let wire: FaultWire = serde_json::from_str(json).expect("json");
        FaultSpec::from_wire(
            &wire,
            &DurationLimits {
                default: None,
                max: Duration::from_secs(60),
            },
        )
        .expect("valid")
    }

    fn key(cidr: &str) -> PrefixKey {
        let (addr, len) = cidr.parse::<Cidr>().expect("cidr").to_mapped_v6();
        PrefixKey {
            attachment: 7,
            addr,
            len,
        }
    }

    fn slots(c: &FlCandidates) -> Vec<u32> {
        c.slots[..c.count as usize].to_vec()
    }

    #[test]
    fn fault_value_encodes_match_and_action() {
        let value = fault_value(
            &spec(
                r#"{"target":{"dev":"e","direction":"ingress","match":{"proto":"tcp",
                "src":["10.1.0.0/16"],"sport":["80"],"dport":["1000-2000"]},"flows":0.5},
                "loss":{"percent":25},"duration":"1s"}"#,
            ),
            9,
        );
        assert_eq!(value.match_.hooks, HOOK_INGRESS);
        assert_eq!(value.match_.proto, 6);
        assert_eq!(value.match_.flow_threshold, 1 << 31);
        assert_eq!(
            value.match_.local_ports[0],
            FlPortRange {
                first: 80,
                last: 80
            }
        );
        assert_eq!(
            value.match_.remote_ports[0],
            FlPortRange {
                first: 1000,
                last: 2000
            }
        );
        assert_eq!(value.action.kind, ACTION_LOSS);
        assert_eq!(value.action.loss_threshold, 1 << 30);
        let cidr = value.match_.local[0];
        let bytes: Vec<u8> = cidr.addr.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(bytes[10..14], [0xff, 0xff, 10, 1]);
        let mask: Vec<u8> = cidr.mask.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(mask[12..16], [0xff, 0xff, 0, 0]);
    }

    #[test]
    fn what_a_slot_uses_beyond_its_traffic_counters() {
        let value = |action: &str| {
            fault_value(
                &spec(&format!(
                    r#"{{"target":{{"dev":"e","match":{{"proto":"tcp"}}}},{action},"duration":"1s"}}"#
                )),
                1,
            )
        };
        let uses = |action: &str| {
            let v = value(action);
            (tracks_connections(&v), counts_actions(&v))
        };
        assert_eq!(uses(r#""partition":{}"#), (false, false));
        assert_eq!(uses(r#""loss":{"percent":5}"#), (false, false));
        assert_eq!(uses(r#""stall":{"bytes":10}"#), (true, true));
        assert_eq!(uses(r#""reset":{}"#), (false, true));
        assert_eq!(uses(r#""corrupt":{"percent":5}"#), (false, true));
        let new_only = fault_value(
            &spec(r#"{"target":{"dev":"e","connections":"new"},"reject":{},"duration":"1s"}"#),
            1,
        );
        assert!(tracks_connections(&new_only) && counts_actions(&new_only));
    }

    #[test]
    fn fault_value_encodes_corrupt() {
        let value = fault_value(
            &spec(
                r#"{"target":{"dev":"e","match":{"proto":"udp"}},
                "corrupt":{"percent":50,"bits":3,"checksum":"broken"},"duration":"1s"}"#,
            ),
            1,
        );
        assert_eq!(value.match_.hooks, HOOK_EGRESS);
        assert_eq!(value.match_.proto, 17);
        assert_eq!(value.action.kind, ACTION_CORRUPT);
        assert_eq!(value.action.corrupt_threshold, 1 << 31);
        assert_eq!(value.action.corrupt_bits, 3);
        assert_eq!(value.action.flags, ACTION_F_BROKEN);
        assert_eq!(
            value.action.loss_threshold, 0,
            "corrupt drops nothing by chance"
        );
        let recompute = fault_value(
            &spec(r#"{"target":{"dev":"e"},"corrupt":{"percent":100},"duration":"1s"}"#),
            1,
        );
        assert_eq!(recompute.action.corrupt_threshold, u32::MAX);
        assert_eq!(recompute.action.corrupt_bits, 1);
        assert_eq!(recompute.action.flags, 0);
    }

    #[test]
    fn candidates_include_enclosing_prefixes() {
        let mut index = PrefixIndex::default();
        let any = PrefixKey {
            attachment: 7,
            addr: [0; 16],
            len: 0,
        };
        index.insert(1, &[any]).expect("fits");
        let changes = index.insert(2, &[key("10.0.0.0/24")]).expect("fits");
        assert_eq!(changes.set.len(), 1);
        assert_eq!(slots(&changes.set[0].1), vec![1, 2]);
        // A wider fault added later reaches the narrower entry already in the trie.
        let changes = index.insert(3, &[key("10.0.0.0/8")]).expect("fits");
        let by_key: BTreeMap<_, _> = changes.set.into_iter().collect();
        assert_eq!(slots(&by_key[&key("10.0.0.0/24")]), vec![1, 2, 3]);
        assert_eq!(slots(&by_key[&key("10.0.0.0/8")]), vec![1, 3]);
        // Another device is untouched.
        let other = PrefixKey {
            attachment: 8,
            ..key("10.0.0.0/24")
        };
        assert_eq!(
            slots(&index.insert(4, &[other]).expect("fits").set[0].1),
            vec![4]
        );

        let changes = index.remove(3, &[key("10.0.0.0/8")]);
        assert_eq!(changes.delete, vec![key("10.0.0.0/8")]);
        let by_key: BTreeMap<_, _> = changes.set.into_iter().collect();
        assert_eq!(slots(&by_key[&key("10.0.0.0/24")]), vec![1, 2]);
    }

    #[test]
    fn overflow_is_refused_and_rolled_back() {
        let mut index = PrefixIndex::default();
        let k = key("10.0.0.1/32");
        for slot in 0..MAX_CANDIDATES as u32 {
            index.insert(slot, &[k]).expect("fits");
        }
        assert!(index.insert(99, &[k]).is_err());
        let changes = index.remove(0, &[k]);
        assert_eq!(slots(&changes.set[0].1).len(), MAX_CANDIDATES - 1);
        assert!(!slots(&changes.set[0].1).contains(&99));
    }

    #[test]
    fn no_dst_means_every_address() {
        let s = spec(r#"{"target":{"dev":"e"},"partition":{},"duration":"1s"}"#);
        assert_eq!(
            prefix_keys(&s, 3),
            vec![PrefixKey {
                attachment: 3,
                addr: [0; 16],
                len: 0
            }]
        );
    }
}
