//! A test "guest driver" for the vsock device: split rings written straight into guest memory
//! (so they can wrap and be refilled forever, unlike the one-shot mock queue), packet
//! helpers, and the event-manager loop that runs the device as the VMM would.
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use sbx_vmm::devices::virtio::vsock::{
    parse_header, Op, PacketHeader, Vsock, VsockConfig, VSOCK_HDR_LEN, VSOCK_HOST_CID,
    VSOCK_RX_QUEUE, VSOCK_TX_QUEUE, VSOCK_TYPE_STREAM,
};
use sbx_vmm::devices::virtio::{Interrupt, VirtioDevice};
use sbx_vmm::memory::{create_guest_memory, GuestMemory};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

pub const GUEST_CID: u64 = 3;
pub const QSIZE: u16 = 256;
/// Descriptors per slot: a slot is one chain of at most this many buffers.
const SLOT_DESCS: u16 = 4;
pub const SLOTS: u16 = QSIZE / SLOT_DESCS;
/// Bytes of guest memory per slot: header plus the largest payload.
const SLOT_BYTES: u64 = 0x11000;
const MEM_SIZE: u64 = 32 << 20;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// One split ring at `base` (descriptors, then avail at +0x1000, used at +0x2000) whose
/// slots' buffers start at `data`.
pub struct Ring {
    base: u64,
    data: u64,
    avail_idx: u16,
    used_seen: u16,
    free: Vec<u16>,
}

impl Ring {
    fn new(base: u64, data: u64) -> Self {
        Self {
            base,
            data,
            avail_idx: 0,
            used_seen: 0,
            free: (0..SLOTS).rev().collect(),
        }
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_ready(true);
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (l, h) = split(self.base);
        q.set_desc_table_address(l, h);
        let (l, h) = split(self.base + 0x1000);
        q.set_avail_ring_address(l, h);
        let (l, h) = split(self.base + 0x2000);
        q.set_used_ring_address(l, h);
        q
    }

    pub fn slot_addr(&self, slot: u16) -> u64 {
        self.data + u64::from(slot) * SLOT_BYTES
    }

    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Make a chain of `bufs` (address, length, device-writable) available in a free slot.
    pub fn push(&mut self, mem: &GuestMemory, bufs: &[(u64, u32, bool)]) -> Option<u16> {
        assert!(!bufs.is_empty() && bufs.len() <= SLOT_DESCS as usize);
        let slot = self.free.pop()?;
        let head = slot * SLOT_DESCS;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = head + i as u16;
            let last = i + 1 == bufs.len();
            let mut flags = if write { F_WRITE } else { 0 };
            if !last {
                flags |= F_NEXT;
            }
            let d = self.base + 16 * u64::from(idx);
            mem.write_obj(addr, GuestAddress(d)).unwrap();
            mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            mem.write_obj(if last { 0 } else { idx + 1 }, GuestAddress(d + 14))
                .unwrap();
        }
        let pos = self.base + 0x1000 + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, GuestAddress(pos)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.base + 0x1000 + 2))
            .unwrap();
        Some(slot)
    }

    /// The next used element: (slot, used length). The slot becomes free again.
    pub fn pop_used(&mut self, mem: &GuestMemory) -> Option<(u16, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.base + 0x2000 + 2)).unwrap();
        if idx == self.used_seen {
            return None;
        }
        let e = self.base + 0x2000 + 4 + 8 * u64::from(self.used_seen % QSIZE);
        let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
        let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
        self.used_seen = self.used_seen.wrapping_add(1);
        let slot = (id as u16) / SLOT_DESCS;
        self.free.push(slot);
        Some((slot, len))
    }

    /// Used elements published by the device so far.
    pub fn used_idx(&self, mem: &GuestMemory) -> u16 {
        mem.read_obj(GuestAddress(self.base + 0x2000 + 2)).unwrap()
    }
}

