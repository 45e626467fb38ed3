//! virtio-vsock: guest sockets to host Unix sockets, Firecracker style.

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
