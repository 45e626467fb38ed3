//! Why building the ACPI tables failed.

/// Errors from [`create_acpi_tables`](super::create_acpi_tables). Nothing is written to guest
/// memory when the configuration is rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcpiError {
    /// The configuration asks for zero vCPUs.
    #[error("a microVM needs at least one vcpu")]
    NoVcpus,
    /// More virtio-mmio devices than there are GSIs to give them.
    #[error("too many virtio-mmio devices: {count} (at most {max})")]
    TooManyDevices {
        /// Devices in the configuration.
        count: usize,
        /// The limit, [`MAX_VIRTIO_DEVICES`](super::MAX_VIRTIO_DEVICES).
        max: usize,
    },
    /// A device's GSI is outside the virtio range or already used by another device.
    #[error("virtio-mmio device {index}: gsi {gsi} is reserved, out of range or taken")]
    BadGsi {
        /// Position of the device in the configuration.
        index: usize,
        /// The rejected GSI.
        gsi: u32,
    },
    /// A device's MMIO window is empty, leaves the 32-bit MMIO hole or overlaps another one.
    #[error("virtio-mmio device {index}: bad mmio window {base:#x}+{len:#x}")]
    BadMmioWindow {
        /// Position of the device in the configuration.
        index: usize,
        /// Start of the rejected window.
        base: u64,
        /// Length of the rejected window.
        len: u64,
    },
    /// The tables do not fit in the area reserved for them.
    #[error("acpi tables need {needed} bytes, only {available} are reserved")]
    TooLarge {
        /// Bytes the tables (with alignment padding) need.
        needed: u64,
        /// Bytes between the start and the end of the table area.
        available: u64,
    },
    /// Writing to guest memory failed (the guest RAM does not cover the table area).
    #[error("cannot write acpi tables to guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
}
