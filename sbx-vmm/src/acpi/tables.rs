//! The fixed tables (RSDP, XSDT, FADT, MADT), their placement, and the entry point.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::layout::{
    ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT,
    ACPI_TABLES_END, ACPI_TABLES_START, APIC_START, IOAPIC_START, RSDP_START,
};
use crate::memory::GuestMemory;

use super::{dsdt, AcpiConfig, AcpiError};

/// OEM ID in every table header.
pub(super) const OEM_ID: [u8; 6] = *b"SBXVMM";
/// OEM revision in every table header.
pub(super) const OEM_REVISION: u32 = 1;
/// FADT "hypervisor vendor identity".
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"SBXVMM\0\0";

/// MADT revision of ACPI 6.2+ (the FADT says 6.5).
const MADT_REVISION: u8 = 5;
/// Length of the MADT header: SDT header, local APIC address, flags.
const MADT_HEADER_LEN: u32 = 44;
/// MADT flag: the platform also has dual 8259 PICs (KVM's in-kernel irqchip does).
const MADT_PCAT_COMPAT: u32 = 1;
/// MADT interrupt controller structure types.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// Local APIC flag: the processor is usable.
const LOCAL_APIC_ENABLED: u32 = 1;
/// ID of KVM's in-kernel IOAPIC (its ID register resets to 0).
const IOAPIC_ID: u8 = 0;
/// ACPI processor UID meaning "all processors" in a local APIC NMI structure.
const ALL_PROCESSORS: u8 = 0xff;

/// FADT IA-PC boot architecture flags (ACPI 6.5, 5.2.9.3).
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_8042: u16 = 1 << 1;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_PCIE_ASPM_CONTROLS: u16 = 1 << 4;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// Size of a revision-2 RSDP; it must end before the other tables start.
const RSDP_LEN: u64 = 36;
const _: () = assert!(RSDP_START + RSDP_LEN <= ACPI_TABLES_START);

/// Tables start on this alignment inside the table area.
const TABLE_ALIGN: u64 = 8;

/// Write the ACPI tables for `config` into `mem` and return the address of the RSDP.
///
/// The configuration is validated first and the tables are laid out before anything is
/// written, so an error leaves guest memory untouched (except for a failing write itself,
/// which only happens when guest RAM does not cover `RSDP_START..ACPI_TABLES_END`).
pub fn create_acpi_tables(
    mem: &GuestMemory,
    config: &AcpiConfig,
) -> Result<GuestAddress, AcpiError> {
    config.validate()?;
    let mut area = TableArea::new(ACPI_TABLES_START, ACPI_TABLES_END);

    let dsdt = dsdt::build(config);
    let dsdt_addr = area.place(&dsdt)?;
    let fadt = fadt(dsdt_addr, config);
    let fadt_addr = area.place(&fadt)?;
    let madt = madt(config.num_vcpus);
    let madt_addr = area.place(&madt)?;
    let xsdt = xsdt(&[fadt_addr, madt_addr]);
    let xsdt_addr = area.place(&xsdt)?;

    let mut rsdp = Vec::new();
    Rsdp::new(OEM_ID, xsdt_addr).to_aml_bytes(&mut rsdp);

    for (addr, table) in &area.placed {
        mem.write_slice(table, GuestAddress(*addr))
            .map_err(AcpiError::GuestMemory)?;
    }
    mem.write_slice(&rsdp, GuestAddress(RSDP_START))
        .map_err(AcpiError::GuestMemory)?;
    tracing::debug!(
        rsdp = format_args!("{RSDP_START:#x}"),
        xsdt = format_args!("{xsdt_addr:#x}"),
        dsdt_len = dsdt.len(),
        end = format_args!("{:#x}", area.next),
        vcpus = config.num_vcpus,
        virtio_devices = config.virtio_devices.len(),
        "acpi tables written"
    );
    Ok(GuestAddress(RSDP_START))
}

