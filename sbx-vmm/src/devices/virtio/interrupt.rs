//! The interrupt line shared by a virtio-mmio transport and its device.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Interrupt status bit: the device used buffers in a queue.
pub const VIRTIO_MMIO_INT_VRING: u32 = 1 << 0;
/// Interrupt status bit: the device configuration changed.
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 1 << 1;

struct Inner {
    status: AtomicU32,
    config_generation: AtomicU32,
    evt: EventFd,
}

/// Raises the device's interrupt: sets a bit in the `InterruptStatus` register the guest reads
/// and acknowledges through the transport, then signals an `EventFd` the VMM registers as a KVM
/// irqfd for the device's GSI.
///
/// Cloning is cheap; clones share the same status and eventfd.
#[derive(Clone)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

impl fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interrupt")
            .field("status", &self.status())
            .field("config_generation", &self.config_generation())
            .finish_non_exhaustive()
    }
}

impl Interrupt {
    /// A new interrupt with a fresh non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                status: AtomicU32::new(0),
                config_generation: AtomicU32::new(0),
                evt: EventFd::new(EFD_NONBLOCK)?,
            }),
        })
    }

    /// The eventfd to register with `VmFd::register_irqfd`.
    pub fn eventfd(&self) -> &EventFd {
        &self.inner.evt
    }

    /// Tell the driver that buffers were put in a used ring.
    pub fn signal_used_queue(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    /// Tell the driver that the configuration space changed (bumps the config generation).
    pub fn signal_config_change(&self) {
        self.inner.config_generation.fetch_add(1, Ordering::AcqRel);
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    fn raise(&self, bit: u32) {
        self.inner.status.fetch_or(bit, Ordering::AcqRel);
        // Always write, even if the bit was already set: the driver may have read the status
        // before our update and must still get an edge for it.
        if let Err(e) = self.inner.evt.write(1) {
            tracing::warn!(error = %e, "cannot signal the virtio interrupt eventfd");
        }
    }

    /// Current `InterruptStatus` register value.
    pub fn status(&self) -> u32 {
        self.inner.status.load(Ordering::Acquire)
    }

    /// Clear the bits the driver acknowledged.
    pub fn ack(&self, bits: u32) {
        self.inner.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Current `ConfigGeneration` register value.
    pub fn config_generation(&self) -> u32 {
        self.inner.config_generation.load(Ordering::Acquire)
    }

    pub(crate) fn clear(&self) {
        self.inner.status.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bits_and_eventfd() {
        let irq = Interrupt::new().unwrap();
        let other = irq.clone();
        other.signal_used_queue();
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_VRING);
        irq.signal_config_change();
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(irq.config_generation(), 1);
        assert_eq!(irq.eventfd().read().unwrap(), 2);
        irq.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(other.status(), VIRTIO_MMIO_INT_CONFIG);
        irq.clear();
        assert_eq!(other.status(), 0);
    }
}