/// A guest packet header from the guest (CID 3) to the host.
pub fn ghdr(op: Op, src_port: u32, dst_port: u32, len: u32) -> PacketHeader {
    PacketHeader {
        src_cid: GUEST_CID,
        dst_cid: VSOCK_HOST_CID,
        src_port,
        dst_port,
        len,
        type_: VSOCK_TYPE_STREAM,
        op: op as u16,
        flags: 0,
        buf_alloc: 64 << 10,
        fwd_cnt: 0,
    }
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for sockets, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("sbx-vsock-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A packet the device put in the rx queue.
#[derive(Debug, Clone)]
pub struct RxPacket {
    pub hdr: PacketHeader,
    pub data: Vec<u8>,
}

impl RxPacket {
    pub fn op(&self) -> Option<Op> {
        self.hdr.op()
    }
}

/// The device, its event loop and a test driver for its queues.
pub struct Harness {
    pub mem: GuestMemory,
    pub dev: Arc<Mutex<Vsock>>,
    pub em: EventManager<Arc<Mutex<Vsock>>>,
    pub irq: Interrupt,
    pub rx: Ring,
    pub tx: Ring,
    pub path: PathBuf,
    /// Size of each rx buffer's data part (after the separate 44-byte header buffer).
    pub rx_buf_len: u32,
    pub dir: TempDir,
}

impl Harness {
    /// A device at `<tmp>/v.sock`, activated, with no rx buffers yet.
    pub fn new() -> Self {
        let dir = TempDir::new();
        let path = dir.0.join("v.sock");
        let dev = Vsock::new(VsockConfig::new(GUEST_CID, &path)).unwrap();
        let dev = Arc::new(Mutex::new(dev));
        let mut em = EventManager::<Arc<Mutex<Vsock>>>::new().unwrap();
        em.add_subscriber(dev.clone());
        let mem = create_guest_memory(MEM_SIZE).unwrap();
        let rx = Ring::new(0, 0x10_0000);
        let tx = Ring::new(0x4000, 0x10_0000 + u64::from(SLOTS) * SLOT_BYTES);
        let ev = Ring::new(0x8000, 0x10_0000 + 2 * u64::from(SLOTS) * SLOT_BYTES);
        let irq = Interrupt::new().unwrap();
        dev.lock()
            .unwrap()
            .activate(
                mem.clone(),
                irq.clone(),
                vec![rx.queue(), tx.queue(), ev.queue()],
            )
            .unwrap();
        let mut h = Self {
            mem,
            dev,
            em,
            irq,
            rx,
            tx,
            path,
            rx_buf_len: 4096,
            dir,
        };
        h.pump();
        h
    }

    pub fn dev(&self) -> MutexGuard<'_, Vsock> {
        self.dev.lock().unwrap()
    }

    /// Run the event loop until it has been idle for a millisecond.
    pub fn pump(&mut self) {
        let start = Instant::now();
        while self.em.run_with_timeout(1).unwrap() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "event loop never idles"
            );
        }
    }

    fn kick(&self, queue: usize) {
        self.dev().queue_events()[queue].write(1).unwrap();
    }

    /// Give the device rx buffers until every rx slot is in use, then kick.
    pub fn fill_rx(&mut self) {
        self.fill_rx_n(usize::MAX);
    }

    pub fn fill_rx_n(&mut self, n: usize) {
        let mut added = 0;
        while added < n && self.rx.free_slots() > 0 {
            let next = self.rx.free.last().copied().unwrap();
            let a = self.rx.slot_addr(next);
            self.rx
                .push(
                    &self.mem,
                    &[
                        (a, VSOCK_HDR_LEN as u32, true),
                        (a + 0x100, self.rx_buf_len, true),
                    ],
                )
                .unwrap();
            added += 1;
        }
        self.kick(VSOCK_RX_QUEUE);
    }

    /// Give the device one rx buffer with room for a header only, and kick.
    pub fn push_rx_header_only(&mut self) {
        let next = self.rx.free.last().copied().unwrap();
        let a = self.rx.slot_addr(next);
        self.rx
            .push(&self.mem, &[(a, VSOCK_HDR_LEN as u32, true)])
            .unwrap();
        self.kick(VSOCK_RX_QUEUE);
    }

    /// Packets the device delivered so far (rx slots are recycled, not refilled).
    pub fn take_rx(&mut self) -> Vec<RxPacket> {
        let mut out = Vec::new();
        while let Some((slot, len)) = self.rx.pop_used(&self.mem) {
            let a = self.rx.slot_addr(slot);
            let mut hb = [0u8; VSOCK_HDR_LEN];
            self.mem.read_slice(&mut hb, GuestAddress(a)).unwrap();
            let hdr = parse_header(&hb).unwrap();
            assert_eq!(
                len as usize,
                VSOCK_HDR_LEN + hdr.len as usize,
                "used length"
            );
            assert_eq!(hdr.src_cid, VSOCK_HOST_CID);
            assert_eq!(hdr.dst_cid, GUEST_CID);
            assert_eq!(hdr.type_, VSOCK_TYPE_STREAM);
            let mut data = vec![0u8; hdr.len as usize];
            if !data.is_empty() {
                self.mem
                    .read_slice(&mut data, GuestAddress(a + 0x100))
                    .unwrap();
            }
            out.push(RxPacket { hdr, data });
        }
        out
    }

    /// Refill, pump and collect rx packets.
    pub fn recv(&mut self) -> Vec<RxPacket> {
        self.fill_rx();
        self.pump();
        self.take_rx()
    }

    /// Recycle tx slots the device is done with.
    pub fn reap_tx(&mut self) -> usize {
        let mut n = 0;
        while let Some((_, len)) = self.tx.pop_used(&self.mem) {
            assert_eq!(len, 0, "tx chains have no device-writable part");
            n += 1;
        }
        n
    }

    /// Queue one tx packet (header buffer, then payload buffer) without kicking. False when
    /// no tx slot is free.
    pub fn queue_tx(&mut self, hdr: &PacketHeader, data: &[u8]) -> bool {
        self.reap_tx();
        let Some(&slot) = self.tx.free.last() else {
            return false;
        };
        let a = self.tx.slot_addr(slot);
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(a))
            .unwrap();
        self.mem.write_slice(data, GuestAddress(a + 0x100)).unwrap();
        let mut bufs = vec![(a, VSOCK_HDR_LEN as u32, false)];
        if !data.is_empty() {
            bufs.push((a + 0x100, data.len() as u32, false));
        }
        self.tx.push(&self.mem, &bufs).unwrap();
        true
    }

    /// Queue raw descriptor buffers on tx (for malformed packets).
    pub fn queue_tx_raw(&mut self, bufs: &[(u64, u32, bool)]) {
        self.reap_tx();
        self.tx.push(&self.mem, bufs).unwrap();
    }

    pub fn tx_scratch(&self) -> u64 {
        // Past the slot buffers of all three rings.
        0x10_0000 + 3 * u64::from(SLOTS) * SLOT_BYTES
    }

    /// Send one packet and run the loop.
    pub fn send(&mut self, hdr: &PacketHeader, data: &[u8]) {
        assert!(self.queue_tx(hdr, data), "tx ring full");
        self.kick(VSOCK_TX_QUEUE);
        self.pump();
    }

    pub fn kick_tx(&mut self) {
        self.kick(VSOCK_TX_QUEUE);
    }

    /// Connect a host process and run the host-initiated handshake to guest `port`; the
    /// guest side accepts with `buf_alloc`. Returns the host stream and the host-side port.
    pub fn host_connect(&mut self, port: u32, buf_alloc: u32) -> (UnixStream, u32) {
        use std::io::{BufRead, BufReader, Write};
        let mut s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        writeln!(s, "CONNECT {port}").unwrap();
        self.pump();
        let pkts = self.recv();
        assert_eq!(pkts.len(), 1, "{pkts:?}");
        let req = &pkts[0];
        assert_eq!(req.op(), Some(Op::Request));
        assert_eq!(req.hdr.dst_port, port);
        let local = req.hdr.src_port;
        let mut resp = ghdr(Op::Response, port, local, 0);
        resp.buf_alloc = buf_alloc;
        self.send(&resp, &[]);
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert_eq!(line, format!("OK {local}\n"));
        (s, local)
    }
}

/// Deterministic test data: byte `i` of stream `seed`.
pub fn pattern(seed: u64, start: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|k| {
            let i = start + k;
            let mut x = seed ^ (i / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 31;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 29;
            (x >> (8 * (i % 8))) as u8
        })
        .collect()
}
