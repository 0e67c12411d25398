//! How the engine reports a fault: its view (spec, times, counters read from the kernel) and
//! the events `watch` streams.

use std::time::SystemTime;

use super::{deadline::unix_ms, ActiveFault, Engine};
use crate::{
    abi::{FlCounters, DIR_EGRESS, DIR_INGRESS},
    proto::{Counters, DirectionCounters, Event, EventKind, FaultState, FaultView, Lease},
};

impl Engine {
    fn counters_of(&self, fault: &ActiveFault) -> FlCounters {
        self.datapath
            .read_counters(fault.installed.slot)
            .unwrap_or_default()
    }

    pub(super) fn view(&self, fault: &ActiveFault, state: FaultState) -> FaultView {
        self.view_with(fault, state, self.counters_of(fault))
    }

    pub(super) fn view_with(
        &self,
        fault: &ActiveFault,
        state: FaultState,
        c: FlCounters,
    ) -> FaultView {
        let dir = |d: usize| DirectionCounters {
            matched_packets: c.matched_packets[d],
            matched_bytes: c.matched_bytes[d],
            dropped_packets: c.dropped_packets[d],
            dropped_bytes: c.dropped_bytes[d],
            resets_sent: c.resets_sent[d],
            rejects_sent: c.rejects_sent[d],
            allowed_bytes: c.allowed_bytes[d],
            corrupted_packets: c.corrupted_packets[d],
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
