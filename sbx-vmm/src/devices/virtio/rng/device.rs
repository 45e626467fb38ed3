//! The virtio-rng device model (virtio 1.2, section 5.4).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::metrics::RngMetrics;
use crate::devices::virtio::chain::{self, Chain};
use crate::devices::virtio::device::{
    device_type, features, take_queues, ActivateError, VirtioDevice,
};
use crate::devices::virtio::error::VirtioError;
use crate::devices::virtio::interrupt::Interrupt;
use crate::devices::virtio::queue;
use crate::memory::GuestMemory;

/// Size of the one request queue.
pub const RNG_QUEUE_SIZE: u16 = 256;
/// At most this many bytes are returned per buffer, however large the buffer is. Bounds the
/// time one kick can keep the event thread busy.
pub const RNG_MAX_BYTES_PER_REQUEST: usize = 64 << 10;

const ENTROPY_SOURCE: &str = "/dev/urandom";

struct Active {
    mem: GuestMemory,
    interrupt: Interrupt,
    queue: Queue,
}

/// A virtio entropy device fed from the host's `/dev/urandom` (opened once, at creation, so it
/// keeps working inside a later sandbox).
pub struct Rng {
    source: File,
    buf: Vec<u8>,
    queue_max_sizes: [u16; 1],
    pub(super) queue_evts: [EventFd; 1],
    active: Option<Active>,
    pub(super) metrics: Arc<RngMetrics>,
}

impl fmt::Debug for Rng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rng")
            .field("activated", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Rng {
    /// A new entropy device.
    pub fn new() -> Result<Self, VirtioError> {
        let source = File::open(ENTROPY_SOURCE).map_err(|source| VirtioError::OpenEntropy {
            path: ENTROPY_SOURCE,
            source,
        })?;
        let evt = EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd)?;
        Ok(Self {
            source,
            buf: Vec::new(),
            queue_max_sizes: [RNG_QUEUE_SIZE],
            queue_evts: [evt],
            active: None,
            metrics: Arc::new(RngMetrics::default()),
        })
    }

    /// Whether the driver activated the device (and did not reset it since).
    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// This device's counters.
    pub fn metrics(&self) -> Arc<RngMetrics> {
        self.metrics.clone()
    }

    /// Fill every buffer the driver made available, put them in the used ring and raise the
    /// interrupt if any completed. Returns the number of chains consumed. Does nothing before
    /// activation. The event handler calls this when the queue eventfd fires.
    pub fn process_queue(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else {
            return 0;
        };
        let (source, buf, m) = (&mut self.source, &mut self.buf, &self.metrics);
        let mem = &active.mem;
        let done = queue::drain(&mut active.queue, mem, |desc_chain| {
            m.requests.inc();
            let head = desc_chain.head_index();
            match chain::parse(desc_chain, mem) {
                Ok(c) if c.readable.is_empty() => fill(&c, mem, source, buf, m),
                Ok(_) => {
                    m.bad_chains.inc();
                    tracing::warn!(head, "virtio-rng: request has device-readable buffers");
                    0
                }
                Err(e) => {
                    m.bad_chains.inc();
                    tracing::warn!(head, error = %e, "virtio-rng: skipping malformed request");
                    0
                }
            }
        });
        m.used_ring_errors.add(done.used_ring_errors as u64);
        if done.notify {
            active.interrupt.signal_used_queue();
        }
        done.consumed
    }
}

/// Fill up to [`RNG_MAX_BYTES_PER_REQUEST`] bytes of the chain's buffers; returns the used
/// length.
fn fill(c: &Chain, mem: &GuestMemory, source: &mut File, buf: &mut Vec<u8>, m: &RngMetrics) -> u32 {
    let want = c.writable_len();
    let n = usize::try_from(want)
        .unwrap_or(usize::MAX)
        .min(RNG_MAX_BYTES_PER_REQUEST);
    if want > n as u64 {
        m.capped_requests.inc();
    }
    buf.resize(n, 0);
    if let Err(e) = source.read_exact(buf) {
        m.entropy_errors.inc();
        tracing::warn!(error = %e, "virtio-rng: cannot read host entropy");
        return 0;
    }
    if !c.write_at(mem, 0, buf) {
        m.guest_memory_errors.inc();
        return 0;
    }
    m.bytes.add(n as u64);
    // n <= RNG_MAX_BYTES_PER_REQUEST fits in u32.
    n as u32
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
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
        data.fill(0);
        self.metrics.config_errors.inc();
        tracing::warn!(offset, "virtio-rng has no configuration space");
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        self.metrics.config_errors.inc();
        tracing::warn!(offset, "virtio-rng has no configuration space");
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
        let [queue] = take_queues::<1>(queues, &[0])?;
        self.active = Some(Active {
            mem,
            interrupt,
            queue,
        });
        // Pick up buffers made available before DRIVER_OK on the event thread, not on this
        // vCPU thread.
        if let Err(e) = self.queue_evts[0].write(1) {
            tracing::warn!(error = %e, "virtio-rng: cannot kick the queue after activation");
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}
