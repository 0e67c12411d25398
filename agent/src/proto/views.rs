//! How faultd describes a fault: its view (spec, state, deadline, counters), the events a
//! watch streams, and a dry run's plan.

use serde::{Deserialize, Serialize};

use super::Lease;
use crate::fault::spec::FaultWire;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultState {
    Active,
    Expired,
    Revoked,
    /// Its device or its namespace was deleted: the event's message says which.
    Lost,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionCounters {
    pub matched_packets: u64,
    pub matched_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// RSTs a reset fault sent (this host's side's and the peer's); on the wire only when
    /// not 0, like `rejects_sent`, so the counters of a loss or partition stay four numbers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resets_sent: u64,
    /// RST/ACKs and ICMP port unreachables a reject fault sent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rejects_sent: u64,
    /// Payload bytes a stall (or reset_after) let through before it acted, each byte once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allowed_bytes: u64,
    /// Packets a corrupt fault corrupted (with a broken checksum on a packet that cannot carry
    /// one, dropped in the receiver's place: then counted in `dropped_*` too).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub corrupted_packets: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub egress: DirectionCounters,
    pub ingress: DirectionCounters,
}

/// What an apply with `"dry_run": true` answers: the fault as it would be applied, and the
/// kernel objects it would use, in the order they would be put in place. Nothing is changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub dry_run: bool,
    pub fault: FaultWire,
    pub objects: Vec<PlannedObject>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedObject {
    /// `clsact`, `tc_filter`, `fault_slot`, `connection_entries`, `trie_entry`, `htb_root`,
    /// `htb_class`, `netem_qdisc` or `ifb`.
    pub kind: String,
    pub name: String,
    /// Already there (shared with other faults, or not ours): this fault adds nothing to it.
    pub exists: bool,
}

/// A fault as the agent reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultView {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    pub state: FaultState,
    pub fault: FaultWire,
    pub applied_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    pub remaining_ms: u64,
    pub counters: Counters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Applied,
    /// Its deadline moved (`renew`).
    Renewed,
    Expired,
    Revoked,
    /// Its device or namespace was deleted; the message says which.
    Lost,
    /// Someone else removed something of the fault's (its filter, clsact, qdisc or ifb), and
    /// faultd put it back; the message says what.
    Repaired,
    /// The agent could not remove (or fully remove) a fault's kernel state.
    Error,
}

/// One line of a `watch` stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: EventKind,
    pub fault: FaultView,
    pub at_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
