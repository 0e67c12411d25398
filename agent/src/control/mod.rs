//! The control plane's ends of the socket: `server` (in faultd) and `client` (faultctl, tests),
//! and `ownership` of the state directory between a faultd and its reaper.

pub mod client;
pub mod metrics;
pub mod ownership;
pub mod server;

/// Where faultd listens unless told otherwise; `FAULTLINE_SOCKET` overrides it for clients.
pub const DEFAULT_SOCKET: &str = "/run/faultline/faultd.sock";
