//! tc objects over rtnetlink that aya does not cover: whether a hook still carries filters
//! other than ours, and removing the clsact qdisc we added. Callers must be inside the target
//! namespace: each call opens its netlink socket in the thread's current namespace.

use super::{
    bpf::{Hook, FILTER_HANDLE, FILTER_PRIORITY},
    rtnl, KernelError,
};
use futures::TryStreamExt;
use netlink_packet_route::tc::{TcAttribute, TcHandle};

/// Counts the filters on `hook` of `ifindex` that are not ours.
pub fn foreign_filters(ifindex: u32, hook: Hook) -> Result<usize, KernelError> {
    rtnl::run("dump filters", |handle| async move {
        let request = handle.traffic_filter(ifindex as i32).get();
        let request = match hook {
            Hook::Egress => request.egress(),
            Hook::Ingress => request.ingress(),
        };
        let filters: Vec<_> = request.execute().try_collect().await?;
        Ok(filters
            .iter()
            .filter(|m| u32::from(m.header.handle) != 0)
            .filter(|m| {
                let priority = (m.header.info >> 16) as u16;
                !(priority == FILTER_PRIORITY && u32::from(m.header.handle) == FILTER_HANDLE)
            })
            .count())
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
