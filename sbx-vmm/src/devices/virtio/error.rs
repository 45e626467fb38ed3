//! Errors setting up virtio devices and wiring them into a VM.

use std::io;
use std::path::PathBuf;

/// Errors creating or wiring virtio devices. Guest misbehaviour is never an error here: it is
/// logged and counted in the device's metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VirtioError {
    /// Creating an eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] io::Error),
    /// The disk image cannot be opened or inspected.
    #[error("cannot open disk image {}", path.display())]
    OpenDisk {
        /// The image path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The disk image path names a directory.
    #[error("disk image {} is a directory", path.display())]
    DiskIsDirectory {
        /// The image path.
        path: PathBuf,
    },
    /// The block device serial is longer than the 20 bytes virtio-blk can report.
    #[error("block device serial is {len} bytes long, at most 20 are allowed")]
    SerialTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The host entropy source cannot be opened.
    #[error("cannot open the host entropy source {path}")]
    OpenEntropy {
        /// The source path.
        path: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Creating a timerfd failed.
    #[error("cannot create a timerfd")]
    TimerFd(#[source] io::Error),
    /// The vsock guest CID is reserved (0 to 2, or `u32::MAX` and above).
    #[error("vsock guest CID {0} is reserved or out of range")]
    InvalidCid(u64),
    /// The vsock host socket cannot be created.
    #[error("cannot listen on vsock socket {}", path.display())]
    VsockSocket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The virtio-fs mount tag is empty or longer than 36 bytes.
    #[error("virtio-fs tag is {len} bytes long, 1 to 36 are allowed")]
    FsTag {
        /// Its length in bytes.
        len: usize,
    },
    /// The virtio-fs queue size is zero, not a power of two or above 32768.
    #[error("virtio-fs queue size {0} is not a power of two between 1 and 32768")]
    FsQueueSize(u16),
    /// Connecting to or negotiating with a vhost-user backend failed.
    #[error("vhost-user backend at {} failed", path.display())]
    VhostUser {
        /// The backend's socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: vhost::Error,
    },
    /// The vhost-user backend lacks something the device needs.
    #[error("vhost-user backend at {} is not usable: {reason}", path.display())]
    VhostUserIncompatible {
        /// The backend's socket.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The network device's MAC address is all zeros or a multicast address.
    #[error("MAC address {0:02x?} is not a unicast address")]
    InvalidMac([u8; 6]),
    /// No MMIO window / interrupt line is left for this device slot.
    #[error("virtio-mmio slot {0} has no free interrupt line")]
    NoSlot(u32),
    /// `KVM_IOEVENTFD` failed.
    #[error("cannot register the ioeventfd of queue {queue} at {addr:#x}")]
    IoEventFd {
        /// Queue index.
        queue: usize,
        /// Guest physical address of the `QueueNotify` register.
        addr: u64,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_IRQFD` failed.
    #[error("cannot register the irqfd for gsi {gsi}")]
    IrqFd {
        /// The interrupt line.
        gsi: u32,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The device window overlaps another device on the MMIO bus.
    #[error("cannot place the device on the MMIO bus")]
    Bus(#[from] crate::devices::bus::Overlap),
}
