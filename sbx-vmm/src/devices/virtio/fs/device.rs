//! The virtio-fs device model: a vhost-user frontend (virtio 1.2, section 5.11; vhost-user
//! protocol, "Front-end message types").
//!
//! The backend reads the rings and the FUSE buffers straight from guest memory (shared through
//! the memfd behind [`GuestMemory`]). The VMM only relays: queue notifications reach the
//! backend through the queue eventfds (the KVM ioeventfds themselves, handed over with
//! `SET_VRING_KICK`), and the backend's "used buffers" signals come back on one call eventfd
//! per queue, which the event loop turns into the transport's interrupt (it must set the
//! `InterruptStatus` bit before the irqfd fires, so the call eventfds cannot be irqfds).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::config::{FsConfig, FS_MAX_TAG_LEN};
use super::metrics::FsMetrics;
use crate::devices::virtio::device::{
    device_type, features, read_config_bytes, take_queues, ActivateError, VirtioDevice,
};
use crate::devices::virtio::error::VirtioError;
use crate::devices::virtio::interrupt::Interrupt;
use crate::memory::GuestMemory;

/// Request queues we expose (virtiofsd serves one).
const NUM_REQUEST_QUEUES: usize = 1;
/// The high-priority queue (index 0) plus the request queues.
pub(super) const NUM_QUEUES: usize = 1 + NUM_REQUEST_QUEUES;
/// Largest queue the split ring allows.
const MAX_QUEUE_SIZE: u16 = 32768;
/// Queue 1 is the (first) request queue; the driver may leave hiprio unused.
const REQUEST_QUEUE: usize = 1;

/// Virtio features we pass through from the backend to the driver. Anything else the backend
/// offers (e.g. `LOG_ALL`, the vhost-user protocol bit) is vhost-user plumbing.
const PASSTHROUGH_FEATURES: u64 = (1 << features::VIRTIO_F_VERSION_1)
    | (1 << features::VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << features::VIRTIO_RING_F_EVENT_IDX);

struct Active {
    interrupt: Interrupt,
    /// Queues handed to the backend (and enabled there).
    queues: Vec<usize>,
}

/// A virtio-fs device served by a vhost-user backend such as `virtiofsd`.
///
/// [`Fs::new`] connects to the backend and negotiates features; the rings are handed over
/// when the driver sets `DRIVER_OK`. If the backend closes its socket the device logs it,
/// reports `DEVICE_NEEDS_RESET` and stays inert; the VM keeps running. Reconnecting to a
/// restarted backend is not supported.
pub struct Fs {
    socket_path: PathBuf,
    pub(super) frontend: Frontend,
    config_space: [u8; FS_MAX_TAG_LEN + 4],
    backend_features: u64,
    protocol_features: VhostUserProtocolFeatures,
    acked_features: u64,
    queue_max_sizes: [u16; NUM_QUEUES],
    pub(super) queue_evts: [EventFd; NUM_QUEUES],
    pub(super) call_evts: [EventFd; NUM_QUEUES],
    active: Option<Active>,
    pub(super) failed: bool,
    pub(super) socket_watched: bool,
    pub(super) metrics: Arc<FsMetrics>,
}

impl fmt::Debug for Fs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fs")
            .field("socket_path", &self.socket_path)
            .field("backend_features", &self.backend_features)
            .field("protocol_features", &self.protocol_features)
            .field("activated", &self.active.is_some())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn new_evts() -> Result<[EventFd; NUM_QUEUES], VirtioError> {
    let mut v = Vec::with_capacity(NUM_QUEUES);
    for _ in 0..NUM_QUEUES {
        v.push(EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd)?);
    }
    v.try_into()
        .map_err(|_| VirtioError::EventFd(std::io::Error::other("eventfd count")))
}

