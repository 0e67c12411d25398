//! Our tc filters on a device's clsact hooks, as typed rtnetlink messages on the namespace's
//! connection: the datapath's program in direct-action mode, its classid naming the
//! attachment, and for ingress delay the steering filter whose act_mirred hands marked packets
//! to the device's ifb.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{DefaultNla, Emitable};
use netlink_packet_route::{
    tc::{
        TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType,
        TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcMirror,
        TcMirrorActionType, TcOption,
    },
    RouteNetlinkMessage,
};

use super::{
    bpf::Hook,
    nla::NLA_F_NESTED,
    rtnl::{self, Netlink, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE},
    KernelError,
};

/// Distinguishes our filters from others at the same priority.
pub const FILTER_HANDLE: u32 = 0xfa17;
/// The datapath's filter sits first on the hook, so a CNI's filter that ends classification
/// cannot hide traffic from a fault; packets no fault drops continue (TC_ACT_UNSPEC).
pub const DATAPATH_PRIORITY: u16 = 1;
/// The ingress steering filter runs right after the datapath's.
pub const STEER_PRIORITY: u16 = 2;

/// TCA_BPF_ACT (linux/pkt_cls.h): the actions of a filter that is not direct-action.
const TCA_BPF_ACT: u16 = 1;
const ETH_P_ALL: u16 = 0x0003;

/// One filter of ours, as attached.
pub struct BpfFilter<'a> {
    pub program: BorrowedFd<'a>,
    /// Shown by `tc filter show`.
    pub name: &'a str,
    pub priority: u16,
    /// The filter's classid, which the program reads as `skb->tc_classid`: the attachment.
    pub classid: Option<u32>,
    /// `Some(ifindex)`: not direct-action; a match (the program returns -1) is redirected to
    /// the egress of device `ifindex` by act_mirred. `None`: the program's return value is the
    /// verdict (direct action).
    pub redirect_to: Option<u32>,
}

fn hook_parent(hook: Hook) -> TcHandle {
    TcHandle {
        major: 0xffff,
        minor: match hook {
            Hook::Ingress => TcHandle::MIN_INGRESS,
            Hook::Egress => TcHandle::MIN_EGRESS,
        },
    }
}

fn filter_message(ifindex: u32, hook: Hook, priority: u16) -> TcMessage {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = hook_parent(hook);
    message.header.handle = TcHandle::from(FILTER_HANDLE);
    message.header.info = (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be());
    message
}

/// The act_mirred action list that redirects to the egress of `ifindex`, as TCA_BPF_ACT's
/// payload.
fn redirect_actions(ifindex: u32) -> Vec<u8> {
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = ifindex;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".to_owned()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    let mut payload = vec![0; action.buffer_len()];
    action.emit(&mut payload);
    payload
}

/// Attaches `filter` to `hook` of `ifindex`, replacing a filter of ours at its priority. The
/// clsact qdisc must exist.
pub async fn attach(
    nl: &Netlink,
    ifindex: u32,
    hook: Hook,
    filter: &BpfFilter<'_>,
) -> Result<(), KernelError> {
    let mut message = filter_message(ifindex, hook, filter.priority);
    let fd = u32::try_from(filter.program.as_raw_fd()).map_err(|_| KernelError::Syscall {
        call: "program fd",
        source: std::io::Error::from_raw_os_error(libc::EBADF),
    })?;
    let mut options = vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(fd)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(filter.name.to_owned())),
    ];
    if let Some(classid) = filter.classid {
        options.push(TcOption::Bpf(TcFilterBpfOption::ClassId(TcHandle::from(
            classid,
        ))));
    }
    match filter.redirect_to {
        None => options.push(TcOption::Bpf(TcFilterBpfOption::Flags(
            TcBpfFlags::DirectAction,
        ))),
        Some(target) => options.push(TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(
            TCA_BPF_ACT | NLA_F_NESTED,
            redirect_actions(target),
        )))),
    }
    message.attributes = vec![
        TcAttribute::Kind("bpf".to_owned()),
        TcAttribute::Options(options),
    ];
    nl.change(
        "attach tc filter",
        RouteNetlinkMessage::NewTrafficFilter(message),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await
    .map_err(|e| no_device(e, ifindex))
}

/// A refusal because the device is gone, as such.
fn no_device(error: KernelError, ifindex: u32) -> KernelError {
    match rtnl::errno(&error) {
        Some(libc::ENODEV) => KernelError::DeviceNotFound {
            dev: format!("ifindex {ifindex}"),
        },
        _ => error,
    }
}

/// Removes our filter at `priority` from `hook` of `ifindex`, if there.
pub async fn detach(
    nl: &Netlink,
    ifindex: u32,
    hook: Hook,
    priority: u16,
) -> Result<(), KernelError> {
    let message = filter_message(ifindex, hook, priority);
    match nl
        .change(
            "detach tc filter",
            RouteNetlinkMessage::DelTrafficFilter(message),
            0,
        )
        .await
    {
        // Gone already, with its priority, its clsact or its device.
        Err(e)
            if matches!(
                rtnl::errno(&e),
                Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// One filter on a hook of a device, as the kernel lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    pub priority: u16,
    /// Ours: our handle at one of our priorities.
    pub ours: bool,
}

/// The filters on `hook` of `ifindex` (none when the device has no clsact).
pub async fn filters(nl: &Netlink, ifindex: u32, hook: Hook) -> Result<Vec<Listed>, KernelError> {
    let mut query = TcMessage::with_index(ifindex as i32);
    query.header.parent = hook_parent(hook);
    let filters = match nl
        .dump("dump filters", RouteNetlinkMessage::GetTrafficFilter(query))
        .await
    {
        Ok(filters) => filters,
        // No clsact on the device: no filters.
        Err(e) if matches!(rtnl::errno(&e), Some(libc::EINVAL | libc::ENOENT)) => Vec::new(),
        Err(e) => return Err(no_device(e, ifindex)),
    };
    Ok(filters
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewTrafficFilter(f) => Some(f),
            _ => None,
        })
        // Each filter is also reported as a chain head with handle 0.
        .filter(|m| m.header.index == ifindex as i32 && u32::from(m.header.handle) != 0)
        .map(|m| {
            let priority = (m.header.info >> 16) as u16;
            Listed {
                priority,
                ours: [DATAPATH_PRIORITY, STEER_PRIORITY].contains(&priority)
                    && u32::from(m.header.handle) == FILTER_HANDLE,
            }
        })
        .collect())
}

/// Adds a clsact qdisc to `ifindex`; returns false when one was already there.
pub async fn add_clsact(nl: &Netlink, ifindex: u32) -> Result<bool, KernelError> {
    match nl
        .change(
            "add clsact",
            RouteNetlinkMessage::NewQueueDiscipline(clsact_message(ifindex)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if rtnl::errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(no_device(e, ifindex)),
    }
}

/// Deletes the clsact qdisc of `ifindex` (and with it any filter still on it).
pub async fn delete_clsact(nl: &Netlink, ifindex: u32) -> Result<(), KernelError> {
    nl.change(
        "delete clsact",
        RouteNetlinkMessage::DelQueueDiscipline(clsact_message(ifindex)),
        0,
    )
    .await
}

fn clsact_message(ifindex: u32) -> TcMessage {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = TcHandle::CLSACT;
    message.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    message
        .attributes
        .push(TcAttribute::Kind("clsact".to_owned()));
    message
}
