//! The virtio-net device model (virtio 1.2, section 5.1): queues, configuration space, and
//! moving frames between the queues and a [`NetBackend`].

use std::fmt;
use std::io;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::NetBackend;
use super::metrics::NetMetrics;
use crate::devices::virtio::chain::{self, Chain};
use crate::devices::virtio::device::{
    device_type, features, read_config_bytes, take_queues, ActivateError, VirtioDevice,
};
use crate::devices::virtio::error::VirtioError;
use crate::devices::virtio::interrupt::Interrupt;
use crate::devices::virtio::queue;
use crate::memory::GuestMemory;

/// Size of each of the two queues.
pub const NET_QUEUE_SIZE: u16 = 256;
/// Index of the receive queue (device to driver).
pub const NET_RX_QUEUE: usize = 0;
/// Index of the transmit queue (driver to device).
pub const NET_TX_QUEUE: usize = 1;

/// Feature bit: the configuration space has a MAC address.
pub const VIRTIO_NET_F_MAC: u32 = 5;
/// Feature bit: the configuration space has a link status.
pub const VIRTIO_NET_F_STATUS: u32 = 16;
/// Link status bit: the link is up.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// Length of `struct virtio_net_hdr_v1`, which precedes every frame in both directions.
pub const VIRTIO_NET_HDR_LEN: usize = 12;
/// Longest frame (without the virtio header) accepted in either direction: a 64 KiB IP packet
/// with Ethernet and VLAN headers. Longer ones are dropped and counted.
pub const NET_MAX_FRAME_LEN: usize = 65562;
/// Smallest receive chain used: the header plus a 1514-byte frame (MTU 1500). Without
/// `VIRTIO_NET_F_MRG_RXBUF` a driver must post buffers at least this large; shorter chains are
/// returned unused and counted.
pub const NET_MIN_RX_BUFFER: usize = VIRTIO_NET_HDR_LEN + 1514;

/// epoll data of the backend fd.
pub(super) const BACKEND_TOKEN: u32 = 2;
/// epoll data of the control eventfd (activation and reset wake the event thread).
pub(super) const CTL_TOKEN: u32 = 3;

/// Frames dropped (too long) in a row before one receive pass gives up and lets the event
/// loop serve others; the backend fd stays readable, so the loop comes back.
const MAX_DROPS_PER_CHAIN: usize = 64;

/// How to build a [`Net`] device.
#[non_exhaustive]
pub struct NetConfig {
    /// The guest's MAC address (a unicast address: the low bit of the first byte is clear).
    pub mac: [u8; 6],
    /// Where frames go and come from.
    pub backend: Box<dyn NetBackend>,
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("mac", &format_mac(&self.mac))
            .field("backend_fd", &self.backend.as_raw_fd())
            .finish()
    }
}

impl NetConfig {
    /// A device with MAC `mac` whose frames go to and come from `backend`.
    pub fn new(mac: [u8; 6], backend: Box<dyn NetBackend>) -> Self {
        Self { mac, backend }
    }
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

struct Active {
    mem: GuestMemory,
    interrupt: Interrupt,
    queues: [Queue; 2],
}

/// A virtio network card whose wire is a [`NetBackend`].
///
/// Offers `VIRTIO_F_VERSION_1`, `VIRTIO_NET_F_MAC`, `VIRTIO_NET_F_STATUS` (link always up),
/// indirect descriptors and event index; no checksum or segmentation offloads, so frames are
/// plain Ethernet frames of at most the guest's MTU plus headers. Every frame is preceded in
/// guest memory by a [`VIRTIO_NET_HDR_LEN`]-byte header: the device ignores the driver's and
/// writes a zero header with `num_buffers = 1` on receive.
///
/// The device runs on the VMM's event-manager thread (see its `MutEventSubscriber` impl):
/// a transmit kick sends each frame to the backend (a backend that would block drops it); a
/// receive kick or a readable backend copies frames into the guest's receive buffers. While
/// the guest has no receive buffers the backend fd is not polled, so frames wait in the
/// backend (a socket's buffer fills and its writer sees `EAGAIN`).
///
/// Descriptor chains are guest-controlled: malformed chains, transmit chains with writable
/// buffers or no payload, receive chains with readable buffers or shorter than
/// [`NET_MIN_RX_BUFFER`], and frames over [`NET_MAX_FRAME_LEN`] are counted in
/// [`NetMetrics`] and skipped.
pub struct Net {
    mac: [u8; 6],
    pub(super) backend: Box<dyn NetBackend>,
    queue_max_sizes: [u16; 2],
    pub(super) queue_evts: [EventFd; 2],
    pub(super) ctl_evt: EventFd,
    active: Option<Active>,
    acked_features: u64,
    scratch: Vec<u8>,
    /// The last receive pass ran out of guest buffers.
    rx_waiting: bool,
    /// The backend reached end of file or failed; not read again until reset/activation.
    backend_failed: bool,
    /// Whether the backend fd is in the event loop's epoll set.
    pub(super) backend_watched: bool,
    pub(super) metrics: Arc<NetMetrics>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net")
            .field("mac", &format_mac(&self.mac))
            .field("activated", &self.active.is_some())
            .field("rx_waiting", &self.rx_waiting)
            .field("backend_failed", &self.backend_failed)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// Create the device.
    pub fn new(config: NetConfig) -> Result<Self, VirtioError> {
        if config.mac[0] & 1 != 0 || config.mac == [0; 6] {
            return Err(VirtioError::InvalidMac(config.mac));
        }
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd);
        Ok(Self {
            mac: config.mac,
            backend: config.backend,
            queue_max_sizes: [NET_QUEUE_SIZE; 2],
            queue_evts: [evt()?, evt()?],
            ctl_evt: evt()?,
            active: None,
            acked_features: 0,
            scratch: vec![0u8; NET_MAX_FRAME_LEN + 1],
            rx_waiting: false,
            backend_failed: false,
            backend_watched: false,
            metrics: Arc::new(NetMetrics::default()),
        })
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether the driver activated the device (and did not reset it since).
    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// The features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// This device's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// Whether the event loop should poll the backend fd: active, the backend usable, and the
    /// guest had receive buffers at the last look.
    pub(super) fn wants_backend(&self) -> bool {
        self.active.is_some() && !self.backend_failed && !self.rx_waiting
    }

