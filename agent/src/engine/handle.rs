//! How the rest of faultd talks to the engine: `Command`s over a channel, answers on oneshot
//! channels, events on a broadcast channel; and `spawn`, which starts the engine's thread.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::{EngineConfig, EngineError};
use crate::{
    fault::spec::FaultWire,
    kernel::KernelError,
    proto::{EngineStats, Event, FaultView, Hello, Plan},
};

/// Identifies one client connection, for connection leases.
pub type ConnectionId = u64;

pub type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

pub enum Command {
    Apply {
        fault: Box<FaultWire>,
        key: Option<String>,
        /// The connection holding the fault, for `"lease": "connection"`.
        lease: Option<ConnectionId>,
        reply: Reply<FaultView>,
    },
    Renew {
        fault_id: String,
        duration: String,
        reply: Reply<FaultView>,
    },
    /// A connection closed: its leased faults go.
    ConnectionClosed(ConnectionId),
    List(Reply<Vec<FaultView>>),
    Get {
        fault_id: String,
        reply: Reply<FaultView>,
    },
    Revoke {
        fault_id: String,
        reply: Reply<FaultView>,
    },
    /// An apply's checks and plan, changing nothing.
    Plan {
        fault: Box<FaultWire>,
        reply: Reply<Plan>,
    },
    Clear(Reply<Vec<FaultView>>),
    /// What the datapath costs and what the engine has repaired, for metrics.
    Stats(Reply<EngineStats>),
    /// Revert everything and stop the engine thread.
    Shutdown(Reply<Vec<FaultView>>),
    /// Stop without touching anything: the reaper hands over to a new faultd, which adopts
    /// what the journal lists.
    HandOver(Reply<()>),
}

/// A cloneable way to talk to the engine.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    commands: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<Event>,
    /// `hello`'s answer but for the active count: fixed once the engine has started.
    hello: Arc<Hello>,
    active: Arc<AtomicUsize>,
}

impl EngineHandle {
    /// The answer to `hello`, without waiting for the engine: however busy it is, a client
    /// can always learn that faultd is up, and what it can do.
    pub fn hello(&self) -> Hello {
        let mut hello = (*self.hello).clone();
        hello.active_faults = self.active.load(Ordering::Relaxed);
        hello
    }

    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Sends a command that needs no answer.
    pub fn send(&self, command: Command) {
        // A stopped engine has nothing left to act on.
        let _ = self.commands.send(command);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// Starts the engine on a thread of its own (it enters network namespaces, which is per
/// thread) with a single-threaded runtime: its netlink connections and timers run there.
/// Returns once the engine has loaded the datapath, probed the kernel and adopted what an
/// earlier faultd left.
pub fn spawn(
    config: EngineConfig,
) -> Result<(EngineHandle, std::thread::JoinHandle<()>), EngineError> {
    let (commands, inbox) = mpsc::unbounded_channel();
    let (events, _) = broadcast::channel(1024);
    let active = Arc::new(AtomicUsize::new(0));
    let (engine_events, engine_active) = (events.clone(), active.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("faultline-engine".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(source) => {
                    let error = KernelError::Syscall {
                        call: "tokio runtime",
                        source,
                    };
                    let _ = ready_tx.send(Err(error.into()));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut engine =
                    match super::Engine::start(config, engine_events, engine_active).await {
                        Ok(engine) => engine,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                let _ = ready_tx.send(Ok(engine.hello()));
                engine.run(inbox).await;
            });
        })
        .map_err(|source| KernelError::Syscall {
            call: "spawn engine thread",
            source,
        })?;
    let hello = ready_rx.recv().map_err(|_| EngineError::Stopped)??;
    let handle = EngineHandle {
        commands,
        events,
        hello: Arc::new(hello),
        active,
    };
    Ok((handle, thread))
}
