//! ACPI tables that describe an sbx microVM to a Linux guest.
//!
//! Stock distro kernels (Debian's cloud kernel among them) build `virtio_mmio` without
//! `VIRTIO_MMIO_CMDLINE_DEVICES`, so the only way they find virtio-mmio devices is the DSDT:
//! one `Device` per window with `_HID "LNRO0005"`, a `Memory32Fixed` window and an interrupt.
//! [`create_acpi_tables`] writes a complete, hardware-reduced ACPI table set into guest memory:
//!
//! - RSDP (revision 2) at [`RSDP_START`](crate::arch::x86_64::layout::RSDP_START), pointing to
//! - XSDT, listing the FADT and the MADT;
//! - FADT: hardware-reduced, with sleep control/status registers for soft-off and a reset register
//!   (all single-byte I/O ports from the layout), `X_DSDT` pointing to
//! - DSDT: `\_S5_`, COM1 (`PNP0501`), optionally the i8042 (`PNP0303`), and the virtio-mmio devices;
//! - MADT: one enabled local APIC per vCPU, KVM's in-kernel IOAPIC, and LINT1 as NMI.
//!
//! Everything lands in `[RSDP_START, ACPI_TABLES_END)`; the loaders must keep that range out of
//! the guest's usable RAM (Linux reserves 640 KiB..1 MiB on its own) and, for PVH boots, pass the
//! returned RSDP address in `hvm_start_info.rsdp_paddr`.
//!
//! ```
//! use sbx_vmm::acpi::{create_acpi_tables, AcpiConfig, VirtioMmioDevice};
//! use sbx_vmm::memory::create_guest_memory;
//!
//! let mem = create_guest_memory(16 << 20).unwrap();
//! let config = AcpiConfig::new(2)
//!     .with_virtio_device(VirtioMmioDevice::in_slot(0))
//!     .with_virtio_device(VirtioMmioDevice::in_slot(1));
//! let rsdp = create_acpi_tables(&mem, &config).unwrap();
//! assert_eq!(rsdp.0, sbx_vmm::arch::x86_64::layout::RSDP_START);
//! ```

mod config;
mod dsdt;
mod error;
mod tables;

pub use config::{AcpiConfig, VirtioMmioDevice, MAX_VIRTIO_DEVICES};
pub use error::AcpiError;
pub use tables::create_acpi_tables;
