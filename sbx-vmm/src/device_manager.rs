//! virtio-mmio devices: creation, bus placement, KVM eventfd wiring and the event loop that
//! services their queues.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::VmFd;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::{IRQ_MAX, VIRTIO_IRQ_BASE};
use crate::devices::virtio::Fs;
use crate::devices::virtio::{
    Block, BlockConfig, Net, NetConfig, NetMetrics, Rng, SharedSubscriber, VirtioMmioSlot, Vsock,
};
use crate::devices::Bus;
use crate::error::{host, Error, Result};
use crate::memory::GuestMemory;
use crate::vm::VmConfig;

/// Where a virtio-mmio device sits, for the ACPI tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MmioPlacement {
    pub base: u64,
    pub size: u64,
    pub gsi: u32,
}

/// Wakes the event loop so it notices shutdown.
struct Waker {
    evt: EventFd,
}

impl MutEventSubscriber for Waker {
    fn process(&mut self, _events: Events, _ops: &mut EventOps<'_>) {
        let _ = self.evt.read();
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        if let Err(e) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            tracing::error!(error = ?e, "cannot watch the event loop's wake eventfd");
        }
    }
}

/// Owns the virtio devices and the thread that services their queues.
#[derive(Debug, Default)]
pub(crate) struct DeviceManager {
    placements: Vec<MmioPlacement>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    wake: Option<EventFd>,
    net_metrics: Option<Arc<NetMetrics>>,
}

fn max_devices() -> usize {
    (IRQ_MAX - VIRTIO_IRQ_BASE + 1) as usize
}

impl DeviceManager {
    pub(crate) fn new(
        config: &VmConfig,
        net: Option<NetConfig>,
        vm_fd: &VmFd,
        memory: &GuestMemory,
        mmio: &mut Bus,
    ) -> Result<Self> {
        let count = config.disks.len()
            + usize::from(net.is_some())
            + usize::from(config.rng)
            + usize::from(config.vsock.is_some())
            + config.fs.len();
        if count > max_devices() {
            return Err(Error::TooManyDevices(max_devices()));
        }
        let mut manager = DeviceManager::default();
        if count == 0 {
            return Ok(manager);
        }
        let mut em: EventManager<SharedSubscriber> =
            EventManager::new().map_err(|e| Error::Host {
                what: "event manager",
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        let mut slots = Vec::with_capacity(count);
        for (i, disk) in config.disks.iter().enumerate() {
            let name = format!("virtio-blk {}", disk.path.display());
            let dev = Block::new(BlockConfig::new(&disk.path).read_only(disk.read_only)).map_err(
                |e| Error::Device {
                    name: name.clone(),
                    source: Box::new(e),
                },
            )?;
            let slot = VirtioMmioSlot::new(i as u32, Arc::new(Mutex::new(dev)), memory.clone())
                .map_err(|e| Error::Device {
                    name,
                    source: Box::new(e),
                })?;
            slots.push(slot);
        }
        if let Some(net) = net {
            let dev_err = |e: crate::devices::virtio::VirtioError| Error::Device {
                name: "virtio-net".into(),
                source: Box::new(e),
            };
            let dev = Net::new(net).map_err(dev_err)?;
            manager.net_metrics = Some(dev.metrics());
            let slot = VirtioMmioSlot::new(
                slots.len() as u32,
                Arc::new(Mutex::new(dev)),
                memory.clone(),
            )
            .map_err(dev_err)?;
            slots.push(slot);
        }
        if config.rng {
            let dev_err = |e: crate::devices::virtio::VirtioError| Error::Device {
                name: "virtio-rng".into(),
                source: Box::new(e),
            };
            let dev = Rng::new().map_err(dev_err)?;
            let slot = VirtioMmioSlot::new(
                slots.len() as u32,
                Arc::new(Mutex::new(dev)),
                memory.clone(),
            )
            .map_err(dev_err)?;
            slots.push(slot);
        }
        if let Some(vsock) = &config.vsock {
            let dev_err = |e: crate::devices::virtio::VirtioError| Error::Device {
                name: "virtio-vsock".into(),
                source: Box::new(e),
            };
            let dev = Vsock::new(vsock.clone()).map_err(dev_err)?;
            let slot = VirtioMmioSlot::new(
                slots.len() as u32,
                Arc::new(Mutex::new(dev)),
                memory.clone(),
            )
            .map_err(dev_err)?;
            slots.push(slot);
        }
        for fs in &config.fs {
            let dev_err = |e: crate::devices::virtio::VirtioError| Error::Device {
                name: format!("virtio-fs {}", fs.tag),
                source: Box::new(e),
            };
            let dev = Fs::new(fs.clone()).map_err(dev_err)?;
            let slot = VirtioMmioSlot::new(
                slots.len() as u32,
                Arc::new(Mutex::new(dev)),
                memory.clone(),
            )
            .map_err(dev_err)?;
            slots.push(slot);
        }
        for slot in &slots {
            slot.attach(vm_fd, mmio, &mut em)
                .map_err(|e| Error::Device {
                    name: format!("virtio-mmio slot {}", slot.index()),
                    source: Box::new(e),
                })?;
            manager.placements.push(MmioPlacement {
                base: slot.base(),
                size: slot.size(),
                gsi: slot.gsi(),
            });
        }
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(host("wake eventfd"))?;
        // The waker subscriber owns a duplicate of the same eventfd.
        let evt = wake.try_clone().map_err(host("wake eventfd"))?;
        em.add_subscriber(Arc::new(Mutex::new(Waker { evt })));
        let stop = manager.stop.clone();
        let thread = std::thread::Builder::new()
            .name("sbx-devices".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Err(e) = em.run() {
                        tracing::error!(error = ?e, "device event loop failed");
                        break;
                    }
                }
                drop(slots);
            })
            .map_err(host("device event loop thread"))?;
        manager.thread = Some(thread);
        manager.wake = Some(wake);
        Ok(manager)
    }

    /// Where each device sits, in window order.
    pub(crate) fn placements(&self) -> &[MmioPlacement] {
        &self.placements
    }

    /// Counters of the network device, if there is one.
    pub(crate) fn net_metrics(&self) -> Option<Arc<NetMetrics>> {
        self.net_metrics.clone()
    }

    pub(crate) fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = &self.wake {
            let _ = w.write(1);
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("device event loop panicked");
            }
        }
    }
}
