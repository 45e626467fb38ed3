//! The virtio-vsock device model (virtio 1.2, section 5.10): queues, configuration space,
//! and moving packets between the queues and the [`Muxer`].

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::metrics::VsockMetrics;
use super::muxer::Muxer;
use super::packet::{parse_header, Op, VSOCK_HDR_LEN, VSOCK_MAX_PKT_LEN};
use crate::devices::virtio::chain;
use crate::devices::virtio::device::{
    device_type, features, read_config_bytes, take_queues, ActivateError, VirtioDevice,
};
use crate::devices::virtio::error::VirtioError;
use crate::devices::virtio::interrupt::Interrupt;
use crate::memory::GuestMemory;

/// Size of each of the three queues.
pub const VSOCK_QUEUE_SIZE: u16 = 256;
/// Index of the rx queue (device to driver).
pub const VSOCK_RX_QUEUE: usize = 0;
/// Index of the tx queue (driver to device).
pub const VSOCK_TX_QUEUE: usize = 1;
/// Index of the event queue (unused: the device never migrates).
pub const VSOCK_EVENT_QUEUE: usize = 2;

/// epoll data of the control eventfd (activation and reset wake the event thread).
pub(super) const CTL_TOKEN: u32 = 3;
/// epoll data of the host listener.
pub(super) const LISTENER_TOKEN: u32 = 4;
/// epoll data of the connection timer.
pub(super) const TIMER_TOKEN: u32 = 5;

/// How to build a [`Vsock`] device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VsockConfig {
    /// The guest's context ID (3 to `u32::MAX - 1`).
    pub guest_cid: u64,
    /// Host Unix socket: host processes connect here and send `CONNECT <port>\n`; guest
    /// connections to host port P go to `<uds_path>_<P>`.
    pub uds_path: PathBuf,
}

impl VsockConfig {
    /// A device for guest CID `guest_cid` listening at `uds_path`.
    pub fn new(guest_cid: u64, uds_path: impl Into<PathBuf>) -> Self {
        Self {
            guest_cid,
            uds_path: uds_path.into(),
        }
    }
}

struct Active {
    mem: GuestMemory,
    interrupt: Interrupt,
    queues: Vec<Queue>,
}

/// A virtio-vsock device whose host side is a Unix socket, compatible with Firecracker's:
///
/// - host-initiated: connect to [`VsockConfig::uds_path`], write `CONNECT <guest port>\n`,
///   read `OK <host port>\n` once the guest accepted, then use the stream; if the guest
///   refuses, the stream is closed;
/// - guest-initiated: a guest connection to host port P is connected to the Unix socket
///   `<uds_path>_<P>` if something listens there, and reset otherwise.
///
/// The socket file is created by [`new`](Self::new) (it must not exist) and removed when the
/// device is dropped.
///
/// A host process reaching guest port 52 of a VM built with
/// [`VmBuilder::vsock`](crate::VmBuilder::vsock):
///
/// ```no_run
/// use std::io::{Read, Write};
/// use std::time::Duration;
///
/// use sbx_vmm::devices::virtio::vsock::connect_guest_port;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let vm = sbx_vmm::VmBuilder::new("vmlinux")
///     .vsock(3, "/run/sbx/vm1.vsock")
///     .start()?;
/// // By hand: connect to the socket, write "CONNECT 52\n", read "OK <host port>\n" (EOF
/// // means the guest refused or did not answer in time), then use the stream.
/// let path = std::path::Path::new("/run/sbx/vm1.vsock");
/// let (mut stream, _host_port) = connect_guest_port(path, 52, Duration::from_secs(5))?;
/// stream.write_all(b"hello")?;
/// let mut reply = [0u8; 5];
/// stream.read_exact(&mut reply)?;
/// # drop(vm);
/// # Ok(())
/// # }
/// ```
///
/// Guest connections to host port P reach whatever listens on `<uds_path>_<P>`, e.g.
/// `std::os::unix::net::UnixListener::bind("/run/sbx/vm1.vsock_53")`. All sockets are non-blocking and serviced on the event-manager thread
/// (see the `MutEventSubscriber` impl). Flow control follows the guest's credit, and a guest
/// that ignores ours is reset, so per-connection memory stays bounded.
pub struct Vsock {
    cid: u64,
    uds_path: PathBuf,
    socket_id: Option<(u64, u64)>,
    queue_max_sizes: [u16; 3],
    pub(super) queue_evts: [EventFd; 3],
    pub(super) ctl_evt: EventFd,
    pub(super) muxer: Muxer,
    active: Option<Active>,
    scratch: Vec<u8>,
    tx_paused: bool,
    pub(super) metrics: Arc<VsockMetrics>,
}

