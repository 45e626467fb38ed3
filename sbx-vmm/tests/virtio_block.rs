//! virtio-blk against a real guest memory and a temp image, driven like a guest driver through
//! virtio-queue's mock split queue.

mod virtio_util;

use std::fs;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use sbx_vmm::devices::virtio::block::{
    SECTOR_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use sbx_vmm::devices::virtio::{
    device_type, features, Block, BlockConfig, Interrupt, VirtioDevice, VirtioError,
    VIRTIO_MMIO_INT_VRING,
};
use sbx_vmm::memory::GuestMemory;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::tempfile::TempFile;

use virtio_util::*;

const SECTORS: u64 = 64;
const HDR: u64 = BUF_BASE;
const DATA: u64 = BUF_BASE + 0x1000;
const STATUS: u64 = BUF_BASE + 0x8000;
const QSIZE: u16 = 256;

struct Disk {
    file: TempFile,
}

impl Disk {
    /// An image whose byte `i` is `pattern(i)`.
    fn new(sectors: u64) -> Self {
        let file = TempFile::new().unwrap();
        let data: Vec<u8> = (0..sectors * SECTOR_SIZE).map(pattern).collect();
        fs::write(file.as_path(), data).unwrap();
        Self { file }
    }

    fn config(&self) -> BlockConfig {
        BlockConfig::new(self.file.as_path())
    }

    fn contents(&self) -> Vec<u8> {
        fs::read(self.file.as_path()).unwrap()
    }
}

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn header(mem: &GuestMemory, addr: u64, request_type: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&request_type.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    write_bytes(mem, addr, &h);
}

/// Activate `block` on a fresh mock queue at guest address 0.
fn activate<'a>(
    mem: &'a GuestMemory,
    block: &mut Block,
) -> (MockSplitQueue<'a, GuestMemory>, Interrupt) {
    let q = MockSplitQueue::create(mem, GuestAddress(0), QSIZE);
    let irq = Interrupt::new().unwrap();
    let queue: Queue = q.create_queue().unwrap();
    block
        .activate(mem.clone(), irq.clone(), vec![queue])
        .unwrap();
    (q, irq)
}

fn status(mem: &GuestMemory) -> u8 {
    read_u8(mem, STATUS)
}

fn reset_status(mem: &GuestMemory) {
    write_bytes(mem, STATUS, &[0xee]);
}

#[test]
fn config_space_and_features() {
    let disk = Disk::new(SECTORS);
    let block = Block::new(disk.config().serial("abc")).unwrap();
    assert_eq!(block.device_type(), device_type::BLOCK);
    assert_eq!(block.capacity_sectors(), SECTORS);
    let f = block.avail_features();
    assert_ne!(f & (1 << features::VIRTIO_F_VERSION_1), 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    let mut cap = [0u8; 8];
    block.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS);
    // Byte-wise and 4-byte reads see the same value.
    let mut lo = [0u8; 4];
    block.read_config(0, &mut lo);
    assert_eq!(u32::from_le_bytes(lo), SECTORS as u32);
    let mut b = [0xffu8; 1];
    block.read_config(1, &mut b);
    assert_eq!(b[0], 0);
    // Out of range reads give zeros and are counted, not a panic.
    let mut far = [0xffu8; 4];
    block.read_config(0x1000, &mut far);
    assert_eq!(far, [0; 4]);
    block.read_config(u64::MAX, &mut far);
    assert_eq!(block.metrics().config_errors.get(), 2);
}

