//! tc objects over rtnetlink that aya does not cover: whether a hook still carries filters
//! other than ours, and removing the clsact qdisc we added. Callers must be inside the target
//! namespace: each call opens its netlink socket in the thread's current namespace.

use super::{
    bpf::{Hook, FILTER_HANDLE, FILTER_PRIORITY},
    rtnl, KernelError,
};
use futures::TryStreamExt;
use netlink_packet_route::tc::{TcAttribute, TcHandle};

/// Filters on one hook of a device: ours and everyone else's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterCount {
    pub ours: usize,
    pub foreign: usize,
}

/// Counts the filters on `hook` of `ifindex` (none when the device has no clsact).
pub fn filters(ifindex: u32, hook: Hook) -> Result<FilterCount, KernelError> {
    rtnl::run("dump filters", |handle| async move {
        let request = handle.traffic_filter(ifindex as i32).get();
        let request = match hook {
            Hook::Egress => request.egress(),
            Hook::Ingress => request.ingress(),
        };
        let filters: Vec<_> = match request.execute().try_collect().await {
            Ok(filters) => filters,
            // No clsact on the device: no filters.
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code().abs() == libc::EINVAL || e.raw_code().abs() == libc::ENOENT =>
            {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let mut count = FilterCount::default();
        // Each filter is also reported as a chain head with handle 0.
        for m in filters.iter().filter(|m| u32::from(m.header.handle) != 0) {
            let priority = (m.header.info >> 16) as u16;
            if priority == FILTER_PRIORITY && u32::from(m.header.handle) == FILTER_HANDLE {
                count.ours += 1;
            } else {
                count.foreign += 1;
            }
        }
        Ok(count)
    })
}

/// Deletes the clsact qdisc of `ifindex` (and with it any filter still on it).
pub fn delete_clsact(ifindex: u32) -> Result<(), KernelError> {
    rtnl::run("delete clsact", |handle| async move {
        let mut request = handle.qdisc().del(ifindex as i32);
        let message = request.message_mut();
        message.header.parent = TcHandle::CLSACT;
        message.header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        message
            .attributes
            .push(TcAttribute::Kind("clsact".to_owned()));
        request.execute().await
    })
}
