//! Counters of one virtio-rng device.

use crate::devices::virtio::metrics::Counter;

/// What an entropy device did and what guest misbehaviour it saw.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RngMetrics {
    /// Queue notifications handled.
    pub queue_events: Counter,
    /// Notifications that arrived before activation (drained and ignored).
    pub events_before_activation: Counter,
    /// Descriptor chains taken from the available ring.
    pub requests: Counter,
    /// Random bytes handed to the guest.
    pub bytes: Counter,
    /// Requests larger than the per-request bound (only the bound was filled).
    pub capped_requests: Counter,
    /// Malformed chains, or chains with device-readable buffers (skipped, used length 0).
    pub bad_chains: Counter,
    /// Reads from the host entropy source that failed.
    pub entropy_errors: Counter,
    /// Guest memory writes that failed.
    pub guest_memory_errors: Counter,
    /// Used-ring updates that failed (e.g. out-of-range head index).
    pub used_ring_errors: Counter,
    /// Configuration-space accesses (virtio-rng has none).
    pub config_errors: Counter,
}
