//! Guest physical memory and I/O port layout of an sbx microVM.
//!
//! Everything the VMM writes into guest memory before the first instruction, and every
//! address a device answers at, is defined here so that the loaders, the ACPI tables and
//! the device manager agree.

/// Start of the boot GDT (four 8-byte entries).
pub const BOOT_GDT_START: u64 = 0x500;
/// Start of the (empty) boot IDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// `hvm_start_info` for PVH boots.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH memory map (array of `hvm_memmap_table_entry`).
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Linux zero page (`boot_params`) for bzImage / 64-bit ELF boots.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables for 64-bit entry: PML4, PDPT, then four PDs (4 GiB of 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of four page directories.
pub const PDE_START: u64 = 0xb000;
/// Kernel command line (NUL terminated).
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we accept, including the terminating NUL.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Start of the extended BIOS data area; RAM below this is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI RSDP (within the 0xe0000..0xfffff range the kernel scans).
pub const RSDP_START: u64 = 0xe0000;
/// Where the other ACPI tables (XSDT, FADT, MADT, DSDT) are placed.
pub const ACPI_TABLES_START: u64 = 0xe0100;
/// End (exclusive) of the legacy BIOS area holding the ACPI tables.
pub const ACPI_TABLES_END: u64 = 0x10_0000;
/// Kernels are loaded from 1 MiB up.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole below 4 GiB; RAM above it continues at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the MMIO hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device window; device `i` is at `VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC MMIO base (fixed by KVM's in-kernel IOAPIC).
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const APIC_START: u64 = 0xfee0_0000;

/// GSI of the first virtio-mmio device; device `i` uses `VIRTIO_IRQ_BASE + i`.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Highest GSI we hand out (the in-kernel IOAPIC has 24 pins).
pub const IRQ_MAX: u32 = 23;

/// COM1 8250 UART base port and IRQ.
pub const SERIAL_PORT: u16 = 0x3f8;
/// IRQ line of COM1.
pub const SERIAL_IRQ: u32 = 4;
/// i8042 data and command/status ports.
pub const I8042_DATA_PORT: u16 = 0x60;
/// i8042 command (write) / status (read) port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// Command byte that pulses the CPU reset line.
pub const I8042_RESET_COMMAND: u8 = 0xfe;

/// ACPI hardware-reduced sleep control register (FADT `SLEEP_CONTROL_REG`), one byte.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// ACPI hardware-reduced sleep status register (FADT `SLEEP_STATUS_REG`), one byte.
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// ACPI reset register (FADT `RESET_REG`), one byte.
pub const ACPI_RESET_PORT: u16 = 0x602;
/// Value the guest writes to [`ACPI_RESET_PORT`] to reset (FADT `RESET_VALUE`).
pub const ACPI_RESET_VALUE: u8 = 0x01;
/// Sleep type the DSDT's `_S5_` object advertises for soft-off.
pub const ACPI_S5_SLEEP_TYPE: u8 = 5;
/// `SLP_EN` bit of the sleep control register.
pub const ACPI_SLEEP_ENABLE: u8 = 1 << 5;
/// Shift of the `SLP_TYPx` field in the sleep control register.
pub const ACPI_SLEEP_TYPE_SHIFT: u8 = 2;
