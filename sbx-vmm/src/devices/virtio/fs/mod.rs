//! virtio-fs through vhost-user: the guest's FUSE requests are served by an external backend
//! (`virtiofsd`) that maps guest memory and processes the queues itself.

mod config;
mod device;
mod event_handler;
mod metrics;

pub use config::{FsConfig, FS_MAX_TAG_LEN, FS_QUEUE_SIZE};
pub use device::Fs;
pub use metrics::FsMetrics;
