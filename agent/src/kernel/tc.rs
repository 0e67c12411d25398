//! tc objects over rtnetlink that aya does not cover: whether a hook still carries filters
//! other than ours, and removing the clsact qdisc we added. Callers must be inside the target
//! namespace: each call opens its netlink socket in the thread's current namespace.

use futures::TryStreamExt;
use netlink_packet_route::tc::{TcAttribute, TcHandle};
use rtnetlink::Handle;

use super::{
    bpf::{Hook, FILTER_HANDLE, FILTER_PRIORITY},
    KernelError,
};

/// Runs one rtnetlink exchange on a private single-threaded runtime, so the socket is created
/// on (and in the namespace of) the calling thread.
fn with_rtnetlink<T, F>(op: &'static str, f: impl FnOnce(Handle) -> F) -> Result<T, KernelError>
where
    F: std::future::Future<Output = Result<T, rtnetlink::Error>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| KernelError::Syscall {
            call: "tokio runtime",
            source,
        })?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| KernelError::Syscall {
                call: "netlink socket",
                source,
            })?;
        let task = tokio::spawn(connection);
        let result = f(handle)
            .await
            .map_err(|source| KernelError::Netlink { op, source });
        task.abort();
        result
    })
}

/// Counts the filters on `hook` of `ifindex` that are not ours.
pub fn foreign_filters(ifindex: u32, hook: Hook) -> Result<usize, KernelError> {
    with_rtnetlink("dump filters", |handle| async move {
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
    with_rtnetlink("delete clsact", |handle| async move {
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
