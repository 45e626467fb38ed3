//! Configuration of a virtio-fs device.

use std::path::PathBuf;

/// Longest mount tag virtio-fs can carry (virtio 1.2, section 5.11.4).
pub const FS_MAX_TAG_LEN: usize = 36;

/// Default size of each queue offered to the driver.
pub const FS_QUEUE_SIZE: u16 = 1024;

/// A virtio-fs device whose requests a vhost-user backend (`virtiofsd`) serves.
///
/// The guest mounts it with `mount -t virtiofs <tag> <dir>`. The backend must already listen
/// on `socket_path` when the VM is built (see [`Virtiofsd`](crate::virtiofsd::Virtiofsd)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsConfig {
    /// Mount tag the guest sees: 1 to 36 bytes of UTF-8.
    pub tag: String,
    /// The backend's vhost-user Unix socket.
    pub socket_path: PathBuf,
    /// Maximum size of each queue (a power of two, at most 32768).
    pub queue_size: u16,
}

impl FsConfig {
    /// A device with mount tag `tag` served by the backend listening on `socket_path`.
    pub fn new(tag: impl Into<String>, socket_path: impl Into<PathBuf>) -> Self {
        Self {
            tag: tag.into(),
            socket_path: socket_path.into(),
            queue_size: FS_QUEUE_SIZE,
        }
    }

    /// Maximum size of each queue (default [`FS_QUEUE_SIZE`]).
    pub fn queue_size(mut self, size: u16) -> Self {
        self.queue_size = size;
        self
    }

    /// The configuration space: `tag[36]` (NUL-padded) then `num_request_queues` (le32).
    pub(super) fn config_space(&self, num_request_queues: u32) -> [u8; FS_MAX_TAG_LEN + 4] {
        let mut space = [0u8; FS_MAX_TAG_LEN + 4];
        let tag = self.tag.as_bytes();
        let n = tag.len().min(FS_MAX_TAG_LEN);
        space[..n].copy_from_slice(&tag[..n]);
        space[FS_MAX_TAG_LEN..].copy_from_slice(&num_request_queues.to_le_bytes());
        space
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_layout() {
        let c = FsConfig::new("workspace", "/run/fs.sock");
        let s = c.config_space(1);
        assert_eq!(&s[..9], b"workspace");
        assert!(s[9..36].iter().all(|&b| b == 0));
        assert_eq!(&s[36..], &[1, 0, 0, 0]);
        let full = "x".repeat(FS_MAX_TAG_LEN);
        let s = FsConfig::new(full.clone(), "s").config_space(2);
        assert_eq!(&s[..36], full.as_bytes());
        assert_eq!(&s[36..], &[2, 0, 0, 0]);
    }
}
