//! sbx-vmm: a KVM microVM monitor.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod arch;
pub mod devices;
pub mod memory;