    pub(super) fn wake(&self) {
        if let Err(e) = self.ctl_evt.write(1) {
            tracing::warn!(error = %e, "virtio-net: cannot wake the event thread");
        }
    }

    /// Send every frame the driver queued for transmission to the backend, put the chains in
    /// the used ring and raise the interrupt if the driver wants one. Returns the number of
    /// chains consumed; does nothing before activation.
    pub fn process_tx(&mut self) -> usize {
        let Self {
            active,
            backend,
            scratch,
            metrics: m,
            ..
        } = self;
        let Some(a) = active.as_mut() else {
            return 0;
        };
        let mem = &a.mem;
        let done = queue::drain(&mut a.queues[NET_TX_QUEUE], mem, |desc_chain| {
            let head = desc_chain.head_index();
            match chain::parse(desc_chain, mem) {
                Ok(c) => transmit(&c, mem, scratch, backend.as_mut(), m),
                Err(e) => {
                    m.tx_bad_chains.inc();
                    tracing::debug!(head, error = %e, "virtio-net: malformed tx chain");
                }
            }
            0
        });
        m.used_ring_errors.add(done.used_ring_errors as u64);
        if done.notify {
            a.interrupt.signal_used_queue();
        }
        done.consumed
    }

    /// Copy frames from the backend into the driver's receive buffers until either runs out,
    /// and raise the interrupt if the driver wants one. Returns the number of chains used;
    /// does nothing before activation.
    pub fn process_rx(&mut self) -> usize {
        let Self {
            active,
            backend,
            scratch,
            metrics: m,
            rx_waiting,
            backend_failed,
            ..
        } = self;
        let Some(a) = active.as_mut() else {
            return 0;
        };
        let mem = &a.mem;
        let q = &mut a.queues[NET_RX_QUEUE];
        let mut used = 0usize;
        *rx_waiting = false;
        while !*backend_failed {
            let Some(desc_chain) = pop_or_arm(q, mem) else {
                *rx_waiting = true;
                m.rx_no_buffers.inc();
                tracing::trace!("virtio-net: no rx buffers, backend left unread");
                break;
            };
            let head = desc_chain.head_index();
            let len = match chain::parse(desc_chain, mem) {
                Ok(c) if c.readable.is_empty() && c.writable_len() >= NET_MIN_RX_BUFFER as u64 => {
                    match receive(&c, mem, scratch, backend.as_mut(), m, backend_failed) {
                        Some(len) => len,
                        None => {
                            // No frame after all: give the buffer back to the ring.
                            q.set_next_avail(q.next_avail().wrapping_sub(1));
                            break;
                        }
                    }
                }
                Ok(c) => {
                    m.rx_bad_chains.inc();
                    tracing::debug!(
                        head,
                        readable = c.readable.len(),
                        writable_len = c.writable_len(),
                        "virtio-net: rx chain device-readable or too short"
                    );
                    0
                }
                Err(e) => {
                    m.rx_bad_chains.inc();
                    tracing::debug!(head, error = %e, "virtio-net: malformed rx chain");
                    0
                }
            };
            if let Err(e) = q.add_used(mem, head, len) {
                m.used_ring_errors.inc();
                tracing::warn!(head, error = %e, "virtio-net: cannot update the rx used ring");
            }
            used += 1;
        }
        if used > 0
            && q.needs_notification(mem).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "virtio-net: cannot read the used event index");
                true
            })
        {
            a.interrupt.signal_used_queue();
        }
        used
    }
}