/// Bump allocator over `[start, end)` that remembers what goes where.
#[derive(Debug)]
struct TableArea {
    next: u64,
    start: u64,
    end: u64,
    placed: Vec<(u64, Vec<u8>)>,
}

impl TableArea {
    fn new(start: u64, end: u64) -> Self {
        Self {
            next: start,
            start,
            end,
            placed: Vec::new(),
        }
    }

    /// Reserve room for `table` and return its guest address.
    fn place(&mut self, table: &[u8]) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(TABLE_ALIGN);
        let end = addr.saturating_add(table.len() as u64);
        if end > self.end {
            return Err(AcpiError::TooLarge {
                needed: end - self.start,
                available: self.end - self.start,
            });
        }
        self.next = end;
        self.placed.push((addr, table.to_vec()));
        Ok(addr)
    }
}

fn io_byte_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// A hardware-reduced FADT: no PM1/GPE blocks or SCI, sleep and reset through byte ports.
fn fadt(dsdt_addr: u64, config: &AcpiConfig) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"SBXFACP ", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        // WBINVD works (KVM emulates it).
        .flag(Flags::Wbinvd)
        // No fixed-feature buttons: on a hardware-reduced platform they would be devices.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup)
        .flag(Flags::HwReducedAcpi);
    let mut boot_arch = IAPC_LEGACY_DEVICES
        | IAPC_VGA_NOT_PRESENT
        | IAPC_MSI_NOT_SUPPORTED
        | IAPC_PCIE_ASPM_CONTROLS
        | IAPC_CMOS_RTC_NOT_PRESENT;
    if config.i8042 {
        boot_arch |= IAPC_8042;
    }
    fadt.iapc_boot_arch = boot_arch.into();
    fadt.reset_reg = io_byte_register(ACPI_RESET_PORT);
    fadt.reset_value = ACPI_RESET_VALUE;
    fadt.sleep_control_reg = io_byte_register(ACPI_SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_byte_register(ACPI_SLEEP_STATUS_PORT);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();

    let mut bytes = Vec::new();
    fadt.finalize().to_aml_bytes(&mut bytes);
    bytes
}

