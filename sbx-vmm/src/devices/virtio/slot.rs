//! Wiring one virtio device into a VM.

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
///
/// Wiring a device into a VM:
///
/// 1. create the device model (e.g. [`Block::new`](super::Block::new)), shared as
///    `Arc<Mutex<_>>` so the VMM can keep a handle (metrics, `is_activated`);
/// 2. put it behind an [`MmioTransport`] in window `index`, at `VIRTIO_MMIO_START + index *
///    VIRTIO_MMIO_SIZE` with interrupt line `VIRTIO_IRQ_BASE + index` ([`VirtioMmioSlot::new`]);
/// 3. insert the transport on the MMIO bus ([`insert_on_bus`](Self::insert_on_bus));
/// 4. register each queue eventfd as a KVM ioeventfd at `base + 0x50` with datamatch = queue
///    index (`u32`), and the interrupt eventfd as a KVM irqfd for the GSI
///    ([`register_kvm`](Self::register_kvm); needs `create_irq_chip` first);
/// 5. add the device to the event manager, whose loop processes the queues
///    ([`subscriber`](Self::subscriber));
/// 6. describe the window and the (edge-triggered) GSI to the guest in the ACPI DSDT
///    (`LNRO0005`): [`base`](Self::base), [`size`](Self::size), [`gsi`](Self::gsi).
///
/// [`attach`](Self::attach) does steps 3 to 5.
///
/// ```no_run
/// use std::sync::{Arc, Mutex};
///
/// use event_manager::EventManager;
/// use sbx_vmm::devices::virtio::{Block, BlockConfig, SharedSubscriber, VirtioMmioSlot};
/// use sbx_vmm::devices::Bus;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let kvm = kvm_ioctls::Kvm::new()?;
/// let vm = kvm.create_vm()?;
/// vm.create_irq_chip()?;
/// let mem = sbx_vmm::memory::create_guest_memory(256 << 20)?;
/// let mut mmio_bus = Bus::new();
/// let mut events = EventManager::<SharedSubscriber>::new()?;
///
/// let disk = Block::new(BlockConfig::new("rootfs.raw").read_only(true))?;
/// let disk = Arc::new(Mutex::new(disk));
/// let slot = VirtioMmioSlot::new(0, disk.clone(), mem.clone())?;
/// slot.attach(&vm, &mut mmio_bus, &mut events)?;
/// // Describe slot.base(), slot.size() and slot.gsi() in the DSDT, forward MMIO exits to
/// // `mmio_bus`, and run `events.run()` in a loop on the device thread.
/// # Ok(())
/// # }
/// ```
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
