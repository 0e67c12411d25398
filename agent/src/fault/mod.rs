//! The fault model: validated spec types, and the plan that turns a spec into the datapath's
//! map entries. Pure: no I/O, no kernel calls.

pub mod burst;
pub mod corrupt;
pub mod error;
pub mod netem;
pub mod plan;
pub mod spec;
pub mod values;
