//! How the engine reports a fault: its view (spec, times, counters read from the kernel) and
//! the events `watch` streams.

use std::time::SystemTime;

use super::{deadline::unix_ms, ActiveFault, Engine};
use crate::{
    abi::{DIR_EGRESS, DIR_INGRESS},
    kernel::bpf::SlotCounters,
    proto::{Counters, DirectionCounters, Event, EventKind, FaultState, FaultView, Lease},
};

impl Engine {
    fn counters_of(&self, fault: &ActiveFault) -> SlotCounters {
        self.datapath
            .read_counters(fault.installed.slot, fault.installed.counts_actions)
            .unwrap_or_default()
    }

    pub(super) fn view(&self, fault: &ActiveFault, state: FaultState) -> FaultView {
        self.view_with(fault, state, self.counters_of(fault))
    }

    pub(super) fn view_with(
        &self,
        fault: &ActiveFault,
        state: FaultState,
        SlotCounters { traffic, actions }: SlotCounters,
    ) -> FaultView {
        let dir = |d: usize| DirectionCounters {
            matched_packets: traffic.matched_packets[d],
            matched_bytes: traffic.matched_bytes[d],
            dropped_packets: traffic.dropped_packets[d],
            dropped_bytes: traffic.dropped_bytes[d],
            resets_sent: actions.resets_sent[d],
            rejects_sent: actions.rejects_sent[d],
            allowed_bytes: actions.allowed_bytes[d],
            corrupted_packets: actions.corrupted_packets[d],
        };
        let remaining = fault.deadline.remaining();
        FaultView {
            id: fault.id.clone(),
            key: fault.key.clone(),
            lease: fault.lease.map(|_| Lease::Connection),
            state,
            fault: fault.wire.clone(),
            applied_at_unix_ms: unix_ms(fault.applied_at),
            expires_at_unix_ms: unix_ms(fault.deadline.wall),
            remaining_ms: remaining.as_millis() as u64,
            counters: Counters {
                egress: dir(DIR_EGRESS),
                ingress: dir(DIR_INGRESS),
            },
        }
    }

    pub(super) fn emit(&self, event: EventKind, fault: &FaultView, message: Option<String>) {
        // Nobody watching is fine, and costs nothing: a clear of thousands makes thousands.
        if self.events.receiver_count() == 0 {
            return;
        }
        let _ = self.events.send(Event {
            event,
            fault: fault.clone(),
            at_unix_ms: unix_ms(SystemTime::now()),
            message,
        });
    }
}
