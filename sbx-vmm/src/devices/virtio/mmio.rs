//! The virtio-mmio transport, register layout version 2 (virtio 1.2, section 4.2.2).

use std::fmt;
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::device::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use super::device::{ActivateError, VirtioDevice};
use super::error::VirtioError;
use super::interrupt::Interrupt;
use super::metrics::Counter;
use crate::devices::bus::{lock, BusDevice};
use crate::memory::GuestMemory;

/// `MagicValue`: "virt" in little endian.
pub const MMIO_MAGIC_VALUE: u32 = 0x7472_6976;
/// `Version`: the modern (non-legacy) register layout.
pub const MMIO_VERSION: u32 = 2;
/// `VendorID` we report: "SBX\0".
pub const MMIO_VENDOR_ID: u32 = u32::from_le_bytes(*b"SBX\0");
/// Offset of `QueueNotify`; register ioeventfds at `base + MMIO_QUEUE_NOTIFY_OFFSET`.
pub const MMIO_QUEUE_NOTIFY_OFFSET: u64 = 0x50;
/// Offset of the device configuration space.
pub const MMIO_CONFIG_OFFSET: u64 = 0x100;

/// Register offsets.
mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Counters for guest misbehaviour and lifecycle events seen by one transport.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct MmioMetrics {
    /// Register accesses that were not 4 bytes wide and 4-byte aligned.
    pub bad_access_size: Counter,
    /// Reads or writes of unknown (or wrong-direction) registers.
    pub unknown_register: Counter,
    /// Register writes not allowed in the current device status.
    pub invalid_state_writes: Counter,
    /// Status writes that skip or undo a step of the init sequence.
    pub invalid_status: Counter,
    /// `FEATURES_OK` refused: unknown features or `VIRTIO_F_VERSION_1` missing.
    pub features_rejected: Counter,
    /// Queue size, selector or notify values out of range.
    pub bad_queue_config: Counter,
    /// Device activations that succeeded.
    pub activations: Counter,
    /// Device activations that failed (the device then reports `DEVICE_NEEDS_RESET`).
    pub activate_fails: Counter,
    /// Resets requested by the driver.
    pub resets: Counter,
    /// `QueueNotify` writes handled through an MMIO exit (no ioeventfd registered).
    pub notify_exits: Counter,
}

#[derive(Debug, Clone, Copy)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }

    fn build(
        &self,
        index: usize,
        mem: &GuestMemory,
        event_idx: bool,
    ) -> Result<Queue, ActivateError> {
        let invalid = |source| ActivateError::InvalidQueue { index, source };
        let mut q = Queue::new(self.max_size).map_err(invalid)?;
        q.set_event_idx(event_idx);
        if !self.ready {
            // Whatever the driver left in an unused queue's registers does not matter.
            return Ok(q);
        }
        q.try_set_size(self.size).map_err(invalid)?;
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(invalid)?;
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .map_err(invalid)?;
        q.try_set_used_ring_address(GuestAddress(self.used))
            .map_err(invalid)?;
        q.set_ready(true);
        if !q.is_valid(mem) {
            return Err(ActivateError::QueueOutOfMemory(index));
        }
        Ok(q)
    }
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

/// A virtio device behind the virtio-mmio register interface, served on the MMIO bus.
///
/// The transport implements the driver handshake (`ACKNOWLEDGE` -> `DRIVER` -> `FEATURES_OK`
/// -> `DRIVER_OK`, `FAILED`, reset by writing 0) and activates the device when the driver sets
/// `DRIVER_OK`. Guest notifications arrive on [`queue_events`](Self::queue_events) (register
/// them as KVM ioeventfds at `base + 0x50` with datamatch = queue index); interrupts leave
/// through [`interrupt_evt`](Self::interrupt_evt) (register it as a KVM irqfd).
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemory,
    interrupt: Interrupt,
    queue_evts: Vec<EventFd>,
    queues: Vec<QueueConfig>,
    device_type: u32,
    avail_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    driver_features_invalid: bool,
    queue_sel: u32,
    status: u32,
    activated: bool,
    metrics: Arc<MmioMetrics>,
}