impl fmt::Debug for Vsock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vsock")
            .field("cid", &self.cid)
            .field("uds_path", &self.uds_path)
            .field("activated", &self.active.is_some())
            .field("connections", &self.muxer.connection_count())
            .finish_non_exhaustive()
    }
}

impl Vsock {
    /// Create the device and bind its host socket.
    pub fn new(config: VsockConfig) -> Result<Self, VirtioError> {
        let cid = config.guest_cid;
        if !(3..u64::from(u32::MAX)).contains(&cid) {
            return Err(VirtioError::InvalidCid(cid));
        }
        let bind_err = |source| VirtioError::VsockSocket {
            path: config.uds_path.clone(),
            source,
        };
        let listener = UnixListener::bind(&config.uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let socket_id = std::fs::metadata(&config.uds_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd);
        let metrics = Arc::new(VsockMetrics::default());
        Ok(Self {
            cid,
            uds_path: config.uds_path.clone(),
            socket_id,
            queue_max_sizes: [VSOCK_QUEUE_SIZE; 3],
            queue_evts: [evt()?, evt()?, evt()?],
            ctl_evt: evt()?,
            muxer: Muxer::new(cid, config.uds_path, listener, metrics.clone())
                .map_err(VirtioError::TimerFd)?,
            active: None,
            scratch: vec![0u8; VSOCK_MAX_PKT_LEN as usize],
            tx_paused: false,
            metrics,
        })
    }

    /// The guest's context ID.
    pub fn guest_cid(&self) -> u64 {
        self.cid
    }

    /// The host socket path.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Whether the driver activated the device (and did not reset it since).
    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// Open connections, including host connections still sending their `CONNECT` line and
    /// closed ones whose fd the event thread has not released yet.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// This device's counters.
    pub fn metrics(&self) -> Arc<VsockMetrics> {
        self.metrics.clone()
    }

    fn wake(&self) {
        if let Err(e) = self.ctl_evt.write(1) {
            tracing::warn!(error = %e, "virtio-vsock: cannot wake the event thread");
        }
    }

    /// Move packets both ways until neither side can make progress. Does nothing before
    /// activation.
    pub(super) fn run(&mut self) {
        if self.active.is_none() {
            return;
        }
        let (mut tx_used, mut rx_used) = (false, false);
        loop {
            tx_used |= self.process_tx();
            rx_used |= self.process_rx();
            // Resume a paused tx queue once the queued resets went out.
            if !self.tx_paused || self.muxer.tx_should_pause() {
                break;
            }
        }
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mut notify = false;
        for (used, q) in [(tx_used, VSOCK_TX_QUEUE), (rx_used, VSOCK_RX_QUEUE)] {
            if used {
                notify |= a.queues[q].needs_notification(&a.mem).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "virtio-vsock: cannot read the used event index");
                    true
                });
            }
        }
        if notify {
            a.interrupt.signal_used_queue();
        }
    }

    /// Take guest packets from the tx queue; returns whether any chain was used.
    fn process_tx(&mut self) -> bool {
        let Self {
            active,
            muxer,
            scratch,
            metrics: m,
            tx_paused,
            ..
        } = self;
        let Some(a) = active.as_mut() else {
            return false;
        };
        let mem = &a.mem;
        let q = &mut a.queues[VSOCK_TX_QUEUE];
        let mut used = false;
        if let Err(e) = q.disable_notification(mem) {
            tracing::warn!(error = %e, "virtio-vsock: cannot disable tx notifications");
        }
        loop {
            if muxer.tx_should_pause() {
                if !*tx_paused {
                    m.tx_pauses.inc();
                    tracing::debug!("virtio-vsock: tx paused until the guest gives rx buffers");
                }
                // Notifications stay off: the guest has to give rx buffers first, and their
                // kick resumes us.
                *tx_paused = true;
                return used;
            }
            *tx_paused = false;
            let Some(desc_chain) = pop_or_arm(q, mem) else {
                break;
            };
            let head = desc_chain.head_index();
            m.tx_packets.inc();
            match chain::parse(desc_chain, mem) {
                Ok(c) => handle_tx(&c, mem, scratch, muxer, m),
                Err(e) => {
                    m.bad_chains.inc();
                    tracing::debug!(head, error = %e, "virtio-vsock: malformed tx chain");
                }
            }
            if let Err(e) = q.add_used(mem, head, 0) {
                m.used_ring_errors.inc();
                tracing::warn!(head, error = %e, "virtio-vsock: cannot update the tx used ring");
            }
            used = true;
        }
        used
    }

    /// Fill rx buffers with packets the muxer has; returns whether any chain was used.
    fn process_rx(&mut self) -> bool {
        let Self {
            active,
            muxer,
            scratch,
            metrics: m,
            ..
        } = self;
        let Some(a) = active.as_mut() else {
            return false;
        };
        let mem = &a.mem;
        let q = &mut a.queues[VSOCK_RX_QUEUE];
        let mut used = false;
        while muxer.has_rx_work() {
            let Some(desc_chain) = pop_or_arm(q, mem) else {
                break;
            };
            let head = desc_chain.head_index();
            let len = match chain::parse(desc_chain, mem) {
                Ok(c) if c.readable.is_empty() && c.writable_len() >= VSOCK_HDR_LEN as u64 => {
                    let room = (c.writable_len() - VSOCK_HDR_LEN as u64)
                        .min(u64::from(VSOCK_MAX_PKT_LEN)) as usize;
                    let Some((hdr, n)) = muxer.next_rx(&mut scratch[..room]) else {
                        // Nothing to send after all (the host had no data): keep the buffer.
                        q.set_next_avail(q.next_avail().wrapping_sub(1));
                        break;
                    };
                    m.rx_packets.inc();
                    if c.write_at(mem, 0, &hdr.to_bytes())
                        && c.write_at(mem, VSOCK_HDR_LEN as u64, &scratch[..n])
                    {
                        // n <= VSOCK_MAX_PKT_LEN.
                        (VSOCK_HDR_LEN + n) as u32
                    } else {
                        m.guest_memory_errors.inc();
                        0
                    }
                }
                Ok(_) => {
                    m.bad_chains.inc();
                    tracing::debug!(head, "virtio-vsock: rx chain too small or device-readable");
                    0
                }
                Err(e) => {
                    m.bad_chains.inc();
                    tracing::debug!(head, error = %e, "virtio-vsock: malformed rx chain");
                    0
                }
            };
            if let Err(e) = q.add_used(mem, head, len) {
                m.used_ring_errors.inc();
                tracing::warn!(head, error = %e, "virtio-vsock: cannot update the rx used ring");
            }
            used = true;
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
            tracing::warn!(error = %e, "virtio-vsock: cannot enable queue notifications");
            None
        }
    }
}

