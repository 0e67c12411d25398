//! The control plane's ends of the socket: `server` (in faultd) and `client` (faultctl, tests).

pub mod client;
pub mod server;

/// Where faultd listens unless told otherwise; `FAULTLINE_SOCKET` overrides it for clients.
pub const DEFAULT_SOCKET: &str = "/run/faultline/faultd.sock";
