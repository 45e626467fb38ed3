//! Counters of one virtio-vsock device.

use crate::devices::virtio::metrics::Counter;

/// What a vsock device did and what guest (or host peer) misbehaviour it saw.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct VsockMetrics {
    /// Queue notifications handled (all three queues).
    pub queue_events: Counter,
    /// Notifications that arrived before activation (drained and ignored).
    pub events_before_activation: Counter,
    /// Packets taken from the tx queue.
    pub tx_packets: Counter,
    /// Stream payload bytes the guest sent (accepted into a connection).
    pub tx_bytes: Counter,
    /// Packets put in the rx queue.
    pub rx_packets: Counter,
    /// Stream payload bytes delivered to the guest.
    pub rx_bytes: Counter,
    /// Malformed descriptor chains on tx or rx (skipped, used length 0).
    pub bad_chains: Counter,
    /// tx packets whose header is short, claims an oversized payload, or whose chain holds
    /// less payload than the header says (dropped).
    pub bad_headers: Counter,
    /// tx packets with a source CID other than the guest's or a destination other than the
    /// host (dropped).
    pub wrong_cid: Counter,
    /// tx packets of a socket type other than stream (answered with RST).
    pub unknown_type: Counter,
    /// tx packets with an unknown operation (answered with RST).
    pub unknown_op: Counter,
    /// Operations that make no sense in the connection's state (answered with RST).
    pub protocol_errors: Counter,
    /// The guest sent more than the credit we gave it (connection reset).
    pub credit_violations: Counter,
    /// RST packets sent to the guest.
    pub rst_sent: Counter,
    /// RST packets received from the guest.
    pub rst_received: Counter,
    /// Host connections accepted on the device's Unix socket.
    pub host_connects: Counter,
    /// Host connections closed because of a bad `CONNECT <port>` line.
    pub bad_connect_lines: Counter,
    /// Guest connection requests forwarded to a listening `<path>_<port>` socket.
    pub guest_connects: Counter,
    /// Guest connection requests to a host port nobody listens on (answered with RST).
    pub guest_connects_refused: Counter,
    /// Connections reset because the guest did not answer a REQUEST, or did not finish a
    /// close, in time.
    pub timeouts: Counter,
    /// Connections refused because the per-device limit was reached.
    pub connection_limit_hits: Counter,
    /// Errors reading or writing host sockets (the connection is reset).
    pub host_io_errors: Counter,
    /// Guest memory accesses that failed.
    pub guest_memory_errors: Counter,
    /// Used-ring updates that failed.
    pub used_ring_errors: Counter,
    /// Configuration-space writes or out-of-range reads.
    pub config_errors: Counter,
    /// RSTs to unknown connections dropped because too many were already waiting for rx
    /// buffers.
    pub stray_rsts_dropped: Counter,
    /// Times tx processing paused because the guest gave no rx buffers for our replies.
    pub tx_pauses: Counter,
}
