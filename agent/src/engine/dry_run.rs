//! A dry run (`"dry_run": true` on an apply, `faultctl ... --dry-run`): every check an apply
//! makes, the device looked up in its namespace, and the kernel objects the fault would use,
//! each marked as already there or to be created. Nothing is changed.

use super::{
    hooks_of,
    namespace::{DeviceKey, Namespace},
    netns_path, Engine, EngineError,
};
use crate::{
    abi::{PrefixKey, PROG_EGRESS, PROG_INGRESS, PROG_INGRESS_STEER},
    fault::plan,
    kernel::{
        self,
        bpf::Hook,
        filter::{DATAPATH_PRIORITY, FILTER_HANDLE, STEER_PRIORITY},
        link,
        netns::Netns,
        qdisc::ROOT_MAJOR,
    },
    proto::{Plan, PlannedObject},
};

impl Engine {
    pub(super) fn plan(&self, wire: &crate::fault::spec::FaultWire) -> Result<Plan, EngineError> {
        let (spec, netem) = self.admit(wire)?;
        self.check_room()?;
        let path = netns_path(&spec);
        let dev = spec.target.dev.as_str();
        let loaded = self.namespaces.get(&Netns::identify(&path)?);
        let ifindex = match loaded {
            Some(namespace) => namespace.ifindex(dev)?,
            None => {
                let netns = Netns::open(&path)?;
                netns.run(&self.home, || kernel::ifindex(dev))??
            }
        };
        let device = DeviceKey {
            name: dev.to_owned(),
            ifindex,
        };
        let hooks = hooks_of(&spec);
        if let (Some(namespace), Some(delay)) = (loaded, &netem) {
            namespace.check_delay_mix(&device, &hooks, delay)?;
        }
        // A device not attached yet gets the next attachment.
        let attachment = loaded
            .and_then(|ns| ns.device(&device))
            .map_or(self.next_attachment, |d| d.attachment);
        let prefixes = plan::prefix_keys(&spec, attachment);
        Ok(Plan {
            dry_run: true,
            fault: spec.to_wire(),
            objects: planned(
                loaded,
                &device,
                &hooks,
                netem.is_some(),
                plan::tracks_connections(&plan::fault_value(&spec, 0)),
                &prefixes,
            ),
        })
    }
}

fn object(kind: &str, name: String, exists: bool) -> PlannedObject {
    PlannedObject {
        kind: kind.to_owned(),
        name,
        exists,
    }
}

/// In the order an apply puts them in place.
fn planned(
    namespace: Option<&Namespace>,
    device: &DeviceKey,
    hooks: &[Hook],
    delay: bool,
    tracks_connections: bool,
    prefixes: &[PrefixKey],
) -> Vec<PlannedObject> {
    let (dev, ifindex) = (device.name.as_str(), device.ifindex);
    let users = |hook| namespace.map_or(0, |ns| ns.hook_users(device, hook));
    let mut objects = Vec::new();
    let any_filter = Hook::ALL.into_iter().any(|hook| users(hook) > 0);
    objects.push(object(
        "clsact",
        format!("clsact qdisc on {dev}"),
        any_filter,
    ));
    for &hook in hooks {
        let (program, side) = match hook {
            Hook::Egress => (PROG_EGRESS, "egress"),
            Hook::Ingress => (PROG_INGRESS, "ingress"),
        };
        objects.push(object(
            "tc_filter",
            format!(
                "{program} on {dev} {side}, prio {DATAPATH_PRIORITY} handle {FILTER_HANDLE:#x}"
            ),
            users(hook) > 0,
        ));
    }
    if delay {
        let delays = namespace
            .and_then(|ns| ns.device(device))
            .map(|d| &d.delays);
        let original_root = delays.is_some_and(|d| d.original_root().is_some());
        let ifb = delays.and_then(|d| d.ifb());
        if hooks.contains(&Hook::Egress) {
            objects.push(object(
                "htb_root",
                format!("htb {ROOT_MAJOR:x}: as {dev}'s root qdisc (the present root is recorded and restored)"),
                original_root,
            ));
        }
        if hooks.contains(&Hook::Ingress) {
            let name = link::ifb_name(ifindex);
            objects.push(object(
                "ifb",
                format!("{name}, an ifb device carrying {dev}'s ingress, with htb {ROOT_MAJOR:x}: as its root"),
                ifb.is_some(),
            ));
            objects.push(object(
                "tc_filter",
                format!(
                    "{PROG_INGRESS_STEER} on {dev} ingress, prio {STEER_PRIORITY} handle \
                     {FILTER_HANDLE:#x}, with act_mirred to {name}"
                ),
                ifb.is_some(),
            ));
        }
        for hook in hooks {
            let on = match hook {
                Hook::Egress => dev.to_owned(),
                Hook::Ingress => link::ifb_name(ifindex),
            };
            objects.push(object(
                "htb_class",
                format!("a class {ROOT_MAJOR:x}:N of {on}'s htb"),
                false,
            ));
            objects.push(object(
                "netem_qdisc",
                format!("netem under that class of {on}"),
                false,
            ));
        }
    }
    objects.push(object(
        "fault_slot",
        "this fault's entry in fl_faults and its counters".to_owned(),
        false,
    ));
    if tracks_connections {
        objects.push(object(
            "connection_entries",
            "fl_conns: an entry per TCP connection this fault sees open (a SYN), deleted with \
             the fault"
                .to_owned(),
            false,
        ));
    }
    for key in prefixes {
        objects.push(object(
            "trie_entry",
            format!(
                "fl_prefixes: {key} under attachment {} ({dev}) lists this fault",
                key.attachment
            ),
            false,
        ));
    }
    objects
}
