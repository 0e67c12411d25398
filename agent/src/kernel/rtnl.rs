//! One rtnetlink exchange at a time, on the calling thread and in its network namespace.
//! Typed messages in, typed messages out; kernel refusals become `KernelError::Netlink`.

use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
pub use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::Handle;

use super::KernelError;

/// Runs `f` on a private single-threaded runtime, so the netlink socket is created on (and in
/// the namespace of) the calling thread.
pub fn run<T, F>(op: &'static str, f: impl FnOnce(Handle) -> F) -> Result<T, KernelError>
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

/// One change as a whole exchange: `run` + `change`.
pub fn change_one(
    op: &'static str,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), KernelError> {
    run(op, |mut handle| async move {
        change(&mut handle, message, flags).await
    })
}

/// Sends a change (`NLM_F_ACK` added) and waits for the kernel's answer.
pub async fn change(
    handle: &mut Handle,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut request = NetlinkMessage::from(message);
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut responses = handle.request(request)?;
    while let Some(response) = responses.next().await {
        if let NetlinkPayload::Error(e) = response.payload {
            if e.code.is_some() {
                return Err(rtnetlink::Error::NetlinkError(e));
            }
        }
    }
    Ok(())
}

/// Sends a dump request and collects the answers.
pub async fn dump(
    handle: &mut Handle,
    message: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, rtnetlink::Error> {
    let mut request = NetlinkMessage::from(message);
    request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut responses = handle.request(request)?;
    let mut out = Vec::new();
    while let Some(response) = responses.next().await {
        match response.payload {
            NetlinkPayload::InnerMessage(inner) => out.push(inner),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(rtnetlink::Error::NetlinkError(e))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The errno of a kernel refusal, if that is what the error is.
pub fn errno(error: &KernelError) -> Option<i32> {
    match error {
        KernelError::Netlink {
            source: rtnetlink::Error::NetlinkError(e),
            ..
        } => e.code.map(|c| -c.get()),
        _ => None,
    }
}