/// One tx packet: header, bounds, payload, then the muxer.
fn handle_tx(
    c: &chain::Chain,
    mem: &GuestMemory,
    scratch: &mut [u8],
    muxer: &mut Muxer,
    m: &VsockMetrics,
) {
    let mut raw = [0u8; VSOCK_HDR_LEN];
    if c.readable_len() < VSOCK_HDR_LEN as u64 || !c.read_at(mem, 0, &mut raw) {
        m.bad_headers.inc();
        tracing::debug!("virtio-vsock: tx packet shorter than its header");
        return;
    }
    let hdr = match parse_header(&raw) {
        Ok(h) => h,
        Err(e) => {
            m.bad_headers.inc();
            tracing::debug!(error = %e, "virtio-vsock: bad tx header");
            return;
        }
    };
    // Only RW carries payload; parse_header bounded len to VSOCK_MAX_PKT_LEN.
    let len = if hdr.op() == Some(Op::Rw) {
        hdr.len as usize
    } else {
        0
    };
    if c.readable_len() - (VSOCK_HDR_LEN as u64) < len as u64 {
        m.bad_headers.inc();
        tracing::debug!(len, "virtio-vsock: tx payload shorter than its header says");
        return;
    }
    let data = &mut scratch[..len];
    if !c.read_at(mem, VSOCK_HDR_LEN as u64, data) {
        m.guest_memory_errors.inc();
        return;
    }
    muxer.on_tx(&hdr, data);
}

impl Drop for Vsock {
    fn drop(&mut self) {
        // Remove the socket file if it is still the one we bound.
        let ours = std::fs::metadata(&self.uds_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.socket_id {
            let _ = std::fs::remove_file(&self.uds_path);
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
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
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !read_config_bytes(&self.cid.to_le_bytes(), offset, data) {
            self.metrics.config_errors.inc();
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-vsock: config read out of range"
            );
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        self.metrics.config_errors.inc();
        tracing::warn!(offset, "virtio-vsock: config space is read-only");
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
        // The event queue is never used, so it need not be ready.
        let queues = take_queues::<3>(queues, &[VSOCK_RX_QUEUE, VSOCK_TX_QUEUE])?;
        self.active = Some(Active {
            mem,
            interrupt,
            queues: queues.into(),
        });
        self.tx_paused = false;
        // Process what is already queued (buffers, host connections waiting for the guest)
        // on the event thread, not on this vCPU thread.
        self.wake();
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.tx_paused = false;
        self.muxer.reset_all();
        // Closing the host streams needs the event thread (it deregisters their fds).
        self.wake();
    }
}
