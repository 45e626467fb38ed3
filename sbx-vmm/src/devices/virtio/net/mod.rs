//! virtio-net: Ethernet frames between the guest and a [`NetBackend`] (a TAP fd, one end of a
//! `SOCK_SEQPACKET` socketpair whose other end a userspace network stack holds, or anything
//! an embedder implements).

mod backend;
mod device;
mod event_handler;
mod metrics;

pub use backend::{FdNetBackend, NetBackend};
pub use device::{
    Net, NetConfig, NET_MAX_FRAME_LEN, NET_MIN_RX_BUFFER, NET_QUEUE_SIZE, NET_RX_QUEUE,
    NET_TX_QUEUE, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_LEN, VIRTIO_NET_S_LINK_UP,
};
pub use metrics::NetMetrics;
