//! What the ACPI tables describe: vCPUs, virtio-mmio devices and optional legacy devices.

use crate::arch::x86_64::layout::{
    IRQ_MAX, MMIO_GAP_END, MMIO_GAP_START, VIRTIO_IRQ_BASE, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START,
};

use super::AcpiError;

/// Most virtio-mmio devices the tables describe: one per GSI in `VIRTIO_IRQ_BASE..=IRQ_MAX`.
pub const MAX_VIRTIO_DEVICES: usize = (IRQ_MAX - VIRTIO_IRQ_BASE + 1) as usize;

/// One virtio-mmio device as the guest sees it: a register window and an edge-triggered GSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtioMmioDevice {
    /// Guest physical start of the register window.
    pub mmio_base: u64,
    /// Length of the register window.
    pub mmio_len: u64,
    /// IOAPIC pin (GSI) the device interrupts on; must be in `VIRTIO_IRQ_BASE..=IRQ_MAX`.
    pub gsi: u32,
}

impl VirtioMmioDevice {
    /// A device with an explicit window and GSI.
    pub fn new(mmio_base: u64, mmio_len: u64, gsi: u32) -> Self {
        Self {
            mmio_base,
            mmio_len,
            gsi,
        }
    }

    /// The device in slot `slot` of the standard layout: window
    /// `VIRTIO_MMIO_START + slot * VIRTIO_MMIO_SIZE`, GSI `VIRTIO_IRQ_BASE + slot`.
    pub fn in_slot(slot: u32) -> Self {
        Self::new(
            VIRTIO_MMIO_START + u64::from(slot) * VIRTIO_MMIO_SIZE,
            VIRTIO_MMIO_SIZE,
            VIRTIO_IRQ_BASE.saturating_add(slot),
        )
    }

    fn end(&self) -> Option<u64> {
        self.mmio_base.checked_add(self.mmio_len)
    }
}

/// What [`create_acpi_tables`](super::create_acpi_tables) describes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcpiConfig {
    /// Number of vCPUs; vCPU `i` has local APIC ID `i`.
    pub num_vcpus: u8,
    /// The virtio-mmio devices, in the order the guest should number them (`_UID`).
    pub virtio_devices: Vec<VirtioMmioDevice>,
    /// Describe an i8042 (`PNP0303` in the DSDT and the FADT `8042` boot flag).
    ///
    /// Off by default: the VMM's i8042 only implements the reset command, and a guest that
    /// is told a PS/2 controller exists probes it and waits for replies that never come.
    /// Linux's `reboot=k` writes port 0x64 directly and works either way.
    pub i8042: bool,
}

impl AcpiConfig {
    /// `num_vcpus` vCPUs, no virtio devices, no i8042.
    pub fn new(num_vcpus: u8) -> Self {
        Self {
            num_vcpus,
            virtio_devices: Vec::new(),
            i8042: false,
        }
    }

    /// Add one virtio-mmio device.
    pub fn with_virtio_device(mut self, device: VirtioMmioDevice) -> Self {
        self.virtio_devices.push(device);
        self
    }

    /// Add several virtio-mmio devices.
    pub fn with_virtio_devices(
        mut self,
        devices: impl IntoIterator<Item = VirtioMmioDevice>,
    ) -> Self {
        self.virtio_devices.extend(devices);
        self
    }

    /// Describe (or not) an i8042 controller; see [`AcpiConfig::i8042`].
    pub fn with_i8042(mut self, present: bool) -> Self {
        self.i8042 = present;
        self
    }