#[test]
fn open_errors_name_the_path() {
    let missing = std::env::temp_dir().join("sbx-virtio-test-no-such-image.raw");
    let err = Block::new(BlockConfig::new(&missing)).unwrap_err();
    assert!(matches!(err, VirtioError::OpenDisk { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains("sbx-virtio-test-no-such-image.raw"));
    assert!(std::error::Error::source(&err).is_some());

    let dir = std::env::temp_dir();
    let err = Block::new(BlockConfig::new(&dir).read_only(true)).unwrap_err();
    assert!(
        matches!(err, VirtioError::DiskIsDirectory { .. }),
        "{err:?}"
    );

    let disk = Disk::new(1);
    let err = Block::new(disk.config().serial("x".repeat(21))).unwrap_err();
    assert!(
        matches!(err, VirtioError::SerialTooLong { len: 21 }),
        "{err:?}"
    );
}

#[test]
fn read_sectors() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    let (q, irq) = activate(&mem, &mut block);

    header(&mem, HDR, VIRTIO_BLK_T_IN, 3);
    reset_status(&mem);
    add_chain(&q, 0, &[rd(HDR, 16), wr(DATA, 1024), wr(STATUS, 1)]);
    assert_eq!(block.process_queue(), 1);

    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    let expect: Vec<u8> = (3 * 512..5 * 512).map(pattern).collect();
    assert_eq!(read_bytes(&mem, DATA, 1024), expect);
    assert_eq!(used_idx(&q), 1);
    assert_eq!(used_elem(&q, 0), (0, 1025));
    assert_eq!(irq.status() & VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_INT_VRING);
    assert_eq!(irq.eventfd().read().unwrap(), 1);
    let m = block.metrics();
    assert_eq!((m.reads.get(), m.read_bytes.get()), (1, 1024));
}

#[test]
fn write_sectors_and_flush() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    let (q, _irq) = activate(&mem, &mut block);

    header(&mem, HDR, VIRTIO_BLK_T_OUT, 7);
    write_bytes(&mem, DATA, &[0xab; 1024]);
    reset_status(&mem);
    add_chain(&q, 0, &[rd(HDR, 16), rd(DATA, 1024), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    assert_eq!(used_elem(&q, 0), (0, 1));

    let contents = disk.contents();
    assert!(contents[7 * 512..9 * 512].iter().all(|&b| b == 0xab));
    assert_eq!(contents[7 * 512 - 1], pattern(7 * 512 - 1));
    assert_eq!(contents[9 * 512], pattern(9 * 512));

    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    reset_status(&mem);
    add_chain(&q, 3, &[rd(HDR, 16), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    assert_eq!(used_elem(&q, 1), (3, 1));
    let m = block.metrics();
    assert_eq!(
        (m.writes.get(), m.write_bytes.get(), m.flushes.get()),
        (1, 1024, 1)
    );
}

#[test]
fn get_id_returns_the_serial() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config().serial("sbx-disk-7")).unwrap();
    let (q, _irq) = activate(&mem, &mut block);

    write_bytes(&mem, DATA, &[0xff; 20]);
    header(&mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    add_chain(&q, 0, &[rd(HDR, 16), wr(DATA, 20), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    let mut expect = b"sbx-disk-7".to_vec();
    expect.resize(20, 0);
    assert_eq!(read_bytes(&mem, DATA, 20), expect);
    assert_eq!(used_elem(&q, 0), (0, 21));

    // A short buffer gets a prefix, not an overflow.
    write_bytes(&mem, DATA, &[0xff; 20]);
    add_chain(&q, 3, &[rd(HDR, 16), wr(DATA, 4), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(read_bytes(&mem, DATA, 5), b"sbx-\xff");
    assert_eq!(used_elem(&q, 1), (3, 5));
}

#[test]
fn read_only_disk_rejects_writes() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let before = disk.contents();
    let mut block = Block::new(disk.config().read_only(true)).unwrap();
    assert!(block.is_read_only());
    assert_ne!(block.avail_features() & (1 << VIRTIO_BLK_F_RO), 0);
    let (q, _irq) = activate(&mem, &mut block);

    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    write_bytes(&mem, DATA, &[0x55; 512]);
    add_chain(&q, 0, &[rd(HDR, 16), rd(DATA, 512), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    assert_eq!(used_elem(&q, 0), (0, 1));
    assert_eq!(disk.contents(), before);
    assert_eq!(block.metrics().read_only_rejected.get(), 1);

    // Reads and flushes still work.
    header(&mem, HDR + 0x100, VIRTIO_BLK_T_IN, 1);
    add_chain(&q, 3, &[rd(HDR + 0x100, 16), wr(DATA, 512), wr(STATUS, 1)]);
    header(&mem, HDR + 0x200, VIRTIO_BLK_T_FLUSH, 0);
    add_chain(&q, 6, &[rd(HDR + 0x200, 16), wr(STATUS + 1, 1)]);
    block.process_queue();
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    assert_eq!(read_u8(&mem, STATUS + 1), VIRTIO_BLK_S_OK);
    assert_eq!(read_bytes(&mem, DATA, 512), before[512..1024]);
    assert_eq!(used_idx(&q), 3);
}

#[test]
fn out_of_range_and_bad_lengths_are_ioerr() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    let (q, _irq) = activate(&mem, &mut block);
    let cases: [(u32, u64, u32); 5] = [
        (VIRTIO_BLK_T_IN, SECTORS, 512),      // first sector past the end
        (VIRTIO_BLK_T_IN, SECTORS - 1, 1024), // straddles the end
        (VIRTIO_BLK_T_OUT, u64::MAX, 512),    // sector arithmetic would overflow
        (VIRTIO_BLK_T_OUT, u64::MAX / 512 + 1, 512),
        (VIRTIO_BLK_T_IN, 0, 100), // not whole sectors
    ];
    let before = disk.contents();
    for (i, (t, sector, len)) in cases.into_iter().enumerate() {
        header(&mem, HDR, t, sector);
        reset_status(&mem);
        let data = if t == VIRTIO_BLK_T_IN {
            wr(DATA, len)
        } else {
            rd(DATA, len)
        };
        add_chain(&q, 0, &[rd(HDR, 16), data, wr(STATUS, 1)]);
        block.process_queue();
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR, "case {i}");
        assert_eq!(used_idx(&q), i as u16 + 1);
    }
    assert_eq!(disk.contents(), before);
    let m = block.metrics();
    assert_eq!(m.out_of_range.get(), 4);
    assert_eq!(m.invalid_requests.get(), 1);

    // The last sector is still reachable.
    header(&mem, HDR, VIRTIO_BLK_T_IN, SECTORS - 1);
    add_chain(&q, 0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
}

#[test]
fn unsupported_request_type() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    let (q, _irq) = activate(&mem, &mut block);
    // DISCARD (11), WRITE_ZEROES (13) and garbage.
    for (i, t) in [11u32, 13, 0xdead_beef].into_iter().enumerate() {
        header(&mem, HDR, t, 0);
        reset_status(&mem);
        add_chain(&q, 0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
        block.process_queue();
        assert_eq!(status(&mem), VIRTIO_BLK_S_UNSUPP);
        assert_eq!(used_elem(&q, i as u16), (0, 1));
    }
    assert_eq!(block.metrics().unsupported.get(), 3);
}

/// Header, data and status split across descriptors in every way a driver may choose.
#[test]
fn chain_shapes() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    let (q, _irq) = activate(&mem, &mut block);
    let mut n = 0u16;

    // IN: 1024 data bytes + status in the writable part, laid out contiguously from DATA so
    // that the status is at DATA + 1024 whatever the split.
    let in_shapes: Vec<Vec<u32>> = vec![
        vec![1025],
        vec![1024, 1],
        vec![1, 1023, 1],
        vec![512, 512, 1],
        vec![100, 300, 112, 500, 13],
        vec![7; 146].into_iter().chain([3]).collect(),
    ];
    let hdr_shapes: [&[u32]; 3] = [&[16], &[8, 8], &[1, 2, 3, 4, 6]];
    for (i, wsplit) in in_shapes.iter().enumerate() {
        let hsplit = hdr_shapes[i % hdr_shapes.len()];
        assert_eq!(wsplit.iter().sum::<u32>(), 1025);
        let sector = i as u64;
        header(&mem, HDR, VIRTIO_BLK_T_IN, sector);
        write_bytes(&mem, DATA, &[0; 1025]);
        write_bytes(&mem, DATA + 1024, &[0xee]);
        let mut bufs = split(HDR, hsplit, false);
        bufs.extend(split(DATA, wsplit, true));
        add_chain(&q, 0, &bufs);
        block.process_queue();
        n += 1;
        assert_eq!(read_u8(&mem, DATA + 1024), VIRTIO_BLK_S_OK, "IN shape {i}");
        let expect: Vec<u8> = (sector * 512..sector * 512 + 1024).map(pattern).collect();
        assert_eq!(read_bytes(&mem, DATA, 1024), expect, "IN shape {i}");
        assert_eq!(used_elem(&q, n - 1), (0, 1025));
    }

    // OUT: header + data contiguous in the readable part, split anywhere.
    let out_shapes: Vec<Vec<u32>> = vec![
        vec![16 + 512],
        vec![16, 512],
        vec![10, 10, 508],
        vec![16, 1, 511],
        vec![3; 176],
    ];
    for (i, rsplit) in out_shapes.iter().enumerate() {
        assert_eq!(rsplit.iter().sum::<u32>(), 528);
        let sector = 40 + i as u64;
        header(&mem, HDR, VIRTIO_BLK_T_OUT, sector);
        write_bytes(&mem, HDR + 16, &[0x10 + i as u8; 512]);
        reset_status(&mem);
        let mut bufs = split(HDR, rsplit, false);
        bufs.push(wr(STATUS, 1));
        add_chain(&q, 0, &bufs);
        block.process_queue();
        n += 1;
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK, "OUT shape {i}");
        let c = disk.contents();
        let at = (sector * 512) as usize;
        assert!(
            c[at..at + 512].iter().all(|&b| b == 0x10 + i as u8),
            "OUT shape {i}"
        );
    }
    assert_eq!(used_idx(&q), n);
    assert_eq!(block.metrics().bad_chains.get(), 0);
}

/// Consecutive buffers starting at `addr` with the given lengths.
fn split(addr: u64, lens: &[u32], write: bool) -> Vec<Buf> {
    let mut at = addr;
    lens.iter()
        .map(|&len| {
            let b = Buf {
                addr: at,
                len,
                write,
            };
            at += u64::from(len);
            b
        })
        .collect()
}

#[test]
fn indirect_chains() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    assert_ne!(
        block.avail_features() & (1 << features::VIRTIO_RING_F_INDIRECT_DESC),
        0
    );
    let (q, _irq) = activate(&mem, &mut block);

    header(&mem, HDR, VIRTIO_BLK_T_IN, 5);
    reset_status(&mem);
    let table = BUF_BASE + 0x20000;
    add_indirect_chain(
        &mem,
        &q,
        4,
        table,
        &[
            rd(HDR, 16),
            wr(DATA, 256),
            wr(DATA + 256, 256),
            wr(STATUS, 1),
        ],
    );
    block.process_queue();
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    let expect: Vec<u8> = (5 * 512..6 * 512).map(pattern).collect();
    assert_eq!(read_bytes(&mem, DATA, 512), expect);
    assert_eq!(used_elem(&q, 0), (4, 513));

    // An indirect table longer than any sane chain is refused.
    let long: Vec<Buf> = (0..2000).map(|i| wr(DATA + i, 1)).collect();
    write_bytes(&mem, DATA, &[0; 2000]);
    add_indirect_chain(&mem, &q, 5, table, &long);
    block.process_queue();
    assert_eq!(used_elem(&q, 1), (5, 0));
    assert_eq!(read_bytes(&mem, DATA, 2000), vec![0; 2000]);

    // An indirect descriptor inside an indirect table is refused.
    mem_write_raw(&mem, table, raw(table + 0x1000, 32, F_INDIRECT, 0));
    q.desc_table()
        .store(6, raw(table, 16, F_INDIRECT, 0))
        .unwrap();
    make_available(&q, 6);
    block.process_queue();
    assert_eq!(used_elem(&q, 2), (6, 0));
    assert_eq!(block.metrics().bad_chains.get(), 2);
}

fn mem_write_raw(mem: &GuestMemory, addr: u64, d: virtio_queue::desc::RawDescriptor) {
    use vm_memory::Bytes;
    mem.write_obj(d, GuestAddress(addr)).unwrap();
}

/// Every kind of broken chain: the request is skipped (used length 0) or answered IOERR, the
/// used ring still advances, and nothing panics.
#[test]
fn malformed_chains() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let before = disk.contents();
    let mut block = Block::new(disk.config()).unwrap();
    let (q, _irq) = activate(&mem, &mut block);
    let m = block.metrics();
    let n = std::cell::Cell::new(0u16);
    let expect_used = |q: &MockSplitQueue<'_, GuestMemory>, head: u32, len: u32| {
        n.set(n.get() + 1);
        assert_eq!(used_idx(q), n.get());
        assert_eq!(used_elem(q, n.get() - 1), (head, len));
    };

    // Data buffer outside guest memory.
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    reset_status(&mem);
    add_chain(
        &q,
        0,
        &[rd(HDR, 16), wr(MEM_SIZE - 256, 512), wr(STATUS, 1)],
    );
    block.process_queue();
    expect_used(&q, 0, 0);
    assert_eq!(
        status(&mem),
        0xee,
        "status must not be written for a skipped chain"
    );

    // Address that wraps around the address space.
    add_chain(&q, 0, &[rd(HDR, 16), wr(u64::MAX - 10, 512), wr(STATUS, 1)]);
    block.process_queue();
    expect_used(&q, 0, 0);

    // Header outside guest memory.
    add_chain(&q, 0, &[rd(MEM_SIZE + 0x1000, 16), wr(STATUS, 1)]);
    block.process_queue();
    expect_used(&q, 0, 0);

    // Zero-length buffer.
    add_chain(&q, 0, &[rd(HDR, 16), wr(DATA, 0), wr(STATUS, 1)]);
    block.process_queue();
    expect_used(&q, 0, 0);

    // Readable buffer after a writable one.
    add_chain(&q, 0, &[wr(STATUS, 1), rd(HDR, 16)]);
    block.process_queue();
    expect_used(&q, 0, 0);
    assert_eq!(m.bad_chains.get(), 5);

    // A loop: 10 -> 11 -> 10.
    q.desc_table()
        .store(10, raw(DATA, 512, F_NEXT | F_WRITE, 11))
        .unwrap();
    q.desc_table()
        .store(11, raw(DATA, 512, F_NEXT | F_WRITE, 10))
        .unwrap();
    make_available(&q, 10);
    block.process_queue();
    expect_used(&q, 10, 0);

    // `next` pointing past the end of the table.
    q.desc_table()
        .store(12, raw(HDR, 16, F_NEXT, QSIZE + 5))
        .unwrap();
    make_available(&q, 12);
    block.process_queue();
    expect_used(&q, 12, 0);

    // Indirect table outside guest memory.
    q.desc_table()
        .store(13, raw(MEM_SIZE, 64, F_INDIRECT, 0))
        .unwrap();
    make_available(&q, 13);
    block.process_queue();
    expect_used(&q, 13, 0);

    // Indirect table whose length is not a multiple of 16.
    q.desc_table()
        .store(14, raw(BUF_BASE + 0x20000, 20, F_INDIRECT, 0))
        .unwrap();
    make_available(&q, 14);
    block.process_queue();
    expect_used(&q, 14, 0);
    assert_eq!(m.bad_chains.get(), 9);

    // Head index out of the queue: nothing can be put in the used ring, but nothing breaks.
    make_available(&q, QSIZE + 1);
    block.process_queue();
    assert_eq!(used_idx(&q), n.get());
    assert_eq!(m.used_ring_errors.get(), 1);
    assert_eq!(m.bad_chains.get(), 10);

    // Well-formed chains with bad requests get IOERR where a status byte exists.
    add_chain(&q, 0, &[rd(HDR, 8), wr(STATUS, 1)]); // short header
    reset_status(&mem);
    block.process_queue();
    expect_used(&q, 0, 1);
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);

    add_chain(&q, 0, &[rd(HDR, 16), rd(DATA, 512)]); // no status byte
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    block.process_queue();
    expect_used(&q, 0, 0);

    add_chain(&q, 0, &[wr(STATUS, 1)]); // no header at all
    reset_status(&mem);
    block.process_queue();
    expect_used(&q, 0, 1);
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    assert_eq!(m.invalid_requests.get(), 3);

    // The device still works afterwards and never touched the disk.
    header(&mem, HDR, VIRTIO_BLK_T_IN, 2);
    add_chain(&q, 0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    block.process_queue();
    expect_used(&q, 0, 513);
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    assert_eq!(disk.contents(), before);
}

#[test]
fn bogus_avail_index_does_not_hang_or_panic() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    let (q, _irq) = activate(&mem, &mut block);
    // The driver claims far more buffers than the queue holds.
    q.avail().idx().store(QSIZE + 100);
    assert_eq!(block.process_queue(), 0);
    assert_eq!(used_idx(&q), 0);
}

#[test]
fn activation_rules() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    let irq = Interrupt::new().unwrap();
    assert!(block.activate(mem.clone(), irq.clone(), vec![]).is_err());
    let not_ready = Queue::new(QSIZE).unwrap();
    assert!(block
        .activate(mem.clone(), irq.clone(), vec![not_ready])
        .is_err());
    assert!(!block.is_activated());
    let (_q, _irq) = activate(&mem, &mut block);
    assert!(block.is_activated());
    let q2 = MockSplitQueue::create(&mem, GuestAddress(0x8000), QSIZE);
    assert!(block
        .activate(mem.clone(), irq.clone(), vec![q2.create_queue().unwrap()])
        .is_err());
    block.reset();
    assert!(!block.is_activated());
    assert_eq!(block.process_queue(), 0);
}

