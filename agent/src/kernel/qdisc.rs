//! The qdiscs of delay faults, over typed rtnetlink messages (no `tc` subprocess).
//!
//! Shape: a root htb (handle fa17:) whose unclassified traffic takes htb's direct queue — no
//! class, no rate limit — plus one class fa17:N per delay fault with a netem leaf (handle
//! e000+N:). The datapath steers a fault's packets into its class by setting skb->priority
//! to fa17:N; htb honours that before any filter. The device's original root qdisc is recorded
//! first and restored when the last delay fault leaves.

use netlink_packet_core::{DefaultNla, Nla};
use netlink_packet_route::{
    tc::{TcAttribute, TcHandle, TcMessage, TcOption},
    RouteNetlinkMessage,
};
use serde::{Deserialize, Serialize};

use super::{
    nla::{attribute, words, NLA_F_NESTED, TCA_OPTIONS, TCA_STAB},
    rtnl::{Netlink, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE},
    KernelError,
};

pub const ROOT_MAJOR: u16 = 0xfa17;
const ROOT_HANDLE: u32 = (ROOT_MAJOR as u32) << 16;
const LEAF_MAJOR_BASE: u16 = 0xe000;
/// Class minors available for delay faults on one device.
pub const MAX_CLASSES: u16 = 0x0fff;

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_DIRECT_QLEN: u16 = 5;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// Never a limit: classes exist to attach netem, not to shape (netem's own `rate` does that).
const UNLIMITED_BYTES_PER_SEC: u64 = 1_250_000_000_000;
/// Packets htb's direct queue holds, like a default pfifo.
const DIRECT_QLEN: u32 = 1000;

/// The class handle (and skb->priority) of a delay fault's class `minor`.
pub fn class_handle(minor: u16) -> u32 {
    ROOT_HANDLE | u32::from(minor)
}

/// A device's root qdisc as found before we replaced it; journaled, so that a later faultd
/// can still put it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootQdisc {
    handle: u32,
    kind: String,
    /// Kind-specific attributes (options, size table) as raw netlink attributes (type,
    /// payload), to recreate a configured qdisc byte for byte.
    attributes: Vec<(u16, Vec<u8>)>,
}

impl RootQdisc {
    /// Default qdiscs (handle 0) come back by themselves when the root is deleted.
    fn is_default(&self) -> bool {
        self.handle == 0
    }
}

/// `struct tc_htb_glob`: version 3, rate2quantum 10, no default class (unclassified traffic
/// goes to the direct queue).
fn htb_init() -> Vec<u8> {
    let mut options = attribute(TCA_HTB_INIT, &words(&[3, 10, 0, 0, 0]));
    options.extend(attribute(TCA_HTB_DIRECT_QLEN, &DIRECT_QLEN.to_ne_bytes()));
    options
}

/// `struct tc_htb_opt` for an unlimited class, with the 64-bit rates.
fn htb_class() -> Vec<u8> {
    let ratespec = |rate: u64| {
        let mut spec = vec![0u8, TC_LINKLAYER_ETHERNET];
        spec.extend_from_slice(&[0; 6]); // overhead, cell_align, mpu
        spec.extend_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
        spec
    };
    // Buffers of 1 ms in psched ticks (64 ns each): plenty at this rate.
    let buffer_ticks = 1_000_000u32 >> 6;
    let mut parms = ratespec(UNLIMITED_BYTES_PER_SEC);
    parms.extend(ratespec(UNLIMITED_BYTES_PER_SEC));
    parms.extend(words(&[buffer_ticks, buffer_ticks, 60_000, 0, 0]));
    let mut options = attribute(TCA_HTB_PARMS, &parms);
    options.extend(attribute(
        TCA_HTB_RATE64,
        &UNLIMITED_BYTES_PER_SEC.to_ne_bytes(),
    ));
    options.extend(attribute(
        TCA_HTB_CEIL64,
        &UNLIMITED_BYTES_PER_SEC.to_ne_bytes(),
    ));
    options
}

