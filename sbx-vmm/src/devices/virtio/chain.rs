//! Validating descriptor chains and moving bytes through them.
//!
//! A chain is read from guest memory once, checked, and turned into lists of device-readable
//! and device-writable segments. Devices then copy through those lists by byte offset, so a
//! header, data and status byte may be split across any number of descriptors. Re-reading the
//! descriptor table later would let a racing guest change the chain under our feet; copying the
//! segments out first avoids that.

use std::ops::Deref;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::memory::GuestMemory;

/// Longest chain we accept, counting descriptors in an indirect table. Linux uses at most the
/// queue size (256) plus a header and a status descriptor.
pub(crate) const MAX_CHAIN_DESCRIPTORS: usize = 1024;

/// Why a descriptor chain was rejected before its request was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChainError {
    #[error("descriptor chain has no usable descriptor (bad head index or indirect table)")]
    Empty,
    #[error("descriptor chain is cut short (loop, bad next index, bad indirect table)")]
    Truncated,
    #[error("descriptor chain is longer than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    TooLong,
    #[error("descriptor has zero length")]
    ZeroLength,
    #[error("device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    #[error("descriptor buffer lies outside guest memory")]
    OutOfRange,
}

/// One guest buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A validated chain: its readable then its writable buffers.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
}

impl Chain {
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Read `buf.len()` bytes at `offset` into the readable buffers.
    pub fn read_at(&self, mem: &GuestMemory, offset: u64, buf: &mut [u8]) -> bool {
        copy(&self.readable, offset, buf.len(), |addr, range| {
            mem.read_slice(&mut buf[range], addr).is_ok()
        })
    }

    /// Write `buf` at `offset` into the writable buffers.
    pub fn write_at(&self, mem: &GuestMemory, offset: u64, buf: &[u8]) -> bool {
        copy(&self.writable, offset, buf.len(), |addr, range| {
            mem.write_slice(&buf[range], addr).is_ok()
        })
    }
}

/// Walk `segs` from byte `offset` for `len` bytes, calling `f(guest_addr, buf_range)` per piece.
/// False if the range does not fit in the segments or `f` fails.
fn copy(
    segs: &[Segment],
    mut offset: u64,
    len: usize,
    mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> bool,
) -> bool {
    let mut done = 0usize;
    for seg in segs {
        if done == len {
            break;
        }
        let seg_len = u64::from(seg.len);
        if offset >= seg_len {
            offset -= seg_len;
            continue;
        }
        // Both fit in usize: seg_len - offset <= u32::MAX.
        let n = ((seg_len - offset) as usize).min(len - done);
        let Some(addr) = seg.addr.0.checked_add(offset) else {
            return false;
        };
        if !f(GuestAddress(addr), done..done + n) {
            return false;
        }
        done += n;
        offset = 0;
    }
    done == len
}

/// Read the chain's descriptors once and check them: no loops or dangling `next`, at most
/// [`MAX_CHAIN_DESCRIPTORS`], no zero-length buffers, readable before writable, every buffer
/// inside guest memory.
pub(crate) fn parse<M>(chain: DescriptorChain<M>, mem: &GuestMemory) -> Result<Chain, ChainError>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let mut out = Chain::default();
    let mut last: Option<Descriptor> = None;
    let mut count = 0usize;
    // The iterator stops after `queue size` descriptors (loops) or at the first descriptor it
    // cannot read or follow; a last yielded descriptor that still has NEXT set tells us that.
    for desc in chain {
        count += 1;
        if count > MAX_CHAIN_DESCRIPTORS {
            return Err(ChainError::TooLong);
        }
        if desc.len() == 0 {
            return Err(ChainError::ZeroLength);
        }
        if !mem.check_range(desc.addr(), desc.len() as usize) {
            return Err(ChainError::OutOfRange);
        }
        let seg = Segment {
            addr: desc.addr(),
            len: desc.len(),
        };
        if desc.is_write_only() {
            out.writable.push(seg);
        } else if out.writable.is_empty() {
            out.readable.push(seg);
        } else {
            return Err(ChainError::ReadableAfterWritable);
        }
        last = Some(desc);
    }
    match last {
        None => Err(ChainError::Empty),
        Some(d) if d.has_next() => Err(ChainError::Truncated),
        Some(_) => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(addr: u64, len: u32) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
        }
    }

    #[test]
    fn copy_walks_segments() {
        let segs = [seg(0x100, 4), seg(0x200, 2), seg(0x300, 8)];
        let mut pieces = Vec::new();
        assert!(copy(&segs, 3, 6, |a, r| {
            pieces.push((a.0, r));
            true
        }));
        assert_eq!(pieces, vec![(0x103, 0..1), (0x200, 1..3), (0x300, 3..6)]);
        assert!(!copy(&segs, 10, 5, |_, _| true));
        assert!(copy(&segs, 14, 0, |_, _| true));
        assert!(!copy(&segs, 0, 1, |_, _| false));
    }
}