impl Fs {
    /// Connect to the backend at `config.socket_path` (it must be listening already; a
    /// refused connection is retried for about half a second) and negotiate the vhost-user
    /// protocol: `SET_OWNER`, `GET_FEATURES`, and the protocol features (`REPLY_ACK` so that
    /// every later request is acknowledged, `MQ` to check the queue count).
    pub fn new(config: FsConfig) -> Result<Self, VirtioError> {
        let len = config.tag.len();
        if len == 0 || len > FS_MAX_TAG_LEN {
            return Err(VirtioError::FsTag { len });
        }
        let qs = config.queue_size;
        if qs == 0 || qs > MAX_QUEUE_SIZE || !qs.is_power_of_two() {
            return Err(VirtioError::FsQueueSize(qs));
        }
        let path = config.socket_path.clone();
        let vhost_err = |source| VirtioError::VhostUser {
            path: path.clone(),
            source,
        };
        let incompatible = |reason: String| VirtioError::VhostUserIncompatible {
            path: path.clone(),
            reason,
        };
        let mut frontend = Frontend::connect(&path, NUM_QUEUES as u64).map_err(vhost_err)?;
        frontend.set_owner().map_err(vhost_err)?;
        let backend_features = frontend.get_features().map_err(vhost_err)?;
        if backend_features & (1 << features::VIRTIO_F_VERSION_1) == 0 {
            return Err(incompatible("it does not offer VIRTIO_F_VERSION_1".into()));
        }
        let mut protocol_features = VhostUserProtocolFeatures::empty();
        if backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = frontend.get_protocol_features().map_err(vhost_err)?;
            protocol_features =
                offered & (VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ);
            frontend
                .set_protocol_features(protocol_features)
                .map_err(vhost_err)?;
            if protocol_features.contains(VhostUserProtocolFeatures::MQ) {
                let n = frontend.get_queue_num().map_err(vhost_err)?;
                if n < NUM_QUEUES as u64 {
                    return Err(incompatible(format!(
                        "it serves {n} queues, virtio-fs needs {NUM_QUEUES}"
                    )));
                }
            }
            if protocol_features.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        tracing::debug!(
            socket = %path.display(),
            features = backend_features,
            protocol_features = protocol_features.bits(),
            "virtio-fs: vhost-user backend connected"
        );
        Ok(Self {
            socket_path: config.socket_path.clone(),
            frontend,
            config_space: config.config_space(NUM_REQUEST_QUEUES as u32),
            backend_features,
            protocol_features,
            acked_features: 0,
            queue_max_sizes: [qs; NUM_QUEUES],
            queue_evts: new_evts()?,
            call_evts: new_evts()?,
            active: None,
            failed: false,
            socket_watched: false,
            metrics: Arc::new(FsMetrics::default()),
        })
    }

    /// Whether the driver activated the device (and did not reset it since).
    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// Whether the backend went away (or refused a request); the device then reports
    /// `DEVICE_NEEDS_RESET` and does nothing until the driver resets it.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The virtio feature bits the backend offered (including vhost-user ones).
    pub fn backend_features(&self) -> u64 {
        self.backend_features
    }

