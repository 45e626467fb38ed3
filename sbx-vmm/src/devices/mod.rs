//! Emulated devices: legacy PC devices on the port-I/O bus and virtio-mmio devices.

pub mod bus;
pub mod legacy;
pub mod virtio;

pub use bus::{Bus, BusDevice};
