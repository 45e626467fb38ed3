//! Counters of one virtio-blk device.

use crate::devices::virtio::metrics::Counter;

/// What a block device did and what guest misbehaviour it saw.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct BlockMetrics {
    /// Queue notifications handled.
    pub queue_events: Counter,
    /// Notifications that arrived before activation (drained and ignored).
    pub events_before_activation: Counter,
    /// Descriptor chains taken from the available ring.
    pub requests: Counter,
    /// `VIRTIO_BLK_T_IN` requests completed with `OK`.
    pub reads: Counter,
    /// `VIRTIO_BLK_T_OUT` requests completed with `OK`.
    pub writes: Counter,
    /// `VIRTIO_BLK_T_FLUSH` requests completed with `OK`.
    pub flushes: Counter,
    /// `VIRTIO_BLK_T_GET_ID` requests completed with `OK`.
    pub get_ids: Counter,
    /// Bytes read from the image into guest memory.
    pub read_bytes: Counter,
    /// Bytes written from guest memory to the image.
    pub write_bytes: Counter,
    /// Requests of a type we do not implement (answered `UNSUPP`).
    pub unsupported: Counter,
    /// Malformed descriptor chains (loop, dangling next, too long, zero-length or out-of-memory
    /// buffer, readable after writable); skipped with a used length of 0.
    pub bad_chains: Counter,
    /// Well-formed chains with a bad request: header or status byte missing, data length not
    /// a multiple of 512.
    pub invalid_requests: Counter,
    /// Requests touching sectors past the end of the disk (answered `IOERR`).
    pub out_of_range: Counter,
    /// Writes to a read-only disk (answered `IOERR`).
    pub read_only_rejected: Counter,
    /// Host I/O errors on the image file (answered `IOERR`).
    pub io_errors: Counter,
    /// Guest memory accesses that failed while copying data or the status byte.
    pub guest_memory_errors: Counter,
    /// Used-ring updates that failed (e.g. out-of-range head index).
    pub used_ring_errors: Counter,
    /// Configuration-space accesses outside the config structure, or writes to it.
    pub config_errors: Counter,
}
