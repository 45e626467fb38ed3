//! Counters of one virtio-fs device.

use crate::devices::virtio::metrics::Counter;

/// What a virtio-fs frontend did and what went wrong with its backend.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FsMetrics {
    /// Activations whose vhost-user queue setup the backend accepted.
    pub activations: Counter,
    /// Backend "used buffers" notifications forwarded to the guest as interrupts.
    pub used_notifications: Counter,
    /// Backend notifications that arrived while the device was not active (drained).
    pub notifications_while_inactive: Counter,
    /// vhost-user requests that failed (the backend refused them or the socket broke).
    pub backend_errors: Counter,
    /// The backend closed its socket.
    pub disconnects: Counter,
    /// Configuration-space writes (the virtio-fs configuration is read-only).
    pub config_writes: Counter,
}