    /// Reject configurations the guest could not use.
    pub(super) fn validate(&self) -> Result<(), AcpiError> {
        if self.num_vcpus == 0 {
            return Err(AcpiError::NoVcpus);
        }
        let devices = &self.virtio_devices;
        if devices.len() > MAX_VIRTIO_DEVICES {
            return Err(AcpiError::TooManyDevices {
                count: devices.len(),
                max: MAX_VIRTIO_DEVICES,
            });
        }
        for (index, dev) in devices.iter().enumerate() {
            let earlier = &devices[..index];
            let gsi_ok = (VIRTIO_IRQ_BASE..=IRQ_MAX).contains(&dev.gsi)
                && earlier.iter().all(|other| other.gsi != dev.gsi);
            if !gsi_ok {
                return Err(AcpiError::BadGsi {
                    index,
                    gsi: dev.gsi,
                });
            }
            let window_ok = dev.mmio_len > 0
                && dev.mmio_base >= MMIO_GAP_START
                && dev.end().is_some_and(|end| end <= MMIO_GAP_END)
                && earlier.iter().all(|other| {
                    // Both ends exist: earlier windows passed this check already.
                    other.end().is_some_and(|o_end| o_end <= dev.mmio_base)
                        || dev.end().is_some_and(|end| end <= other.mmio_base)
                });
            if !window_ok {
                return Err(AcpiError::BadMmioWindow {
                    index,
                    base: dev.mmio_base,
                    len: dev.mmio_len,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(devices: &[VirtioMmioDevice]) -> AcpiConfig {
        AcpiConfig::new(1).with_virtio_devices(devices.iter().copied())
    }

    #[test]
    fn standard_slots_validate_up_to_the_limit() {
        let all: Vec<_> = (0..MAX_VIRTIO_DEVICES as u32)
            .map(VirtioMmioDevice::in_slot)
            .collect();
        with(&all).validate().unwrap();
        assert_eq!(all.last().unwrap().gsi, IRQ_MAX);
        let one_more = with(&all).with_virtio_device(VirtioMmioDevice::in_slot(19));
        assert!(matches!(
            one_more.validate(),
            Err(AcpiError::TooManyDevices { count: 20, max: 19 })
        ));
    }

    #[test]
    fn zero_vcpus_is_rejected() {
        assert!(matches!(
            AcpiConfig::new(0).validate(),
            Err(AcpiError::NoVcpus)
        ));
    }

    #[test]
    fn gsis_must_be_in_range_and_unique() {
        for gsi in [0, 1, 2, 4, VIRTIO_IRQ_BASE - 1, IRQ_MAX + 1, u32::MAX] {
            let dev = VirtioMmioDevice::new(VIRTIO_MMIO_START, 0x1000, gsi);
            assert!(
                matches!(with(&[dev]).validate(), Err(AcpiError::BadGsi { index: 0, gsi: g }) if g == gsi),
                "gsi {gsi}"
            );
        }
        let a = VirtioMmioDevice::in_slot(0);
        let b = VirtioMmioDevice::new(VIRTIO_MMIO_START + 0x1000, 0x1000, a.gsi);
        assert!(matches!(
            with(&[a, b]).validate(),
            Err(AcpiError::BadGsi { index: 1, .. })
        ));
    }

    #[test]
    fn windows_must_be_in_the_hole_and_disjoint() {
        let bad = [
            (VIRTIO_MMIO_START, 0),
            (MMIO_GAP_START - 0x1000, 0x1000),
            (MMIO_GAP_END - 0x1000, 0x2000),
            (u64::MAX - 0xfff, 0x1000),
            (0x1_0000_0000, 0x1000),
        ];
        for (base, len) in bad {
            let dev = VirtioMmioDevice::new(base, len, VIRTIO_IRQ_BASE);
            assert!(
                matches!(
                    with(&[dev]).validate(),
                    Err(AcpiError::BadMmioWindow { index: 0, .. })
                ),
                "{base:#x}+{len:#x}"
            );
        }
        let a = VirtioMmioDevice::in_slot(0);
        let overlapping = VirtioMmioDevice::new(a.mmio_base + 0xff0, 0x1000, a.gsi + 1);
        assert!(matches!(
            with(&[a, overlapping]).validate(),
            Err(AcpiError::BadMmioWindow { index: 1, .. })
        ));
        let enclosing = VirtioMmioDevice::new(a.mmio_base - 0x1000, 0x3000, a.gsi + 1);
        assert!(matches!(
            with(&[a, enclosing]).validate(),
            Err(AcpiError::BadMmioWindow { index: 1, .. })
        ));
        let adjacent = VirtioMmioDevice::new(a.mmio_base + 0x1000, 0x1000, a.gsi + 1);
        with(&[a, adjacent]).validate().unwrap();
    }
}
