//! rtnetlink connections, kept for as long as their namespace has faults: a netlink socket
//! stays in the namespace it was made in, so a connection made once (with the thread inside
//! the namespace) serves every later change from faultd's own namespace, with no `setns`.
//! Typed messages in, typed messages out; kernel refusals become `KernelError::Netlink`.
//! A connection's task runs on the tokio runtime that made it.

use futures::{channel::mpsc::UnboundedReceiver, StreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
pub use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::sys::SocketAddr;
use rtnetlink::{Handle, MulticastGroup};
use tokio::task::JoinHandle;

use super::KernelError;

/// Requests to one namespace's kernel.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn socket_error(source: std::io::Error) -> KernelError {
    KernelError::Syscall {
        call: "netlink socket",
        source,
    }
}

impl Netlink {
    /// A connection in the calling thread's namespace.
    pub fn here() -> Result<Netlink, KernelError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(socket_error)?;
        Ok(Netlink {
            handle,
            task: tokio::spawn(connection),
        })
    }

    /// rtnetlink's request builders, for what they cover (links, addresses).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Sends a change (`NLM_F_ACK` added) and waits for the kernel's answer.
    pub async fn change(
        &self,
        op: &'static str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), KernelError> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut responses = self
            .handle
            .clone()
            .request(request)
            .map_err(|source| KernelError::Netlink { op, source })?;
        while let Some(response) = responses.next().await {
            if let NetlinkPayload::Error(e) = response.payload {
                if e.code.is_some() {
                    return Err(KernelError::Netlink {
                        op,
                        source: rtnetlink::Error::NetlinkError(e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends a dump request and collects the answers.
    pub async fn dump(
        &self,
        op: &'static str,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut responses = self
            .handle
            .clone()
            .request(request)
            .map_err(|source| KernelError::Netlink { op, source })?;
        let mut out = Vec::new();
        while let Some(response) = responses.next().await {
            match response.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(KernelError::Netlink {
                        op,
                        source: rtnetlink::Error::NetlinkError(e),
                    })
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// What the kernel announces of links and tc objects in one namespace: changes by anyone,
/// faultd's own included.
#[derive(Debug)]
pub struct Notifications {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    task: JoinHandle<()>,
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Notifications {
    /// Listens in the calling thread's namespace.
    pub fn here() -> Result<Notifications, KernelError> {
        let (connection, _, messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Tc])
                .map_err(socket_error)?;
        Ok(Notifications {
            messages,
            task: tokio::spawn(connection),
        })
    }

    /// The next announcement; `None` once the socket has failed (e.g. its buffer overflowed),
    /// after which what was missed must be found by looking.
    pub async fn next(&mut self) -> Option<RouteNetlinkMessage> {
        loop {
            let (message, _) = self.messages.next().await?;
            if let NetlinkPayload::InnerMessage(inner) = message.payload {
                return Some(inner);
            }
        }
    }
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
