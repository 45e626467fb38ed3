//! Guest RAM: memfd-backed so that vhost-user backends can map the same pages.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress};

use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// The guest memory type used throughout the crate.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Smallest guest RAM we accept: enough for the boot structures below 1 MiB plus a tiny kernel.
pub const MIN_MEM_BYTES: u64 = 2 << 20;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// `memfd_create` or `ftruncate` failed.
    #[error("cannot create the guest memory file")]
    Memfd(#[source] std::io::Error),
    /// Mapping the regions failed.
    #[error("cannot map guest memory")]
    Map(#[source] vm_memory::mmap::FromRangesError),
}

/// Guest physical ranges (start, length) for `size` bytes of RAM, leaving the MMIO hole free.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
        ]
    }
}

/// Create `size` bytes of guest RAM backed by one anonymous memfd.
pub fn create_guest_memory(size: u64) -> Result<GuestMemory, MemoryError> {
    let file = memfd(c"sbx-guest-ram").map_err(MemoryError::Memfd)?;
    file.set_len(size).map_err(MemoryError::Memfd)?;
    let mut offset = 0u64;
    let mut regions = Vec::new();
    for (start, len) in ram_ranges(size) {
        let fo = FileOffset::new(file.try_clone().map_err(MemoryError::Memfd)?, offset);
        regions.push((start, len as usize, Some(fo)));
        offset += len;
    }
    GuestMemory::from_ranges_with_files(regions).map_err(MemoryError::Map)
}

fn memfd(name: &CStr) -> std::io::Result<File> {
    // SAFETY: `name` is a valid NUL-terminated string; the flags are valid for memfd_create.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn small_memory_is_one_region() {
        let mem = create_guest_memory(4 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        mem.write_obj(0xdead_beefu32, GuestAddress(0x3ffffc))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x3ffffc)).unwrap(),
            0xdead_beef
        );
        assert!(mem.read_obj::<u32>(GuestAddress(4 << 20)).is_err());
        assert!(mem.iter().all(|r| r.file_offset().is_some()));
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        let r = ram_ranges(MMIO_GAP_START + (1 << 30));
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(r[1], (GuestAddress(MMIO_GAP_END), 1 << 30));
    }
}