/// Pop the next chain. When the ring looks empty, re-enable notifications (so the driver
/// kicks us for the next buffer) and look exactly once more, for a buffer added in between.
/// A bogus available index makes pop refuse while enable reports "more": the single re-check
/// keeps that from spinning.
fn pop_or_arm<'a>(q: &mut Queue, mem: &'a GuestMemory) -> Option<DescriptorChain<&'a GuestMemory>> {
    if let Some(c) = q.pop_descriptor_chain(mem) {
        return Some(c);
    }
    match q.enable_notification(mem) {
        Ok(true) => q.pop_descriptor_chain(mem),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(error = %e, "virtio-net: cannot enable queue notifications");
            None
        }
    }
}

/// One transmit chain: header, bounds, frame, backend.
fn transmit(
    c: &Chain,
    mem: &GuestMemory,
    scratch: &mut [u8],
    backend: &mut dyn NetBackend,
    m: &NetMetrics,
) {
    let total = c.readable_len();
    if !c.writable.is_empty() || total <= VIRTIO_NET_HDR_LEN as u64 {
        m.tx_bad_chains.inc();
        tracing::debug!(
            total,
            writable = c.writable.len(),
            "virtio-net: tx chain device-writable or without a frame"
        );
        return;
    }
    let len = total - VIRTIO_NET_HDR_LEN as u64;
    if len > NET_MAX_FRAME_LEN as u64 {
        m.tx_bad_chains.inc();
        tracing::debug!(len, "virtio-net: tx frame too long");
        return;
    }
    // len <= NET_MAX_FRAME_LEN < scratch.len().
    let frame = &mut scratch[..len as usize];
    if !c.read_at(mem, VIRTIO_NET_HDR_LEN as u64, frame) {
        m.guest_memory_errors.inc();
        return;
    }
    match backend.send(frame) {
        Ok(()) => {
            m.tx_frames.inc();
            m.tx_bytes.add(len);
        }
        Err(e) => {
            m.tx_dropped.inc();
            if e.kind() == io::ErrorKind::WouldBlock {
                tracing::trace!("virtio-net: backend full, tx frame dropped");
            } else {
                tracing::debug!(error = %e, "virtio-net: backend send failed, tx frame dropped");
            }
        }
    }
}

/// Read frames from the backend until one fits `c` and copy it in; returns the used length,
/// or `None` when the backend has nothing (or failed, which sets `failed`).
fn receive(
    c: &Chain,
    mem: &GuestMemory,
    scratch: &mut [u8],
    backend: &mut dyn NetBackend,
    m: &NetMetrics,
    failed: &mut bool,
) -> Option<u32> {
    let room = c.writable_len() - VIRTIO_NET_HDR_LEN as u64;
    let mut drops = 0usize;
    while drops < MAX_DROPS_PER_CHAIN {
        match backend.recv(scratch) {
            Ok(0) => {
                *failed = true;
                m.backend_closed.inc();
                tracing::warn!("virtio-net: backend closed, no more frames for the guest");
                return None;
            }
            Ok(n) if n > NET_MAX_FRAME_LEN || n as u64 > room => {
                drops += 1;
                m.rx_dropped.inc();
                tracing::debug!(len = n, room, "virtio-net: rx frame too long, dropped");
            }
            Ok(n) => {
                let mut hdr = [0u8; VIRTIO_NET_HDR_LEN];
                // num_buffers: the frame is in this one chain.
                hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
                if !(c.write_at(mem, 0, &hdr)
                    && c.write_at(mem, VIRTIO_NET_HDR_LEN as u64, &scratch[..n]))
                {
                    m.guest_memory_errors.inc();
                    return Some(0);
                }
                m.rx_frames.inc();
                m.rx_bytes.add(n as u64);
                // n <= NET_MAX_FRAME_LEN.
                return Some((VIRTIO_NET_HDR_LEN + n) as u32);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                *failed = true;
                m.backend_errors.inc();
                tracing::error!(error = %e, "virtio-net: backend read failed, receive stopped");
                return None;
            }
        }
    }
    None
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn avail_features(&self) -> u64 {
        (1u64 << features::VIRTIO_F_VERSION_1)
            | (1u64 << features::VIRTIO_RING_F_INDIRECT_DESC)
            | (1u64 << features::VIRTIO_RING_F_EVENT_IDX)
            | (1u64 << VIRTIO_NET_F_MAC)
            | (1u64 << VIRTIO_NET_F_STATUS)
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        if !read_config_bytes(&config, offset, data) {
            self.metrics.config_errors.inc();
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-net: config read out of range"
            );
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        self.metrics.config_errors.inc();
        tracing::warn!(offset, "virtio-net: config space is read-only");
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
        let queues = take_queues::<2>(queues, &[NET_RX_QUEUE, NET_TX_QUEUE])?;
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
        });
        self.rx_waiting = false;
        self.backend_failed = false;
        // Process what is already queued on the event thread, not on this vCPU thread.
        self.wake();
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.rx_waiting = false;
        // Stop polling the backend: that needs the event thread.
        self.wake();
    }
}
