//! virtio-vsock: guest sockets to host Unix sockets, Firecracker style.
//!
//! [`Vsock`] is the device; [`connect_guest_port`] is the host side of the `CONNECT <port>`
//! handshake; [`parse_header`] and [`parse_connect_line`] are the pure parsers of what the
//! guest and host processes send (fuzz targets call them directly).
//!
//! # What a guest can and cannot do
//! Everything in the tx queue is guest-controlled. A bad chain, a short or oversized header
//! (payload over [`VSOCK_MAX_PKT_LEN`]), a payload shorter than its header says, or the wrong
//! CIDs are dropped and counted; an unknown type or operation, or an operation that makes no
//! sense for the connection, is answered with RST. Memory stays bounded:
//! - at most [`VSOCK_MAX_CONNECTIONS`] connections, each buffering at most
//!   [`CONN_BUF_ALLOC`] bytes of guest data the host has not read (the credit we advertise;
//!   a guest sending past it is reset);
//! - host data is read only into an rx buffer the guest gave and within the credit the guest
//!   gave, so a slow guest leaves it in the host socket (the host writer blocks);
//! - answers to packets for unknown connections queue up to a small bound; past half of it
//!   the device stops taking tx packets until the guest gives rx buffers;
//! - a guest that does not answer a REQUEST within [`VSOCK_REQUEST_TIMEOUT`], or does not
//!   finish a close within [`VSOCK_SHUTDOWN_TIMEOUT`], is reset.

mod client;
mod connection;
mod device;
mod event_handler;
mod metrics;
mod muxer;
mod packet;

pub use client::connect_guest_port;
pub use connection::{CONN_BUF_ALLOC, VSOCK_REQUEST_TIMEOUT, VSOCK_SHUTDOWN_TIMEOUT};
pub use device::{
    Vsock, VsockConfig, VSOCK_EVENT_QUEUE, VSOCK_QUEUE_SIZE, VSOCK_RX_QUEUE, VSOCK_TX_QUEUE,
};
pub use metrics::VsockMetrics;
pub use muxer::VSOCK_MAX_CONNECTIONS;
pub use packet::{
    parse_connect_line, parse_header, HeaderError, Op, PacketHeader, CONNECT_LINE_MAX,
    VSOCK_HDR_LEN, VSOCK_HOST_CID, VSOCK_MAX_PKT_LEN, VSOCK_SHUTDOWN_BOTH, VSOCK_SHUTDOWN_RCV,
    VSOCK_SHUTDOWN_SEND, VSOCK_TYPE_STREAM,
};