impl fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device_type)
            .field("status", &self.status)
            .field("activated", &self.activated)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// Put `device` behind a new transport. `mem` is the guest memory the device's queues
    /// live in.
    pub fn new(
        mem: GuestMemory,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> Result<Self, VirtioError> {
        let interrupt = Interrupt::new().map_err(VirtioError::EventFd)?;
        let (device_type, avail_features, queues, queue_evts) = {
            let d = lock(&device);
            let queues: Vec<_> = d
                .queue_max_sizes()
                .iter()
                .map(|&m| QueueConfig::new(m))
                .collect();
            let evts = d
                .queue_events()
                .iter()
                .map(EventFd::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(VirtioError::EventFd)?;
            (d.device_type(), d.avail_features(), queues, evts)
        };
        if queue_evts.len() != queues.len() {
            tracing::warn!(
                device_type,
                queues = queues.len(),
                events = queue_evts.len(),
                "virtio device reports a different number of queue eventfds and queues"
            );
        }
        Ok(Self {
            device,
            mem,
            interrupt,
            queue_evts,
            queues,
            device_type,
            avail_features,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_invalid: false,
            queue_sel: 0,
            status: 0,
            activated: false,
            metrics: Arc::new(MmioMetrics::default()),
        })
    }

    /// One eventfd per queue, to register with `VmFd::register_ioevent` at
    /// `base + MMIO_QUEUE_NOTIFY_OFFSET` with datamatch = queue index as `u32`.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The eventfd to register with `VmFd::register_irqfd` for the device's GSI.
    pub fn interrupt_evt(&self) -> &EventFd {
        self.interrupt.eventfd()
    }

    /// The interrupt shared with the device (status register and eventfd).
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// The device behind this transport.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// Current device status register.
    pub fn device_status(&self) -> u32 {
        self.status
    }

    /// Whether the device was activated (`DRIVER_OK`) and not reset since.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// This transport's counters.
    pub fn metrics(&self) -> Arc<MmioMetrics> {
        self.metrics.clone()
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        let sel = self.queue_sel as usize;
        self.queues.get_mut(sel)
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC_VALUE => MMIO_MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device_type,
            reg::VENDOR_ID => MMIO_VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.avail_features as u32,
                1 => (self.avail_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS if lock(&self.device).needs_reset() => {
                self.status | status::DEVICE_NEEDS_RESET
            }
            reg::STATUS => self.status,
            // No shared memory regions: a length of all ones means "absent".
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => {
                self.metrics.unknown_register.inc();
                tracing::warn!(offset, "virtio-mmio read of unknown register");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        use status::*;
        let features_phase = self.status == ACKNOWLEDGE | DRIVER;
        let queue_phase = self.status == ACKNOWLEDGE | DRIVER | FEATURES_OK;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES if features_phase => match self.driver_features_sel {
                0 => set_low(&mut self.driver_features, v),
                1 => set_high(&mut self.driver_features, v),
                _ if v != 0 => self.driver_features_invalid = true,
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NOTIFY => self.notify(v),
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            // Reads report no region for any selector, so the selector need not be kept.
            reg::SHM_SEL => {}
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH
                if queue_phase =>
            {
                self.write_queue_reg(offset, v)
            }
            reg::DRIVER_FEATURES
            | reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => {
                self.metrics.invalid_state_writes.inc();
                tracing::warn!(
                    offset,
                    status = self.status,
                    "virtio-mmio register write not allowed in this device status"
                );
            }
            _ => {
                self.metrics.unknown_register.inc();
                tracing::warn!(offset, "virtio-mmio write of unknown or read-only register");
            }
        }
    }

    fn write_queue_reg(&mut self, offset: u64, v: u32) {
        let sel = self.queue_sel;
        let Some(q) = self.selected_queue() else {
            self.metrics.bad_queue_config.inc();
            tracing::warn!(
                queue = sel,
                "virtio-mmio queue register write for a missing queue"
            );
            return;
        };
        match offset {
            reg::QUEUE_NUM => match u16::try_from(v) {
                Ok(n) if n != 0 && n <= q.max_size && n.is_power_of_two() => q.size = n,
                _ => {
                    self.metrics.bad_queue_config.inc();
                    tracing::warn!(queue = sel, size = v, "virtio-mmio invalid queue size");
                }
            },
            reg::QUEUE_READY => q.ready = v == 1,
            reg::QUEUE_DESC_LOW => set_low(&mut q.desc, v),
            reg::QUEUE_DESC_HIGH => set_high(&mut q.desc, v),
            reg::QUEUE_DRIVER_LOW => set_low(&mut q.avail, v),
            reg::QUEUE_DRIVER_HIGH => set_high(&mut q.avail, v),
            reg::QUEUE_DEVICE_LOW => set_low(&mut q.used, v),
            reg::QUEUE_DEVICE_HIGH => set_high(&mut q.used, v),
            _ => {}
        }
    }

    fn notify(&mut self, v: u32) {
        // With an ioeventfd registered KVM consumes this write; we only see it without one.
        self.metrics.notify_exits.inc();
        tracing::trace!(queue = v, "virtio-mmio queue notify exit");
        match self.queue_evts.get(v as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    tracing::warn!(queue = v, error = %e, "cannot signal a virtio queue eventfd");
                }
            }
            None => {
                self.metrics.bad_queue_config.inc();
                tracing::warn!(queue = v, "virtio-mmio notify for a missing queue");
            }
        }
    }

    fn set_status(&mut self, v: u32) {
        use status::*;
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        if v & FAILED != 0 {
            tracing::debug!(device_type = self.device_type, "virtio driver set FAILED");
            self.status |= FAILED;
            return;
        }
        if v == old {
            return;
        }
        if v & old != old {
            self.invalid_status(old, v);
            return;
        }
        match (old, v & !old) {
            (0, ACKNOWLEDGE) | (ACKNOWLEDGE, DRIVER) => self.status = v,
            (s, FEATURES_OK) if s == ACKNOWLEDGE | DRIVER => {
                let unknown = self.driver_features & !self.avail_features;
                let version_1 = self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0;
                if unknown != 0 || !version_1 || self.driver_features_invalid {
                    // Leave FEATURES_OK clear; the driver reads it back and gives up.
                    self.metrics.features_rejected.inc();
                    tracing::warn!(
                        device_type = self.device_type,
                        acked = self.driver_features,
                        offered = self.avail_features,
                        "virtio driver features rejected"
                    );
                    return;
                }
                lock(&self.device).ack_features(self.driver_features);
                self.status = v;
            }
            (s, DRIVER_OK) if s == ACKNOWLEDGE | DRIVER | FEATURES_OK => self.activate(v),
            _ => self.invalid_status(old, v),
        }
    }

    fn invalid_status(&self, old: u32, new: u32) {
        self.metrics.invalid_status.inc();
        tracing::warn!(
            device_type = self.device_type,
            old,
            new,
            "virtio-mmio invalid device status transition"
        );
    }

    fn activate(&mut self, v: u32) {
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let queues: Result<Vec<Queue>, ActivateError> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| q.build(i, &self.mem, event_idx))
            .collect();
        let result = queues.and_then(|queues| {
            lock(&self.device).activate(self.mem.clone(), self.interrupt.clone(), queues)
        });
        match result {
            Ok(()) => {
                self.metrics.activations.inc();
                self.activated = true;
                self.status = v;
            }
            Err(e) => {
                self.metrics.activate_fails.inc();
                tracing::warn!(
                    device_type = self.device_type,
                    error = %e,
                    "virtio device activation failed"
                );
                self.status = v | status::DEVICE_NEEDS_RESET;
                self.interrupt.signal_config_change();
            }
        }
    }

    fn reset(&mut self) {
        self.metrics.resets.inc();
        if self.activated {
            lock(&self.device).reset();
            self.activated = false;
        }
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_invalid = false;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt.clear();
    }
}

