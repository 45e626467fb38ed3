//! The virtio-blk device model: configuration, features, activation.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::metrics::BlockMetrics;
use crate::devices::virtio::device::{
    device_type, features, read_config_bytes, take_queues, ActivateError, VirtioDevice,
};
use crate::devices::virtio::error::VirtioError;
use crate::devices::virtio::interrupt::Interrupt;
use crate::memory::GuestMemory;

/// Maximum number of segments in a request (config field `seg_max`).
pub const VIRTIO_BLK_F_SEG_MAX: u32 = 2;
/// The disk is read-only.
pub const VIRTIO_BLK_F_RO: u32 = 5;
/// The device supports `VIRTIO_BLK_T_FLUSH`.
pub const VIRTIO_BLK_F_FLUSH: u32 = 9;

/// Sector size of the virtio-blk protocol; capacity and request offsets count these.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the one request queue.
pub const BLOCK_QUEUE_SIZE: u16 = 256;
/// Length of the identifier returned by `VIRTIO_BLK_T_GET_ID`.
pub const VIRTIO_BLK_ID_BYTES: usize = 20;

/// Size of `struct virtio_blk_config` up to and including `seg_max`.
const CONFIG_SPACE_SIZE: usize = 16;

/// How to build a [`Block`] device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockConfig {
    /// Raw disk image (regular file or block device).
    pub path: PathBuf,
    /// Open the image read-only and offer `VIRTIO_BLK_F_RO`.
    pub read_only: bool,
    /// Identifier returned by `VIRTIO_BLK_T_GET_ID` (at most 20 bytes; Linux shows it as
    /// `/sys/block/vdX/serial`).
    pub serial: Option<String>,
}

impl BlockConfig {
    /// A read-write disk backed by `path`, without a serial.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read_only: false,
            serial: None,
        }
    }

    /// Set whether the disk is read-only.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Set the serial reported to the guest.
    pub fn serial(mut self, serial: impl Into<String>) -> Self {
        self.serial = Some(serial.into());
        self
    }
}

/// The backing image and everything a request needs besides the queue.
pub(super) struct Disk {
    pub path: PathBuf,
    pub file: File,
    pub read_only: bool,
    pub capacity_sectors: u64,
    pub id: [u8; VIRTIO_BLK_ID_BYTES],
    pub bounce: Vec<u8>,
}

pub(super) struct Active {
    pub mem: GuestMemory,
    pub interrupt: Interrupt,
    pub queue: Queue,
}

/// A virtio-blk device over a raw image file.
///
/// Supports `IN`, `OUT`, `FLUSH` and `GET_ID`; other request types are answered `UNSUPP`.
/// Queue processing runs on the event-manager thread (see the `MutEventSubscriber` impl) or
/// through [`process_queue`](Self::process_queue).
pub struct Block {
    pub(super) disk: Disk,
    avail_features: u64,
    acked_features: u64,
    config_space: [u8; CONFIG_SPACE_SIZE],
    queue_max_sizes: [u16; 1],
    pub(super) queue_evts: [EventFd; 1],
    pub(super) active: Option<Active>,
    pub(super) metrics: Arc<BlockMetrics>,
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("path", &self.disk.path)
            .field("read_only", &self.disk.read_only)
            .field("capacity_sectors", &self.disk.capacity_sectors)
            .field("activated", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

fn open_image(path: &Path, read_only: bool) -> Result<(File, u64), VirtioError> {
    let open_err = |source| VirtioError::OpenDisk {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(open_err)?;
    if file.metadata().map_err(open_err)?.is_dir() {
        return Err(VirtioError::DiskIsDirectory {
            path: path.to_owned(),
        });
    }
    // Seeking works for block devices too, whose metadata length is 0.
    let len = file.seek(SeekFrom::End(0)).map_err(open_err)?;
    Ok((file, len))
}

impl Block {
    /// Open the image described by `config`.
    pub fn new(config: BlockConfig) -> Result<Self, VirtioError> {
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
        if let Some(serial) = &config.serial {
            let bytes = serial.as_bytes();
            if bytes.len() > VIRTIO_BLK_ID_BYTES {
                return Err(VirtioError::SerialTooLong { len: bytes.len() });
            }
            id[..bytes.len()].copy_from_slice(bytes);
        }
        let (file, len) = open_image(&config.path, config.read_only)?;
        if len % SECTOR_SIZE != 0 {
            tracing::warn!(
                path = %config.path.display(),
                len,
                "disk image size is not a multiple of 512; the tail is not visible to the guest"
            );
        }
        let capacity_sectors = len / SECTOR_SIZE;

        let mut avail_features = (1u64 << features::VIRTIO_F_VERSION_1)
            | (1u64 << features::VIRTIO_RING_F_INDIRECT_DESC)
            | (1u64 << features::VIRTIO_RING_F_EVENT_IDX)
            | (1u64 << VIRTIO_BLK_F_SEG_MAX)
            | (1u64 << VIRTIO_BLK_F_FLUSH);
        if config.read_only {
            avail_features |= 1u64 << VIRTIO_BLK_F_RO;
        }

        let mut config_space = [0u8; CONFIG_SPACE_SIZE];
        config_space[0..8].copy_from_slice(&capacity_sectors.to_le_bytes());
        // size_max (8..12) stays 0: not offered. Two descriptors go to header and status.
        let seg_max = u32::from(BLOCK_QUEUE_SIZE) - 2;
        config_space[12..16].copy_from_slice(&seg_max.to_le_bytes());

        let evt = EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd)?;
        Ok(Self {
            disk: Disk {
                path: config.path,
                file,
                read_only: config.read_only,
                capacity_sectors,
                id,
                bounce: Vec::new(),
            },
            avail_features,
            acked_features: 0,
            config_space,
            queue_max_sizes: [BLOCK_QUEUE_SIZE],
            queue_evts: [evt],
            active: None,
            metrics: Arc::new(BlockMetrics::default()),
        })
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.disk.capacity_sectors
    }

    /// Whether the disk is read-only.
    pub fn is_read_only(&self) -> bool {
        self.disk.read_only
    }

    /// Whether the driver activated the device (and did not reset it since).
    pub fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// This device's counters.
    pub fn metrics(&self) -> Arc<BlockMetrics> {
        self.metrics.clone()
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !read_config_bytes(&self.config_space, offset, data) {
            self.metrics.config_errors.inc();
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-blk config read out of range"
            );
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.metrics.config_errors.inc();
        tracing::warn!(
            offset,
            len = data.len(),
            "virtio-blk config space is read-only"
        );
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
            tracing::warn!(error = %e, "virtio-blk: cannot kick the queue after activation");
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }
}
