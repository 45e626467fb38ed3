//! Driver-side helpers shared by the virtio integration tests: guest memory, descriptor chains
//! written through virtio-queue's mock split queue, and used-ring inspection.
#![allow(dead_code)]

use sbx_vmm::memory::{create_guest_memory, GuestMemory};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// Guest RAM size used by the tests.
pub const MEM_SIZE: u64 = 16 << 20;
/// Where test buffers start (the queue lives below).
pub const BUF_BASE: u64 = 0x10_0000;

pub fn guest_memory() -> GuestMemory {
    create_guest_memory(MEM_SIZE).unwrap()
}

/// One buffer of a chain: guest address, length, device-writable.
#[derive(Debug, Clone, Copy)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

pub fn rd(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        write: false,
    }
}

pub fn wr(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        write: true,
    }
}

pub fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// Link `bufs` into one chain at descriptor index `first` and make it available.
pub fn add_chain(q: &MockSplitQueue<'_, GuestMemory>, first: u16, bufs: &[Buf]) {
    let descs: Vec<_> = bufs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let last = i + 1 == bufs.len();
            let mut flags = if b.write { F_WRITE } else { 0 };
            if !last {
                flags |= F_NEXT;
            }
            let next = if last { 0 } else { first + i as u16 + 1 };
            raw(b.addr, b.len, flags, next)
        })
        .collect();
    q.add_desc_chains(&descs, first).unwrap();
}

/// Make an already written descriptor at `head` available again.
pub fn make_available(q: &MockSplitQueue<'_, GuestMemory>, head: u16) {
    let idx = q.avail().idx().load();
    q.avail()
        .ring()
        .ref_at(usize::from(idx) % 256)
        .unwrap()
        .store(head);
    q.avail().idx().store(idx.wrapping_add(1));
}

/// Put `bufs` in an indirect table at `table` and make a one-descriptor chain at `head`
/// pointing to it available.
pub fn add_indirect_chain(
    mem: &GuestMemory,
    q: &MockSplitQueue<'_, GuestMemory>,
    head: u16,
    table: u64,
    bufs: &[Buf],
) {
    for (i, b) in bufs.iter().enumerate() {
        let last = i + 1 == bufs.len();
        let mut flags = if b.write { F_WRITE } else { 0 };
        if !last {
            flags |= F_NEXT;
        }
        let next = if last { 0 } else { i as u16 + 1 };
        mem.write_obj(
            raw(b.addr, b.len, flags, next),
            GuestAddress(table + 16 * i as u64),
        )
        .unwrap();
    }
    q.desc_table()
        .store(head, raw(table, 16 * bufs.len() as u32, F_INDIRECT, 0))
        .unwrap();
    make_available(q, head);
}

/// Number of used-ring entries the device published.
pub fn used_idx(q: &MockSplitQueue<'_, GuestMemory>) -> u16 {
    q.used().idx().load()
}

/// The used-ring entry at position `i`: (head index, length).
pub fn used_elem(q: &MockSplitQueue<'_, GuestMemory>, i: u16) -> (u32, u32) {
    let e = q.used().ring().ref_at(usize::from(i)).unwrap().load();
    (e.id(), e.len())
}

pub fn read_bytes(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

pub fn write_bytes(mem: &GuestMemory, addr: u64, data: &[u8]) {
    mem.write_slice(data, GuestAddress(addr)).unwrap();
}

pub fn read_u8(mem: &GuestMemory, addr: u64) -> u8 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}