/// The device on an event manager: kicks before activation are drained and ignored, kicks
/// after activation process the queue.
#[test]
fn event_manager_drives_the_queue() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let block = Arc::new(Mutex::new(Block::new(disk.config()).unwrap()));
    let metrics = block.lock().unwrap().metrics();
    let mut em = EventManager::<Arc<Mutex<Block>>>::new().unwrap();
    em.add_subscriber(block.clone());

    block.lock().unwrap().queue_events()[0].write(1).unwrap();
    assert_eq!(em.run_with_timeout(100).unwrap(), 1);
    assert_eq!(metrics.events_before_activation.get(), 1);
    // Drained: nothing fires again.
    assert_eq!(em.run_with_timeout(0).unwrap(), 0);

    let (q, irq) = activate(&mem, &mut block.lock().unwrap());
    header(&mem, HDR, VIRTIO_BLK_T_IN, 1);
    add_chain(&q, 0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    block.lock().unwrap().queue_events()[0].write(1).unwrap();
    assert_eq!(em.run_with_timeout(100).unwrap(), 1);
    assert_eq!(used_idx(&q), 1);
    assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    assert_eq!(irq.status(), VIRTIO_MMIO_INT_VRING);
    assert_eq!(metrics.queue_events.get(), 2);
}

/// With `VIRTIO_RING_F_EVENT_IDX` the driver's `used_event` decides when to interrupt, and the
/// device publishes `avail_event` so the driver knows when to notify.
#[test]
fn event_index_suppresses_interrupts() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    assert_ne!(
        block.avail_features() & (1 << features::VIRTIO_RING_F_EVENT_IDX),
        0
    );
    let q = MockSplitQueue::create(&mem, GuestAddress(0), QSIZE);
    let irq = Interrupt::new().unwrap();
    let mut queue: Queue = q.create_queue().unwrap();
    queue.set_event_idx(true);
    block
        .activate(mem.clone(), irq.clone(), vec![queue])
        .unwrap();
    let used_event = q.avail_addr().0 + 4 + 2 * u64::from(QSIZE);
    let avail_event = q.used_addr().0 + 4 + 8 * u64::from(QSIZE);

    // used_event = 0: the first completion interrupts.
    write_bytes(&mem, used_event, &0u16.to_le_bytes());
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    add_chain(&q, 0, &[rd(HDR, 16), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(irq.eventfd().read().unwrap(), 1);
    assert_eq!(read_bytes(&mem, avail_event, 2), 1u16.to_le_bytes());

    // used_event = 5: completions 2..=5 do not interrupt, the 6th does.
    write_bytes(&mem, used_event, &5u16.to_le_bytes());
    for _ in 0..4 {
        add_chain(&q, 0, &[rd(HDR, 16), wr(STATUS, 1)]);
        block.process_queue();
    }
    assert!(irq.eventfd().read().is_err(), "no interrupt expected");
    add_chain(&q, 0, &[rd(HDR, 16), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(irq.eventfd().read().unwrap(), 1);
    assert_eq!(used_idx(&q), 6);
    assert_eq!(read_bytes(&mem, avail_event, 2), 6u16.to_le_bytes());
}

/// Without event index every completion interrupts and guest notifications are re-enabled
/// (used ring flags back to 0) once the ring is empty.
#[test]
fn notifications_reenabled_after_processing() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let mut block = Block::new(disk.config()).unwrap();
    let (q, irq) = activate(&mem, &mut block);
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    for i in 0..3 {
        add_chain(&q, 0, &[rd(HDR, 16), wr(STATUS, 1)]);
        block.process_queue();
        assert_eq!(irq.eventfd().read().unwrap(), 1, "completion {i}");
        assert_eq!(read_bytes(&mem, q.used_addr().0, 2), [0, 0]);
    }
}

/// Data placed in buffers of the wrong direction must not "succeed" with nothing moved.
#[test]
fn wrong_direction_data_is_ioerr() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let before = disk.contents();
    let mut block = Block::new(disk.config()).unwrap();
    let (q, _irq) = activate(&mem, &mut block);

    // IN with a device-readable data buffer.
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    reset_status(&mem);
    write_bytes(&mem, DATA, &[0x77; 512]);
    add_chain(&q, 0, &[rd(HDR, 16), rd(DATA, 512), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    assert_eq!(used_elem(&q, 0), (0, 1));
    assert_eq!(read_bytes(&mem, DATA, 512), vec![0x77; 512]);

    // OUT with a device-writable data buffer.
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    reset_status(&mem);
    add_chain(&q, 0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    block.process_queue();
    assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    assert_eq!(used_elem(&q, 1), (0, 1));
    assert_eq!(read_bytes(&mem, DATA, 512), vec![0x77; 512]);

    assert_eq!(disk.contents(), before);
    let m = block.metrics();
    assert_eq!(m.invalid_requests.get(), 2);
    assert_eq!(m.reads.get() + m.writes.get(), 0);
}

/// Activation kicks the queue so the event thread (not the vCPU thread that wrote DRIVER_OK)
/// picks up anything already available.
#[test]
fn activation_kicks_the_event_thread() {
    let mem = guest_memory();
    let disk = Disk::new(SECTORS);
    let block = Arc::new(Mutex::new(Block::new(disk.config()).unwrap()));
    let mut em = EventManager::<Arc<Mutex<Block>>>::new().unwrap();
    em.add_subscriber(block.clone());

    let (q, _irq) = activate(&mem, &mut block.lock().unwrap());
    assert_eq!(used_idx(&q), 0, "activation must not do I/O itself");
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    add_chain(&q, 0, &[rd(HDR, 16), wr(STATUS, 1)]);
    assert_eq!(em.run_with_timeout(100).unwrap(), 1);
    assert_eq!(used_idx(&q), 1);
}