fn message(
    ifindex: u32,
    parent: u32,
    handle: u32,
    kind: &str,
    options: Option<Vec<u8>>,
) -> TcMessage {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = TcHandle::from(parent);
    message.header.handle = TcHandle::from(handle);
    message.attributes.push(TcAttribute::Kind(kind.to_owned()));
    if let Some(options) = options {
        message
            .attributes
            .push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)));
    }
    message
}

const ROOT: u32 = u32::MAX;

/// Class fa17:`minor` of our root htb.
fn class_message(ifindex: u32, minor: u16, options: Option<Vec<u8>>) -> TcMessage {
    message(ifindex, ROOT_HANDLE, class_handle(minor), "htb", options)
}

/// The device's root qdisc now.
pub async fn root_qdisc(nl: &Netlink, ifindex: u32) -> Result<Option<RootQdisc>, KernelError> {
    qdisc_under(nl, ifindex, ROOT).await
}

/// Whether `ifindex` has a clsact qdisc (whoever added it).
pub async fn has_clsact(nl: &Netlink, ifindex: u32) -> Result<bool, KernelError> {
    let clsact = qdisc_under(nl, ifindex, u32::from(TcHandle::CLSACT)).await?;
    Ok(clsact.is_some_and(|q| q.kind == "clsact"))
}

/// The TCA_OPTIONS payload of the qdisc under `parent` on `ifindex` (e.g. a class's leaf), as
/// the kernel reports it.
pub async fn leaf_options(
    nl: &Netlink,
    ifindex: u32,
    parent: u32,
) -> Result<Option<Vec<u8>>, KernelError> {
    Ok(qdisc_under(nl, ifindex, parent).await?.and_then(|q| {
        q.attributes
            .into_iter()
            .find_map(|(kind, value)| (kind == TCA_OPTIONS).then_some(value))
    }))
}

/// The qdisc whose parent is `parent` on `ifindex`, with its options and size table.
async fn qdisc_under(
    nl: &Netlink,
    ifindex: u32,
    parent: u32,
) -> Result<Option<RootQdisc>, KernelError> {
    let all = nl
        .dump(
            "dump qdiscs",
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
        )
        .await?;
    Ok(all.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewQueueDiscipline(q)
            if q.header.index == ifindex as i32 && u32::from(q.header.parent) == parent =>
        {
            let kind = q.attributes.iter().find_map(|a| match a {
                TcAttribute::Kind(k) => Some(k.clone()),
                _ => None,
            })?;
            let attributes = q
                .attributes
                .iter()
                .filter(|a| match a {
                    TcAttribute::Options(_) | TcAttribute::Stab(_) => true,
                    TcAttribute::Other(nla) => matches!(nla.kind(), TCA_OPTIONS | TCA_STAB),
                    _ => false,
                })
                .map(raw_attribute)
                .collect();
            Some(RootQdisc {
                handle: u32::from(q.header.handle),
                kind,
                attributes,
            })
        }
        _ => None,
    }))
}

/// An attribute as (type, payload) bytes. The parser keeps the options of kinds it does not
/// know (e.g. pfifo's raw `tc_fifo_qopt`) as one nested attribute; sent back like that they
/// would gain a second header, so that one is unwrapped.
fn raw_attribute(attribute: &TcAttribute) -> (u16, Vec<u8>) {
    if let TcAttribute::Options(options) = attribute {
        if let [TcOption::Other(raw)] = options.as_slice() {
            if raw.kind() == TCA_OPTIONS {
                let mut value = vec![0; raw.value_len()];
                raw.emit_value(&mut value);
                return (TCA_OPTIONS, value);
            }
        }
    }
    let mut value = vec![0; attribute.value_len()];
    attribute.emit_value(&mut value);
    (attribute.kind() & !NLA_F_NESTED, value)
}

