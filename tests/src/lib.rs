//! Reusable fixtures for faultline's privileged integration tests: throwaway
//! network labs, real traffic counted at the receiver, a managed `faultd`, and
//! read-only views of kernel state.

pub mod agent;
pub mod kernel;
pub mod lab;
pub mod pace;
pub mod python;
pub mod traffic;

pub use agent::{Agent, Conn};
pub use lab::{in_netns, Lab, Peer, Side};
