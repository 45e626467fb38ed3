//! The DSDT: AML for soft-off (`\_S5_`) and the devices a guest cannot probe for.

use acpi_tables::aml::{
    Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use crate::arch::x86_64::layout::{
    ACPI_S5_SLEEP_TYPE, I8042_COMMAND_PORT, I8042_DATA_PORT, SERIAL_IRQ, SERIAL_PORT,
};

use super::tables::{OEM_ID, OEM_REVISION};
use super::{AcpiConfig, VirtioMmioDevice};

/// DSDT revision 2: AML integers are 64 bits wide.
const DSDT_REVISION: u8 = 2;
/// `_HID` the Linux (and FreeBSD) virtio-mmio drivers match on.
pub(super) const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// ISA IRQ of the i8042 keyboard port.
const I8042_IRQ: u32 = 1;

/// The complete DSDT (header included, checksummed) for `config`, which must be validated.
pub(super) fn build(config: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();

    // SLP_TYPa is what a hardware-reduced guest writes to the sleep control register; the
    // other three elements (SLP_TYPb and two reserved) are unused there.
    let s5 = Package::new(vec![&ACPI_S5_SLEEP_TYPE, &0u8, &0u8, &0u8]);
    Name::new(Path::new("_S5_"), &s5).to_aml_bytes(&mut body);

    let mut devices = Vec::new();
    serial_aml(&mut devices);
    if config.i8042 {
        i8042_aml(&mut devices);
    }
    for (uid, dev) in config.virtio_devices.iter().enumerate() {
        virtio_mmio_aml(uid, dev, &mut devices);
    }
    body.extend(Scope::raw(Path::new("\\_SB_"), devices));

    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        *b"SBXDSDT ",
        OEM_REVISION,
    );
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// Extended interrupt descriptor as the VMM signals it: consumer, edge, active high, exclusive.
fn edge_interrupt(gsi: u32) -> Interrupt {
    Interrupt::new(true, true, false, false, gsi)
}

/// COM1, a 16550-compatible UART (the VMM's 8250) at its ISA address.
fn serial_aml(sink: &mut Vec<u8>) {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0501"));
    let uid = Name::new(Path::new("_UID"), &0u8);
    let io = IO::new(SERIAL_PORT, SERIAL_PORT, 1, 8);
    let irq = edge_interrupt(SERIAL_IRQ);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&io, &irq]));
    Device::new(Path::new("COM1"), vec![&hid, &uid, &crs]).to_aml_bytes(sink);
}

/// A PS/2 keyboard controller (the only i8042 function a microVM has).
fn i8042_aml(sink: &mut Vec<u8>) {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0303"));
    let uid = Name::new(Path::new("_UID"), &0u8);
    let data = IO::new(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1);
    let command = IO::new(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1);
    let irq = edge_interrupt(I8042_IRQ);
    let crs = Name::new(
        Path::new("_CRS"),
        &ResourceTemplate::new(vec![&data, &command, &irq]),
    );
    Device::new(Path::new("PS2K"), vec![&hid, &uid, &crs]).to_aml_bytes(sink);
}

/// AML name of virtio-mmio device number `uid` (`VR00`, `VR01`, ...).
pub(super) fn virtio_device_name(uid: usize) -> String {
    format!("VR{uid:02X}")
}

fn virtio_mmio_aml(uid: usize, dev: &VirtioMmioDevice, sink: &mut Vec<u8>) {
    let hid = Name::new(Path::new("_HID"), &VIRTIO_MMIO_HID);
    // `uid` < MAX_VIRTIO_DEVICES, so the cast cannot truncate.
    let uid_name = Name::new(Path::new("_UID"), &(uid as u32));
    // Validation keeps every window inside the 32-bit MMIO hole.
    let window = Memory32Fixed::new(true, dev.mmio_base as u32, dev.mmio_len as u32);
    let irq = edge_interrupt(dev.gsi);
    let crs = Name::new(
        Path::new("_CRS"),
        &ResourceTemplate::new(vec![&window, &irq]),
    );
    let name = virtio_device_name(uid);
    Device::new(Path::new(&name), vec![&hid, &uid_name, &crs]).to_aml_bytes(sink);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::MAX_VIRTIO_DEVICES;

    fn find(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
        haystack
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect()
    }

    fn checksum(table: &[u8]) -> u8 {
        table.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn header_length_and_checksum() {
        let config = AcpiConfig::new(1).with_virtio_device(VirtioMmioDevice::in_slot(0));
        let dsdt = build(&config);
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(dsdt[8], DSDT_REVISION);
        let len = u32::from_le_bytes(dsdt[4..8].try_into().unwrap());
        assert_eq!(len as usize, dsdt.len());
        assert_eq!(checksum(&dsdt), 0);
    }

    #[test]
    fn one_memory_and_interrupt_descriptor_per_virtio_device() {
        let devices: Vec<_> = (0..MAX_VIRTIO_DEVICES as u32)
            .map(VirtioMmioDevice::in_slot)
            .collect();
        let dsdt = build(&AcpiConfig::new(1).with_virtio_devices(devices.clone()));
        assert_eq!(find(&dsdt, b"LNRO0005\0").len(), devices.len());
        for (i, dev) in devices.iter().enumerate() {
            assert_eq!(find(&dsdt, virtio_device_name(i).as_bytes()).len(), 1);
            // Memory32Fixed: tag 0x86, length 9, read-write, base, length.
            let mut mem = vec![0x86, 9, 0, 1];
            mem.extend((dev.mmio_base as u32).to_le_bytes());
            mem.extend((dev.mmio_len as u32).to_le_bytes());
            // Extended interrupt: tag 0x89, length 6, consumer|edge, one interrupt, gsi.
            mem.extend([0x89, 6, 0, 0b11, 1]);
            mem.extend(dev.gsi.to_le_bytes());
            assert_eq!(find(&dsdt, &mem).len(), 1, "device {i}");
        }
    }

    #[test]
    fn i8042_is_described_only_on_request() {
        let pnp0303 = EISAName::new("PNP0303");
        let mut id = Vec::new();
        pnp0303.to_aml_bytes(&mut id);
        let without = build(&AcpiConfig::new(1));
        let with = build(&AcpiConfig::new(1).with_i8042(true));
        assert!(find(&without, &id).is_empty());
        assert_eq!(find(&with, &id).len(), 1);
        assert_eq!(find(&with, b"PS2K").len(), 1);
    }

    #[test]
    fn s5_package_carries_the_sleep_type() {
        let dsdt = build(&AcpiConfig::new(1));
        // NameOp "_S5_" PackageOp PkgLength NumElements BytePrefix SLP_TYPa ...
        let at = find(&dsdt, b"_S5_");
        assert_eq!(at.len(), 1);
        let pkg = &dsdt[at[0] + 4..];
        assert_eq!(pkg[0], 0x12);
        assert_eq!(pkg[2], 4);
        assert_eq!(&pkg[3..5], &[0x0a, ACPI_S5_SLEEP_TYPE]);
    }
}
