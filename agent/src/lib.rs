//! faultline: network faults injected at kernel speed.
//!
//! Control plane: `proto` (the wire contract), `control` (socket server and client), `engine`
//! (the one owner of active faults). Fault model: `fault` (pure). Kernel plane: `kernel`. The
//! datapath's layouts, shared by the fault model and the kernel plane: `abi` (a leaf).

pub mod abi;
pub mod control;
pub mod engine;
pub mod fault;
pub mod kernel;
pub mod policy;
pub mod proto;