/// Replaces the root qdisc with our htb.
pub async fn install_root(nl: &Netlink, ifindex: u32) -> Result<(), KernelError> {
    let root = message(ifindex, ROOT, ROOT_HANDLE, "htb", Some(htb_init()));
    nl.change(
        "add root htb",
        RouteNetlinkMessage::NewQueueDiscipline(root),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await
}

/// Puts the recorded root back: a default qdisc by deleting ours, a configured one by
/// recreating it with its own attributes.
pub async fn restore_root(
    nl: &Netlink,
    ifindex: u32,
    original: &RootQdisc,
) -> Result<(), KernelError> {
    if original.is_default() {
        return delete_root(nl, ifindex).await;
    }
    let mut again = message(ifindex, ROOT, original.handle, &original.kind, None);
    again.attributes.extend(
        original
            .attributes
            .iter()
            .map(|(kind, value)| TcAttribute::Other(DefaultNla::new(*kind, value.clone()))),
    );
    nl.change(
        "restore root qdisc",
        RouteNetlinkMessage::NewQueueDiscipline(again),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await
}

/// Adds class fa17:`minor` with a netem leaf configured by `netem_options` (TCA_OPTIONS
/// payload). On failure nothing of it remains.
pub async fn add_delay_class(
    nl: &Netlink,
    ifindex: u32,
    minor: u16,
    netem_options: Vec<u8>,
) -> Result<(), KernelError> {
    let class = class_message(ifindex, minor, Some(htb_class()));
    let leaf_handle = u32::from(LEAF_MAJOR_BASE + minor) << 16;
    let leaf = message(
        ifindex,
        class_handle(minor),
        leaf_handle,
        "netem",
        Some(netem_options),
    );
    nl.change(
        "add delay class",
        RouteNetlinkMessage::NewTrafficClass(class),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await?;
    let added = nl
        .change(
            "add netem qdisc",
            RouteNetlinkMessage::NewQueueDiscipline(leaf),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await;
    if added.is_err() {
        let _ = delete_delay_class(nl, ifindex, minor).await;
    }
    added
}

/// Whether the root qdisc of `ifindex` is our htb.
pub async fn root_is_ours(nl: &Netlink, ifindex: u32) -> Result<bool, KernelError> {
    Ok(root_qdisc(nl, ifindex)
        .await?
        .is_some_and(|root| root.handle == ROOT_HANDLE))
}

/// The minors of the classes under our root htb on `ifindex`, each with whether it has a netem
/// leaf.
pub async fn delay_classes(nl: &Netlink, ifindex: u32) -> Result<Vec<(u16, bool)>, KernelError> {
    let classes = nl
        .dump(
            "dump classes",
            RouteNetlinkMessage::GetTrafficClass(TcMessage::with_index(ifindex as i32)),
        )
        .await?;
    let qdiscs = nl
        .dump(
            "dump qdiscs",
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
        )
        .await?;
    let leaf_parents: Vec<u32> = qdiscs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q) if q.header.index == ifindex as i32 => {
                Some(u32::from(q.header.parent))
            }
            _ => None,
        })
        .collect();
    Ok(classes
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewTrafficClass(c)
                if c.header.index == ifindex as i32
                    && u32::from(c.header.handle) & 0xffff_0000 == ROOT_HANDLE =>
            {
                let handle = u32::from(c.header.handle);
                Some((handle as u16, leaf_parents.contains(&handle)))
            }
            _ => None,
        })
        .collect())
}

/// Deletes our root htb from `ifindex`, whatever it was before (the kernel's default returns).
pub async fn delete_root(nl: &Netlink, ifindex: u32) -> Result<(), KernelError> {
    let ours = message(ifindex, ROOT, ROOT_HANDLE, "htb", None);
    nl.change(
        "delete root htb",
        RouteNetlinkMessage::DelQueueDiscipline(ours),
        0,
    )
    .await
}

/// Deletes class fa17:`minor` and its netem leaf.
pub async fn delete_delay_class(nl: &Netlink, ifindex: u32, minor: u16) -> Result<(), KernelError> {
    let class = class_message(ifindex, minor, None);
    nl.change(
        "delete delay class",
        RouteNetlinkMessage::DelTrafficClass(class),
        0,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_aligned_and_sized() {
        let init = htb_init();
        assert_eq!(init.len(), 4 + 20 + 4 + 4);
        assert_eq!(u16::from_ne_bytes([init[0], init[1]]), 24);
        let class = htb_class();
        // tc_htb_opt is 44 bytes; two u64 rates follow.
        assert_eq!(class.len(), (4 + 44) + (4 + 8) * 2);
        assert_eq!(class[4 + 1], TC_LINKLAYER_ETHERNET);
        assert_eq!(class_handle(3), 0xfa17_0003);
    }
}
