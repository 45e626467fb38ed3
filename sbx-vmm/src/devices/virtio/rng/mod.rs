//! virtio-rng: entropy from the host so the guest does not stall at boot.

mod device;
mod event_handler;
mod metrics;

pub use device::{Rng, RNG_MAX_BYTES_PER_REQUEST, RNG_QUEUE_SIZE};
pub use metrics::RngMetrics;