/// The MADT for `num_vcpus` vCPUs with local APIC IDs `0..num_vcpus` and KVM's IOAPIC.
///
/// No interrupt source overrides: KVM's default GSI routing sends ISA IRQ `n` (the PIT's
/// IRQ 0 included) to IOAPIC pin `n`, which is what the guest assumes without overrides.
fn madt(num_vcpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        *b"SBXAPIC ",
        OEM_REVISION,
    );
    // The layout keeps both APIC windows below 4 GiB.
    madt.write_u32(36, APIC_START as u32);
    madt.write_u32(40, MADT_PCAT_COMPAT);
    for cpu in 0..num_vcpus {
        let mut entry = vec![MADT_LOCAL_APIC, 8, cpu, cpu];
        entry.extend(LOCAL_APIC_ENABLED.to_le_bytes());
        madt.append_slice(&entry);
    }
    let mut ioapic = vec![MADT_IO_APIC, 12, IOAPIC_ID, 0];
    ioapic.extend((IOAPIC_START as u32).to_le_bytes());
    ioapic.extend(0u32.to_le_bytes()); // GSI base
    madt.append_slice(&ioapic);
    // LINT1 of every local APIC is the NMI input (flags 0: bus-conforming polarity/trigger).
    madt.append_slice(&[MADT_LOCAL_APIC_NMI, 6, ALL_PROCESSORS, 0, 0, 1]);
    madt.as_slice().to_vec()
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut xsdt = XSDT::new(OEM_ID, *b"SBXXSDT ", OEM_REVISION);
    for entry in entries {
        xsdt.add_entry(*entry);
    }
    let mut bytes = Vec::new();
    xsdt.to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(table: &[u8]) -> u8 {
        table.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    fn u32_at(t: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(t[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn rsdp_len_matches_the_crate() {
        assert_eq!(Rsdp::len() as u64, RSDP_LEN);
    }

    #[test]
    fn area_aligns_and_refuses_overflow() {
        let mut area = TableArea::new(0x1003, 0x1040);
        assert_eq!(area.place(&[1; 10]).unwrap(), 0x1008);
        assert_eq!(area.place(&[2; 0x20]).unwrap(), 0x1018);
        match area.place(&[3; 0x10]) {
            Err(AcpiError::TooLarge { needed, available }) => {
                assert_eq!(available, 0x3d);
                assert_eq!(needed, 0x1048 - 0x1003);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // A failed placement reserves nothing.
        assert_eq!(area.placed.len(), 2);
        assert_eq!(area.place(&[4; 8]).unwrap(), 0x1038);
    }

    #[test]
    fn fadt_is_hardware_reduced_with_byte_port_registers() {
        let fadt = fadt(0xe_1234, &AcpiConfig::new(1));
        assert_eq!(&fadt[..4], b"FACP");
        assert_eq!(u32_at(&fadt, 4) as usize, fadt.len());
        assert_eq!(fadt.len(), 276);
        assert_eq!(checksum(&fadt), 0);
        let flags = u32_at(&fadt, 112);
        assert_ne!(flags & Flags::HwReducedAcpi as u32, 0);
        assert_ne!(flags & Flags::ResetRegSup as u32, 0);
        // Reset register: GAS at 116, value at 128.
        assert_eq!(&fadt[116..120], &[1, 8, 0, 1]);
        assert_eq!(
            u64::from_le_bytes(fadt[120..128].try_into().unwrap()),
            0x602
        );
        assert_eq!(fadt[128], ACPI_RESET_VALUE);
        // X_DSDT at 140; the 32-bit DSDT pointer at 40 stays zero.
        assert_eq!(
            u64::from_le_bytes(fadt[140..148].try_into().unwrap()),
            0xe_1234
        );
        assert_eq!(u32_at(&fadt, 40), 0);
        // Sleep control / status registers at 244 / 256.
        assert_eq!(&fadt[244..248], &[1, 8, 0, 1]);
        assert_eq!(
            u64::from_le_bytes(fadt[248..256].try_into().unwrap()),
            0x600
        );
        assert_eq!(
            u64::from_le_bytes(fadt[260..268].try_into().unwrap()),
            0x601
        );
        // IA-PC boot flags at 109: no 8042 unless asked for.
        let boot = u16::from_le_bytes(fadt[109..111].try_into().unwrap());
        assert_eq!(boot & IAPC_8042, 0);
        let with_kbd = super::fadt(0, &AcpiConfig::new(1).with_i8042(true));
        let boot = u16::from_le_bytes(with_kbd[109..111].try_into().unwrap());
        assert_ne!(boot & IAPC_8042, 0);
    }

    #[test]
    fn madt_lists_every_vcpu_then_the_ioapic() {
        for n in [1u8, 2, 8, 255] {
            let madt = madt(n);
            assert_eq!(checksum(&madt), 0);
            assert_eq!(u32_at(&madt, 4) as usize, madt.len());
            assert_eq!(madt.len(), 44 + 8 * n as usize + 12 + 6);
            assert_eq!(u32_at(&madt, 36), 0xfee0_0000);
            assert_eq!(u32_at(&madt, 40), MADT_PCAT_COMPAT);
            for cpu in 0..n as usize {
                let e = &madt[44 + 8 * cpu..][..8];
                assert_eq!(&e[..4], &[0, 8, cpu as u8, cpu as u8]);
                assert_eq!(u32_at(e, 4), 1);
            }
            let io = &madt[44 + 8 * n as usize..][..12];
            assert_eq!(&io[..3], &[1, 12, 0]);
            assert_eq!(u32_at(io, 4), 0xfec0_0000);
            assert_eq!(u32_at(io, 8), 0);
        }
    }
}