    /// The vhost-user protocol features both sides use.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol_features
    }

    /// The backend's socket path.
    pub fn socket_path(&self) -> &std::path::Path {
        &self.socket_path
    }

    /// The per-queue eventfds the backend signals when it used buffers (the event loop
    /// forwards them to the guest's interrupt).
    pub fn call_events(&self) -> &[EventFd] {
        &self.call_evts
    }

    /// This device's counters.
    pub fn metrics(&self) -> Arc<FsMetrics> {
        self.metrics.clone()
    }

    /// The backend signalled queue `queue`: raise the guest interrupt if the device is live.
    pub(super) fn backend_used(&mut self, queue: usize) {
        match &self.active {
            Some(active) if !self.failed => {
                self.metrics.used_notifications.inc();
                tracing::trace!(queue, "virtio-fs: backend used buffers");
                active.interrupt.signal_used_queue();
            }
            _ => self.metrics.notifications_while_inactive.inc(),
        }
    }

    /// The backend closed its socket: log it, report `DEVICE_NEEDS_RESET` and tell the driver.
    pub(super) fn backend_gone(&mut self) {
        if self.failed {
            return;
        }
        self.failed = true;
        self.metrics.disconnects.inc();
        tracing::error!(
            socket = %self.socket_path.display(),
            "virtio-fs: vhost-user backend disconnected; the device needs a reset"
        );
        if let Some(active) = &self.active {
            active.interrupt.signal_config_change();
        }
    }

    /// Hand the memory table and the ready queues to the backend and enable them; `enabled`
    /// collects the queues handed over, also when a later step fails.
    fn setup_backend(
        &mut self,
        mem: &GuestMemory,
        queues: &[Queue],
        enabled: &mut Vec<usize>,
    ) -> Result<(), vhost::Error> {
        let mut acked = self.acked_features;
        if self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            acked |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        self.frontend.set_features(acked)?;
        let regions = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()?;
        self.frontend.set_mem_table(&regions)?;
        for (i, q) in queues.iter().enumerate() {
            if !q.ready() {
                continue;
            }
            let hva = |gpa: u64| {
                mem.get_host_address(GuestAddress(gpa))
                    .map(|p| p as u64)
                    .map_err(|_| vhost::Error::InvalidGuestMemory)
            };
            let ring = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: hva(q.desc_table())?,
                used_ring_addr: hva(q.used_ring())?,
                avail_ring_addr: hva(q.avail_ring())?,
                log_addr: None,
            };
            enabled.push(i);
            self.frontend.set_vring_num(i, q.size())?;
            self.frontend.set_vring_addr(i, &ring)?;
            self.frontend.set_vring_base(i, q.next_avail())?;
            self.frontend.set_vring_call(i, &self.call_evts[i])?;
            self.frontend.set_vring_kick(i, &self.queue_evts[i])?;
            if acked & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
                self.frontend.set_vring_enable(i, true)?;
            }
        }
        Ok(())
    }

    /// Stop the backend's rings (`GET_VRING_BASE` stops a ring in vhost-user).
    fn stop_backend(&mut self, queues: &[usize]) {
        let protocol = self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        for &i in queues {
            let result = if protocol != 0 {
                self.frontend.set_vring_enable(i, false)
            } else {
                Ok(())
            }
            .and_then(|()| self.frontend.get_vring_base(i).map(|_| ()));
            if let Err(e) = result {
                self.metrics.backend_errors.inc();
                tracing::warn!(queue = i, error = %e, "virtio-fs: cannot stop a backend queue");
            }
        }
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        device_type::FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn avail_features(&self) -> u64 {
        self.backend_features & PASSTHROUGH_FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !read_config_bytes(&self.config_space, offset, data) {
            tracing::debug!(
                offset,
                len = data.len(),
                "virtio-fs: config read out of range"
            );
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        self.metrics.config_writes.inc();
        tracing::warn!(offset, "virtio-fs: the configuration space is read-only");
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Interrupt,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if self.failed {
            return Err(ActivateError::Backend(
                "the vhost-user backend disconnected".into(),
            ));
        }
        let queues = take_queues::<NUM_QUEUES>(queues, &[REQUEST_QUEUE])?;
        let mut enabled = Vec::new();
        match self.setup_backend(&mem, &queues, &mut enabled) {
            Ok(()) => {
                self.metrics.activations.inc();
                tracing::debug!(queues = ?enabled, "virtio-fs: backend queues enabled");
                self.active = Some(Active {
                    interrupt,
                    queues: enabled,
                });
                Ok(())
            }
            Err(e) => {
                self.metrics.backend_errors.inc();
                tracing::warn!(
                    socket = %self.socket_path.display(),
                    error = %e,
                    "virtio-fs: the vhost-user backend refused the queue setup"
                );
                // Do not leave half-configured rings running in the backend.
                self.stop_backend(&enabled);
                Err(ActivateError::Backend(Box::new(e)))
            }
        }
    }

    fn reset(&mut self) {
        if let Some(active) = self.active.take() {
            if !self.failed {
                self.stop_backend(&active.queues);
            }
        }
        for evt in &self.call_evts {
            let _ = evt.read();
        }
        self.acked_features = 0;
    }

    fn needs_reset(&self) -> bool {
        self.failed
    }
}
