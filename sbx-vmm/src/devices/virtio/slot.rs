//! Wiring one virtio device into a VM: MMIO window, ioeventfds, irqfd, event manager.
//!
//! The VMM does, per device:
//!
//! 1. create the device model (e.g. [`Block::new`](super::Block::new));
//! 2. put it behind an [`MmioTransport`] in window `i`: `VIRTIO_MMIO_START + i *
//!    VIRTIO_MMIO_SIZE`, interrupt line `VIRTIO_IRQ_BASE + i` ([`VirtioMmioSlot::new`]);
//! 3. insert the transport on the MMIO bus ([`VirtioMmioSlot::insert_on_bus`]);
//! 4. register each queue eventfd as a KVM ioeventfd at `base + 0x50` with datamatch = queue
//!    index, and the interrupt eventfd as a KVM irqfd for the GSI
//!    ([`VirtioMmioSlot::register_kvm`], after `create_irq_chip`);
//! 5. add the device to the event manager so its queues are processed on the VMM's event
//!    thread ([`VirtioMmioSlot::subscriber`]);
//! 6. describe the window and GSI to the guest (ACPI DSDT `LNRO0005`): [`VirtioMmioSlot::base`],
//!    [`VirtioMmioSlot::size`], [`VirtioMmioSlot::gsi`].
//!
//! [`VirtioMmioSlot::attach`] does 3 to 5 in one call.

use std::fmt;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberId, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};

use super::device::VirtioDevice;
use super::error::VirtioError;
use super::mmio::{MmioTransport, MMIO_QUEUE_NOTIFY_OFFSET};
use crate::arch::x86_64::layout::{IRQ_MAX, VIRTIO_IRQ_BASE, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};
use crate::devices::bus::{lock, Bus};
use crate::memory::GuestMemory;

/// A subscriber type the event manager can hold for any device.
pub type SharedSubscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// One virtio device placed in virtio-mmio window `index`.
pub struct VirtioMmioSlot {
    index: u32,
    transport: Arc<Mutex<MmioTransport>>,
    subscriber: SharedSubscriber,
}

impl fmt::Debug for VirtioMmioSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioMmioSlot")
            .field("index", &self.index)
            .field("base", &self.base())
            .field("gsi", &self.gsi())
            .finish_non_exhaustive()
    }
}

impl VirtioMmioSlot {
    /// Put `device` (shared so the caller may keep a handle, e.g. for metrics) behind a new
    /// transport in window `index`.
    pub fn new<D>(index: u32, device: Arc<Mutex<D>>, mem: GuestMemory) -> Result<Self, VirtioError>
    where
        D: VirtioDevice + MutEventSubscriber + 'static,
    {
        match VIRTIO_IRQ_BASE.checked_add(index) {
            Some(gsi) if gsi <= IRQ_MAX => {}
            _ => return Err(VirtioError::NoSlot(index)),
        }
        let transport = MmioTransport::new(mem, device.clone())?;
        Ok(Self {
            index,
            transport: Arc::new(Mutex::new(transport)),
            subscriber: device,
        })
    }

    /// Window index this device was placed in.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Guest physical base of the MMIO window.
    pub fn base(&self) -> u64 {
        VIRTIO_MMIO_START + u64::from(self.index) * VIRTIO_MMIO_SIZE
    }

    /// Size of the MMIO window.
    pub fn size(&self) -> u64 {
        VIRTIO_MMIO_SIZE
    }

    /// Interrupt line (GSI) of the device.
    pub fn gsi(&self) -> u32 {
        VIRTIO_IRQ_BASE + self.index
    }

    /// The transport, to insert on the MMIO bus or inspect.
    pub fn transport(&self) -> &Arc<Mutex<MmioTransport>> {
        &self.transport
    }

    /// The device as an event-manager subscriber.
    pub fn subscriber(&self) -> SharedSubscriber {
        self.subscriber.clone()
    }

    /// Serve the window `[base, base + size)` on `bus` with the transport.
    pub fn insert_on_bus(&self, bus: &mut Bus) -> Result<(), VirtioError> {
        bus.insert(self.transport.clone(), self.base(), self.size())?;
        Ok(())
    }

    /// Register the queue ioeventfds and the irqfd with KVM. Needs the in-kernel irqchip.
    pub fn register_kvm(&self, vm: &VmFd) -> Result<(), VirtioError> {
        let t = lock(&self.transport);
        let addr = self.base() + MMIO_QUEUE_NOTIFY_OFFSET;
        for (queue, evt) in t.queue_events().iter().enumerate() {
            // Queue counts are tiny; the datamatch is the 32-bit value the driver writes.
            let datamatch = queue as u32;
            vm.register_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
                .map_err(|source| VirtioError::IoEventFd {
                    queue,
                    addr,
                    source,
                })?;
        }
        let gsi = self.gsi();
        vm.register_irqfd(t.interrupt_evt(), gsi)
            .map_err(|source| VirtioError::IrqFd { gsi, source })?;
        Ok(())
    }

    /// Insert on `bus`, register with KVM and add the device to `event_manager`.
    pub fn attach(
        &self,
        vm: &VmFd,
        bus: &mut Bus,
        event_manager: &mut EventManager<SharedSubscriber>,
    ) -> Result<SubscriberId, VirtioError> {
        self.insert_on_bus(bus)?;
        self.register_kvm(vm)?;
        Ok(event_manager.add_subscriber(self.subscriber()))
    }
}
