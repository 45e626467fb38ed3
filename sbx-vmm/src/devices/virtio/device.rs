//! The seam between a virtio transport and a virtio device model.

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::Interrupt;
use crate::memory::GuestMemory;

/// Virtio device IDs (virtio 1.2, section 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// File system device.
    pub const FS: u32 = 26;
}

/// Feature bits shared by all device types (virtio 1.2, section 6).
pub mod features {
    /// The driver may use indirect descriptor tables.
    pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
    /// `used_event` / `avail_event` notification suppression.
    pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;
    /// The device is a modern (non-legacy) virtio 1.x device. Mandatory for virtio-mmio v2.
    pub const VIRTIO_F_VERSION_1: u32 = 32;
}

/// Why a device refused to start when the driver set `DRIVER_OK`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivateError {
    /// The transport handed over a different number of queues than the device has.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device has.
        expected: usize,
        /// Queues handed over.
        got: usize,
    },
    /// A queue the device needs was not made ready by the driver.
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    /// A queue's size or ring addresses are invalid.
    #[error("queue {index} is misconfigured")]
    InvalidQueue {
        /// Queue index.
        index: usize,
        /// What virtio-queue rejected.
        #[source]
        source: virtio_queue::Error,
    },
    /// A queue's rings lie outside guest memory.
    #[error("queue {0} rings are outside guest memory")]
    QueueOutOfMemory(usize),
    /// `activate` was called twice without a reset.
    #[error("device is already active")]
    AlreadyActive,
    /// The device's external backend (e.g. a vhost-user daemon) refused the setup or is gone.
    #[error("device backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A virtio device model, driven by a transport (today [`MmioTransport`](super::MmioTransport)).
///
/// The transport owns the register file and the feature/status handshake; the device owns its
/// queues' eventfds, its configuration space and the processing of its queues. Devices process
/// queues on the VMM's event-manager thread, so implementors are usually also an
/// [`event_manager::MutEventSubscriber`] watching [`queue_events`](Self::queue_events).
///
/// Guest input must never make any of these methods panic.
pub trait VirtioDevice: Send {
    /// Virtio device ID (see [`device_type`]).
    fn device_type(&self) -> u32;

    /// Maximum size of each queue; the slice length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// One eventfd per queue, signalled when the driver notifies that queue (through a KVM
    /// ioeventfd, or by the transport on a `QueueNotify` MMIO exit).
    fn queue_events(&self) -> &[EventFd];

    /// Feature bits offered to the driver; must include [`features::VIRTIO_F_VERSION_1`].
    fn avail_features(&self) -> u64;

    /// The features the driver accepted. The transport only calls this with a subset of
    /// [`avail_features`](Self::avail_features), when the driver sets `FEATURES_OK`.
    fn ack_features(&mut self, features: u64);

    /// The driver reads `data.len()` bytes of the configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// The driver writes `data` into the configuration space at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Start processing: the driver set `DRIVER_OK`. `queues` has one entry per queue (in
    /// order), configured by the driver; unused queues are not ready.
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Interrupt,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError>;

    /// Stop processing and forget queues and negotiated features (the driver wrote 0 to
    /// `Status`). The queue eventfds stay valid.
    fn reset(&mut self);

    /// Whether the device hit an error it cannot recover from without a driver reset (e.g. its
    /// backend went away). The transport then reports `DEVICE_NEEDS_RESET` in `Status`.
    fn needs_reset(&self) -> bool {
        false
    }
}

/// Copy `config[offset..]` into `data`, zero-filling what lies past the end of `config`.
/// Returns false when any part of the access was out of range.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) -> bool {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return false;
    };
    if start >= config.len() {
        return data.is_empty();
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
    n == data.len()
}

/// Take the queues a transport handed to `activate`: exactly `N` of them, and each index in
/// `required` made ready by the driver.
pub(crate) fn take_queues<const N: usize>(
    queues: Vec<Queue>,
    required: &[usize],
) -> Result<[Queue; N], ActivateError> {
    let queues = <[Queue; N]>::try_from(queues).map_err(|q| ActivateError::QueueCount {
        expected: N,
        got: q.len(),
    })?;
    match required
        .iter()
        .find(|&&i| !queues.get(i).is_some_and(|q| q.ready()))
    {
        Some(&i) => Err(ActivateError::QueueNotReady(i)),
        None => Ok(queues),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [0xffu8; 2];
        assert!(read_config_bytes(&cfg, 1, &mut d));
        assert_eq!(d, [2, 3]);
        assert!(!read_config_bytes(&cfg, 3, &mut d));
        assert_eq!(d, [4, 0]);
        assert!(!read_config_bytes(&cfg, 4, &mut d));
        assert_eq!(d, [0, 0]);
        assert!(!read_config_bytes(&cfg, u64::MAX, &mut d));
    }
}
