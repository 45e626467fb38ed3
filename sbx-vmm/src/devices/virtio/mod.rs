//! virtio-mmio transport and devices.
//!
//! [`MmioTransport`] serves the virtio-mmio v2 register window of one [`VirtioDevice`];
//! [`Block`], [`Net`], [`Rng`] and [`Vsock`] are device models and [`Fs`] is a vhost-user
//! frontend. Devices process their queues on the VMM's event-manager thread; [`VirtioMmioSlot`]
//! wires one device into a VM (its docs list the steps).

pub mod block;
mod chain;
mod device;
mod error;
pub mod fs;
mod interrupt;
mod metrics;
mod mmio;
pub mod net;
mod queue;
pub mod rng;
mod slot;
pub mod vsock;

pub use block::{Block, BlockConfig, BlockMetrics};
pub use device::{device_type, features, ActivateError, VirtioDevice};
pub use error::VirtioError;
pub use fs::{Fs, FsConfig, FsMetrics};
pub use interrupt::{Interrupt, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
pub use metrics::Counter;
pub use mmio::{
    status, MmioMetrics, MmioTransport, MMIO_CONFIG_OFFSET, MMIO_MAGIC_VALUE,
    MMIO_QUEUE_NOTIFY_OFFSET, MMIO_VENDOR_ID, MMIO_VERSION,
};
pub use net::{FdNetBackend, Net, NetBackend, NetConfig, NetMetrics};
pub use rng::{Rng, RngMetrics};
pub use slot::{SharedSubscriber, VirtioMmioSlot};
pub use vsock::{Vsock, VsockConfig, VsockMetrics};
