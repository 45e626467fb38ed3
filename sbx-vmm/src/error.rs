//! The crate's error type.

use std::path::PathBuf;

pub use crate::arch::x86_64::boot::BootError;
pub use crate::memory::MemoryError;

/// Everything that can go wrong building or starting a VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/kvm` is missing or cannot be opened; the message says how to fix it.
    #[error("KVM is not available: {reason}")]
    KvmUnavailable {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A KVM ioctl failed.
    #[error("KVM {op} failed")]
    Kvm {
        /// The operation, e.g. `create_vm`.
        op: &'static str,
        /// The ioctl error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The requested memory size is below what a guest needs.
    #[error("guest memory of {mib} MiB is too small (at least {min_mib} MiB)")]
    MemoryTooSmall {
        /// Requested size.
        mib: u64,
        /// Smallest accepted size.
        min_mib: u64,
    },
    /// The requested memory size is more than the host has.
    #[error("guest memory of {mib} MiB is more than this host's {host_mib} MiB")]
    MemoryTooLarge {
        /// Requested size.
        mib: u64,
        /// Host RAM.
        host_mib: u64,
    },
    /// The vCPU count is out of range.
    #[error("{0} vCPUs requested; between 1 and {max} are supported", max = crate::MAX_VCPUS)]
    InvalidVcpuCount(u8),
    /// Creating guest memory failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Loading the kernel or writing boot information failed.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Building the ACPI tables failed.
    #[error("cannot build the ACPI tables")]
    Acpi(#[source] crate::acpi::AcpiError),
    /// A disk image cannot be used.
    #[error("cannot use disk image {}", path.display())]
    Disk {
        /// The image path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Too many devices for the MMIO window or the interrupt lines.
    #[error("too many virtio devices (at most {0})")]
    TooManyDevices(usize),
    /// Setting up a device failed.
    #[error("cannot set up device {name}")]
    Device {
        /// Which device.
        name: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A host resource (thread, eventfd, signal handler) could not be created.
    #[error("cannot create {what}")]
    Host {
        /// What was being created.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { op, source }
}

pub(crate) fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Host { what, source }
}