fn is_register_access(offset: u64, len: usize) -> bool {
    len == 4 && offset % 4 == 0
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= MMIO_CONFIG_OFFSET {
            lock(&self.device).read_config(offset - MMIO_CONFIG_OFFSET, data);
            return;
        }
        if !is_register_access(offset, data.len()) {
            self.metrics.bad_access_size.inc();
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-mmio register read of bad size"
            );
            data.fill(0);
            return;
        }
        let v = self.read_reg(offset);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= MMIO_CONFIG_OFFSET {
            lock(&self.device).write_config(offset - MMIO_CONFIG_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.metrics.bad_access_size.inc();
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-mmio register write of bad size"
            );
            return;
        };
        if offset % 4 != 0 {
            self.metrics.bad_access_size.inc();
            tracing::warn!(offset, "virtio-mmio unaligned register write");
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_halves() {
        let mut v = 0u64;
        set_low(&mut v, 0x1234_5000);
        set_high(&mut v, 0x9);
        assert_eq!(v, 0x9_1234_5000);
        set_low(&mut v, 0x10);
        assert_eq!(v, 0x9_0000_0010);
    }

    #[test]
    fn register_access_shape() {
        assert!(is_register_access(0x70, 4));
        assert!(!is_register_access(0x71, 4));
        assert!(!is_register_access(0x70, 2));
        assert!(!is_register_access(0x70, 8));
    }
}
