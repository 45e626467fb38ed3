//! Executing virtio-blk requests (virtio 1.2, section 5.2.6).
//!
//! A request is a device-readable 16-byte header (`type`, `reserved`, `sector`), then data
//! (device-readable for `OUT`, device-writable for `IN` and `GET_ID`), then one device-writable
//! status byte: the last writable byte of the chain. Any of them may be split across
//! descriptors.

use std::os::unix::fs::FileExt;

use super::device::{Block, Disk, SECTOR_SIZE, VIRTIO_BLK_ID_BYTES};
use super::metrics::BlockMetrics;
use crate::devices::virtio::chain::{self, Chain};
use crate::devices::virtio::queue;
use crate::memory::GuestMemory;

/// Request types.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Write to the disk.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Flush the host's write cache.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Read the device identifier.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: the request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: the request type is not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Size of the request header.
const HEADER_SIZE: u64 = 16;
/// Host-side staging buffer size: large requests are copied in pieces this big.
const BOUNCE_SIZE: usize = 128 << 10;

impl Block {
    /// Process every request the driver made available, put them in the used ring and raise
    /// the interrupt if any completed. Returns the number of chains consumed. Does nothing
    /// before activation.
    ///
    /// The event handler calls this when the queue eventfd fires.
    pub fn process_queue(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else {
            return 0;
        };
        let (disk, m) = (&mut self.disk, &self.metrics);
        let mem = &active.mem;
        let done = queue::drain(&mut active.queue, mem, |desc_chain| {
            m.requests.inc();
            let head = desc_chain.head_index();
            match chain::parse(desc_chain, mem) {
                Ok(chain) => disk.execute(&chain, mem, m),
                Err(e) => {
                    m.bad_chains.inc();
                    tracing::warn!(head, error = %e, "virtio-blk: skipping malformed request");
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

fn used_len(bytes: u64) -> u32 {
    // Chains longer than 4 GiB are rejected by virtio-queue, so this never saturates in practice.
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The staging buffer for the next piece of at most `remaining` bytes.
fn bounce_buf(bounce: &mut Vec<u8>, remaining: u64) -> &mut [u8] {
    let n = remaining.min(BOUNCE_SIZE as u64) as usize;
    if bounce.len() < n {
        bounce.resize(n, 0);
    }
    &mut bounce[..n]
}

impl Disk {
    /// Run one request and write its status byte; returns the used length (bytes written into
    /// the chain, status included).
    pub(super) fn execute(&mut self, chain: &Chain, mem: &GuestMemory, m: &BlockMetrics) -> u32 {
        let writable = chain.writable_len();
        if writable == 0 {
            m.invalid_requests.inc();
            tracing::warn!("virtio-blk: request has no status byte");
            return 0;
        }
        let status_offset = writable - 1;
        let (status, data_written) = self.handle(chain, mem, m, status_offset);
        if !chain.write_at(mem, status_offset, &[status]) {
            m.guest_memory_errors.inc();
            tracing::warn!("virtio-blk: cannot write the status byte");
            return used_len(data_written);
        }
        used_len(data_written + 1)
    }

    /// Returns the status and the number of data bytes written to the guest.
    fn handle(
        &mut self,
        chain: &Chain,
        mem: &GuestMemory,
        m: &BlockMetrics,
        status_offset: u64,
    ) -> (u8, u64) {
        let readable = chain.readable_len();
        if readable < HEADER_SIZE {
            m.invalid_requests.inc();
            tracing::warn!(readable, "virtio-blk: request header is missing or short");
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        let mut header = [0u8; HEADER_SIZE as usize];
        if !chain.read_at(mem, 0, &mut header) {
            m.guest_memory_errors.inc();
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        let [t0, t1, t2, t3, _, _, _, _, s @ ..] = header;
        let request_type = u32::from_le_bytes([t0, t1, t2, t3]);
        let sector = u64::from_le_bytes(s);
        // Data in the wrong direction would otherwise "succeed" with zero bytes moved.
        let wrong_direction = match request_type {
            VIRTIO_BLK_T_IN => readable != HEADER_SIZE,
            VIRTIO_BLK_T_OUT => status_offset != 0,
            _ => false,
        };
        if wrong_direction {
            m.invalid_requests.inc();
            tracing::warn!(
                request_type,
                readable,
                writable = status_offset + 1,
                "virtio-blk: data buffers in the wrong direction"
            );
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        tracing::trace!(request_type, sector, "virtio-blk request");
        match request_type {
            VIRTIO_BLK_T_IN => self.read(chain, mem, m, sector, status_offset),
            VIRTIO_BLK_T_OUT => (self.write(chain, mem, m, sector, readable - HEADER_SIZE), 0),
            VIRTIO_BLK_T_FLUSH => (self.flush(m), 0),
            VIRTIO_BLK_T_GET_ID => {
                let n = status_offset.min(VIRTIO_BLK_ID_BYTES as u64);
                if chain.write_at(mem, 0, &self.id[..n as usize]) {
                    m.get_ids.inc();
                    (VIRTIO_BLK_S_OK, n)
                } else {
                    m.guest_memory_errors.inc();
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
            other => {
                m.unsupported.inc();
                tracing::debug!(request_type = other, "virtio-blk: unsupported request type");
                (VIRTIO_BLK_S_UNSUPP, 0)
            }
        }
    }

    /// Byte offset in the image of `len` bytes at `sector`, if they lie inside the disk and
    /// `len` is whole sectors.
    fn range(&self, m: &BlockMetrics, sector: u64, len: u64) -> Option<u64> {
        if len % SECTOR_SIZE != 0 {
            m.invalid_requests.inc();
            tracing::warn!(len, "virtio-blk: data length is not a multiple of 512");
            return None;
        }
        let in_range = sector
            .checked_add(len / SECTOR_SIZE)
            .is_some_and(|end| end <= self.capacity_sectors);
        if !in_range {
            m.out_of_range.inc();
            tracing::warn!(
                sector,
                len,
                capacity = self.capacity_sectors,
                "virtio-blk: request beyond the end of the disk"
            );
            return None;
        }
        // Cannot overflow: sector < capacity_sectors = file length / 512.
        Some(sector * SECTOR_SIZE)
    }

    fn read(
        &mut self,
        chain: &Chain,
        mem: &GuestMemory,
        m: &BlockMetrics,
        sector: u64,
        len: u64,
    ) -> (u8, u64) {
        let Some(offset) = self.range(m, sector, len) else {
            return (VIRTIO_BLK_S_IOERR, 0);
        };
        let mut done = 0u64;
        while done < len {
            let buf = bounce_buf(&mut self.bounce, len - done);
            if let Err(e) = self.file.read_exact_at(buf, offset + done) {
                m.io_errors.inc();
                tracing::warn!(path = %self.path.display(), error = %e, "virtio-blk: read failed");
                return (VIRTIO_BLK_S_IOERR, done);
            }
            if !chain.write_at(mem, done, buf) {
                m.guest_memory_errors.inc();
                return (VIRTIO_BLK_S_IOERR, done);
            }
            done += buf.len() as u64;
        }
        m.reads.inc();
        m.read_bytes.add(len);
        (VIRTIO_BLK_S_OK, len)
    }

    fn write(
        &mut self,
        chain: &Chain,
        mem: &GuestMemory,
        m: &BlockMetrics,
        sector: u64,
        len: u64,
    ) -> u8 {
        if self.read_only {
            m.read_only_rejected.inc();
            tracing::warn!(sector, "virtio-blk: write to a read-only disk");
            return VIRTIO_BLK_S_IOERR;
        }
        let Some(offset) = self.range(m, sector, len) else {
            return VIRTIO_BLK_S_IOERR;
        };
        let mut done = 0u64;
        while done < len {
            let buf = bounce_buf(&mut self.bounce, len - done);
            if !chain.read_at(mem, HEADER_SIZE + done, buf) {
                m.guest_memory_errors.inc();
                return VIRTIO_BLK_S_IOERR;
            }
            if let Err(e) = self.file.write_all_at(buf, offset + done) {
                m.io_errors.inc();
                tracing::warn!(path = %self.path.display(), error = %e, "virtio-blk: write failed");
                return VIRTIO_BLK_S_IOERR;
            }
            done += buf.len() as u64;
        }
        m.writes.inc();
        m.write_bytes.add(len);
        VIRTIO_BLK_S_OK
    }

    fn flush(&mut self, m: &BlockMetrics) -> u8 {
        if !self.read_only {
            if let Err(e) = self.file.sync_data() {
                m.io_errors.inc();
                tracing::warn!(path = %self.path.display(), error = %e, "virtio-blk: flush failed");
                return VIRTIO_BLK_S_IOERR;
            }
        }
        m.flushes.inc();
        VIRTIO_BLK_S_OK
    }
}
