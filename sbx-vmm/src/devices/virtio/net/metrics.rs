//! Counters of one virtio-net device.

use crate::devices::virtio::metrics::Counter;

/// What a network device moved and what guest or backend misbehaviour it saw.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct NetMetrics {
    /// Queue notifications handled (both queues).
    pub queue_events: Counter,
    /// Notifications that arrived before activation (drained and ignored).
    pub events_before_activation: Counter,
    /// Frames put in the guest's receive buffers.
    pub rx_frames: Counter,
    /// Frame bytes (without the virtio header) put in the guest's receive buffers.
    pub rx_bytes: Counter,
    /// Frames read from the backend and dropped: longer than the largest accepted frame or
    /// than the guest's buffer.
    pub rx_dropped: Counter,
    /// Receive chains that were malformed, device-readable or too short for a frame
    /// (returned to the guest unused).
    pub rx_bad_chains: Counter,
    /// Times the device stopped reading the backend because the guest had no receive buffers.
    pub rx_no_buffers: Counter,
    /// Frames the guest sent that were handed to the backend.
    pub tx_frames: Counter,
    /// Frame bytes (without the virtio header) handed to the backend.
    pub tx_bytes: Counter,
    /// Frames the backend did not take (it would block, or failed); dropped.
    pub tx_dropped: Counter,
    /// Transmit chains that were malformed, device-writable, header-only or longer than the
    /// largest accepted frame (skipped).
    pub tx_bad_chains: Counter,
    /// Backend reads that failed with something other than "would block".
    pub backend_errors: Counter,
    /// The backend reached end of file (its peer closed); the device stopped reading it.
    pub backend_closed: Counter,
    /// Guest memory reads or writes that failed.
    pub guest_memory_errors: Counter,
    /// Used-ring updates that failed (e.g. out-of-range head index).
    pub used_ring_errors: Counter,
    /// Out-of-range or write accesses to the configuration space.
    pub config_errors: Counter,
}
