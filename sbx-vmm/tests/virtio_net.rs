//! virtio-net over real guest memory and a real `SOCK_SEQPACKET` socketpair: the test plays
//! the guest driver on the queues and the network stack on the peer socket, and runs the
//! device on an event manager as the VMM does.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use sbx_vmm::devices::virtio::net::{
    FdNetBackend, Net, NetConfig, NET_MAX_FRAME_LEN, NET_MIN_RX_BUFFER, NET_RX_QUEUE, NET_TX_QUEUE,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_LEN,
};
use sbx_vmm::devices::virtio::{
    device_type, features, Interrupt, VirtioDevice, VirtioError, VIRTIO_MMIO_INT_VRING,
};
use sbx_vmm::memory::{create_guest_memory, GuestMemory};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

const MAC: [u8; 6] = [0x02, 0x5b, 0x78, 0, 0, 2];
const QSIZE: u16 = 256;
/// Descriptors per slot: a slot is one chain of at most this many buffers.
const SLOT_DESCS: u16 = 4;
const SLOTS: u16 = QSIZE / SLOT_DESCS;
/// Guest memory per slot: room for the largest frame and its header.
const SLOT_BYTES: u64 = 0x11000;
const MEM_SIZE: u64 = 32 << 20;
/// Default receive buffer: header plus 2036 bytes, in one descriptor.
const RX_BUF: u32 = 2048;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// One split ring at `base` (descriptors, avail at +0x1000, used at +0x2000) whose slots'
/// buffers start at `data`. Unlike the mock queue it wraps and can be refilled forever.
struct Ring {
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

    fn next_slot_addr(&self) -> u64 {
        self.slot_addr(*self.free.last().expect("a free slot"))
    }

    fn slot_addr(&self, slot: u16) -> u64 {
        self.data + u64::from(slot) * SLOT_BYTES
    }

    /// Make a chain of raw descriptors `(addr, len, flags, next)` available in the next free
    /// slot; `next` is relative to the slot's first descriptor.
    fn push_raw(&mut self, mem: &GuestMemory, descs: &[(u64, u32, u16, u16)]) -> u16 {
        assert!(!descs.is_empty() && descs.len() <= SLOT_DESCS as usize);
        let slot = self.free.pop().expect("ring full");
        let head = slot * SLOT_DESCS;
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let d = self.base + 16 * u64::from(head + i as u16);
            mem.write_obj(addr, GuestAddress(d)).unwrap();
            mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            mem.write_obj(head + next, GuestAddress(d + 14)).unwrap();
        }
        let pos = self.base + 0x1000 + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, GuestAddress(pos)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.base + 0x1000 + 2))
            .unwrap();
        slot
    }

    /// A well-formed chain of `(addr, len, device-writable)` buffers.
    fn push(&mut self, mem: &GuestMemory, bufs: &[(u64, u32, bool)]) -> u16 {
        let descs: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let last = i + 1 == bufs.len();
                let mut flags = if write { F_WRITE } else { 0 };
                if !last {
                    flags |= F_NEXT;
                }
                (addr, len, flags, if last { 0 } else { i as u16 + 1 })
            })
            .collect();
        self.push_raw(mem, &descs)
    }

    /// The next used element: (slot, used length). The slot becomes free again.
    fn pop_used(&mut self, mem: &GuestMemory) -> Option<(u16, u32)> {
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
}

/// The device on its event loop, a test driver for its queues, and the backend's peer.
struct Harness {
    mem: GuestMemory,
    dev: Arc<Mutex<Net>>,
    em: EventManager<Arc<Mutex<Net>>>,
    irq: Interrupt,
    rx: Ring,
    tx: Ring,
    peer: OwnedFd,
}

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .unwrap()
}

fn frame(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

impl Harness {
    /// A device, activated, with no rx buffers yet.
    fn new() -> Self {
        let (ours, peer) = seqpacket_pair();
        let backend = FdNetBackend::new(ours).unwrap();
        let dev = Net::new(NetConfig::new(MAC, Box::new(backend))).unwrap();
        let dev = Arc::new(Mutex::new(dev));
        let mut em = EventManager::<Arc<Mutex<Net>>>::new().unwrap();
        em.add_subscriber(dev.clone());
        let mem = create_guest_memory(MEM_SIZE).unwrap();
        let mut h = Self {
            mem,
            dev,
            em,
            irq: Interrupt::new().unwrap(),
            rx: Ring::new(0, 0x10_0000),
            tx: Ring::new(0x4000, 0x10_0000 + u64::from(SLOTS) * SLOT_BYTES),
            peer,
        };
        h.activate();
        h
    }

    fn activate(&mut self) {
        let queues = vec![self.rx.queue(), self.tx.queue()];
        self.dev()
            .activate(self.mem.clone(), self.irq.clone(), queues)
            .unwrap();
        self.pump();
    }

    fn dev(&self) -> MutexGuard<'_, Net> {
        self.dev.lock().unwrap()
    }

    /// Run the event loop until it has been idle for a millisecond. A device that spins on a
    /// readable backend it does not drain never idles and fails here.
    fn pump(&mut self) {
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

    /// Post `n` rx buffers of `len` bytes (one descriptor each) and kick.
    fn post_rx(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            let a = self.rx.next_slot_addr();
            self.rx.push(&self.mem, &[(a, len, true)]);
        }
        self.kick(NET_RX_QUEUE);
    }

    /// Frames delivered so far: (virtio header, frame).
    fn take_rx(&mut self) -> Vec<([u8; VIRTIO_NET_HDR_LEN], Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((slot, len)) = self.rx.pop_used(&self.mem) {
            let a = self.rx.slot_addr(slot);
            let len = len as usize;
            assert!(len > VIRTIO_NET_HDR_LEN, "used length {len}");
            let mut hdr = [0u8; VIRTIO_NET_HDR_LEN];
            self.mem.read_slice(&mut hdr, GuestAddress(a)).unwrap();
            let mut data = vec![0u8; len - VIRTIO_NET_HDR_LEN];
            self.mem
                .read_slice(&mut data, GuestAddress(a + VIRTIO_NET_HDR_LEN as u64))
                .unwrap();
            out.push((hdr, data));
        }
        out
    }

    /// Queue one frame for transmission as a header descriptor and the frame split in two.
    fn queue_tx(&mut self, data: &[u8]) {
        let a = self.tx.next_slot_addr();
        // A header the device must ignore.
        self.mem.write_slice(&[0xaa; 12], GuestAddress(a)).unwrap();
        self.mem.write_slice(data, GuestAddress(a + 0x100)).unwrap();
        let half = (data.len() / 2) as u32;
        let mut bufs = vec![(a, VIRTIO_NET_HDR_LEN as u32, false)];
        if half > 0 {
            bufs.push((a + 0x100, half, false));
        }
        bufs.push((a + 0x100 + u64::from(half), data.len() as u32 - half, false));
        self.tx.push(&self.mem, &bufs);
    }

    /// Completed tx chains; all must have used length 0.
    fn reap_tx(&mut self) -> usize {
        let mut n = 0;
        while let Some((_, len)) = self.tx.pop_used(&self.mem) {
            assert_eq!(len, 0, "tx chains have no device-writable part");
            n += 1;
        }
        n
    }

    fn peer_send(&self, data: &[u8]) {
        assert_eq!(nix::unistd::write(&self.peer, data).unwrap(), data.len());
    }

    /// Frames waiting at the peer.
    fn peer_recv_all(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; NET_MAX_FRAME_LEN + 1];
        loop {
            match nix::unistd::read(&self.peer, &mut buf) {
                Ok(n) => out.push(buf[..n].to_vec()),
                Err(Errno::EAGAIN) => return out,
                Err(e) => panic!("peer read: {e}"),
            }
        }
    }
}

#[test]
fn device_basics_and_config() {
    let (ours, _peer) = seqpacket_pair();
    let mut dev = Net::new(NetConfig::new(
        MAC,
        Box::new(FdNetBackend::new(ours).unwrap()),
    ))
    .unwrap();
    assert_eq!(dev.device_type(), device_type::NET);
    assert_eq!(dev.queue_max_sizes(), &[256, 256]);
    assert_eq!(dev.queue_events().len(), 2);
    assert_eq!(dev.mac(), MAC);
    let f = dev.avail_features();
    for bit in [
        features::VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
    ] {
        assert_ne!(f & (1 << bit), 0, "feature {bit}");
    }
    // No offloads: CSUM (0), GUEST_CSUM (1), GSO/TSO bits (6..=14), MRG_RXBUF (15).
    for bit in (0..2).chain(6..=15) {
        assert_eq!(f & (1 << bit), 0, "feature {bit} must not be offered");
    }
    let mut cfg = [0u8; 8];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], &MAC);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
    let mut b = [0u8; 1];
    dev.read_config(5, &mut b);
    assert_eq!(b[0], 2);
    let mut far = [0xffu8; 4];
    dev.read_config(8, &mut far);
    assert_eq!(far, [0; 4]);
    dev.write_config(0, &[0; 6]);
    assert_eq!(dev.metrics().config_errors.get(), 2);
    let mut again = [0u8; 6];
    dev.read_config(0, &mut again);
    assert_eq!(again, MAC, "config writes are ignored");

    for bad in [[0u8; 6], [0x01, 0, 0, 0, 0, 1], [0xff; 6]] {
        let (ours, _peer) = seqpacket_pair();
        let cfg = NetConfig::new(bad, Box::new(FdNetBackend::new(ours).unwrap()));
        assert!(matches!(Net::new(cfg), Err(VirtioError::InvalidMac(m)) if m == bad));
    }

    // Activation needs both queues.
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    let irq = Interrupt::new().unwrap();
    assert!(dev.activate(mem.clone(), irq.clone(), vec![]).is_err());
    let rx = Ring::new(0, 0x10_0000);
    let mut not_ready = Queue::new(QSIZE).unwrap();
    not_ready.set_ready(false);
    assert!(dev
        .activate(mem.clone(), irq.clone(), vec![rx.queue(), not_ready])
        .is_err());
    assert!(!dev.is_activated());
}

#[test]
fn tx_frames_reach_the_peer_byte_exact() {
    let mut h = Harness::new();
    let frames = [frame(1, 60), frame(2, 1514), frame(3, 9000), frame(4, 1)];
    for f in &frames {
        h.queue_tx(f);
    }
    h.kick(NET_TX_QUEUE);
    h.pump();
    assert_eq!(h.peer_recv_all(), frames.to_vec());
    assert_eq!(h.reap_tx(), frames.len());
    assert_ne!(h.irq.status() & VIRTIO_MMIO_INT_VRING, 0);
    let m = h.dev().metrics();
    assert_eq!(m.tx_frames.get(), 4);
    assert_eq!(m.tx_bytes.get(), 60 + 1514 + 9000 + 1);
    assert_eq!(m.tx_bad_chains.get(), 0);
    assert_eq!(m.tx_dropped.get(), 0);

    // The largest accepted frame goes through; one byte more is refused.
    let big = frame(5, NET_MAX_FRAME_LEN);
    let a = h.tx.next_slot_addr();
    h.mem.write_slice(&big, GuestAddress(a + 12)).unwrap();
    h.tx.push(&h.mem, &[(a, (NET_MAX_FRAME_LEN + 12) as u32, false)]);
    let a = h.tx.next_slot_addr();
    h.tx.push(&h.mem, &[(a, (NET_MAX_FRAME_LEN + 13) as u32, false)]);
    h.kick(NET_TX_QUEUE);
    h.pump();
    let got = h.peer_recv_all();
    assert_eq!(got.len(), 1);
    assert!(got[0] == big, "64 KiB frame byte-exact");
    assert_eq!(h.reap_tx(), 2);
    assert_eq!(m.tx_bad_chains.get(), 1);
}

#[test]
fn rx_frames_arrive_with_a_zero_header() {
    let mut h = Harness::new();
    h.post_rx(3, RX_BUF);
    // One more buffer with the header and the frame in separate descriptors.
    let a = h.rx.next_slot_addr();
    h.rx.push(&h.mem, &[(a, 12, true), (a + 12, 1514, true)]);
    h.kick(NET_RX_QUEUE);
    h.pump();
    // Dirty the buffers so that a header the device did not write would show.
    for slot in 0..4 {
        h.mem
            .write_slice(&[0x5a; 12], GuestAddress(h.rx.slot_addr(slot)))
            .unwrap();
    }
    let frames = [
        frame(7, 42),
        frame(8, 1514),
        frame(9, 2036),
        frame(10, 1514),
    ];
    for f in &frames {
        h.peer_send(f);
    }
    h.pump();
    let got = h.take_rx();
    assert_eq!(got.len(), 4);
    let mut hdr = [0u8; 12];
    hdr[10] = 1; // num_buffers = 1
    for ((gh, gf), want) in got.iter().zip(&frames) {
        assert_eq!(gh, &hdr);
        assert_eq!(gf, want);
    }
    let m = h.dev().metrics();
    assert_eq!(m.rx_frames.get(), 4);
    assert_eq!(m.rx_bytes.get(), 42 + 1514 + 2036 + 1514);
    assert_ne!(h.irq.status() & VIRTIO_MMIO_INT_VRING, 0);
}

#[test]
fn frames_wait_in_the_backend_until_buffers_are_posted() {
    let mut h = Harness::new();
    let frames: Vec<_> = (0..5).map(|i| frame(i, 100 + usize::from(i))).collect();
    for f in &frames {
        h.peer_send(f);
    }
    // No buffers: nothing delivered, and the loop idles (it does not spin on the fd).
    h.pump();
    assert!(h.take_rx().is_empty());
    let m = h.dev().metrics();
    assert!(m.rx_no_buffers.get() >= 1);
    assert_eq!(m.rx_dropped.get(), 0);

    h.post_rx(2, RX_BUF);
    h.pump();
    let got: Vec<_> = h.take_rx().into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, frames[..2]);
    // More frames arrive while the guest has no buffers again.
    h.peer_send(&frame(99, 64));
    h.pump();
    assert!(h.take_rx().is_empty());
    h.post_rx(10, RX_BUF);
    h.pump();
    let got: Vec<_> = h.take_rx().into_iter().map(|(_, f)| f).collect();
    let mut want = frames[2..].to_vec();
    want.push(frame(99, 64));
    assert_eq!(got, want);
    // The remaining 6 buffers stay posted; a new frame goes straight in.
    h.peer_send(&frame(100, 70));
    h.pump();
    assert_eq!(h.take_rx().len(), 1);
    assert_eq!(m.rx_frames.get(), 7);
}

#[test]
fn malformed_tx_chains_are_counted_and_skipped() {
    let mut h = Harness::new();
    let a = h.tx.next_slot_addr();
    // Device-writable descriptor in a tx chain.
    h.tx.push(&h.mem, &[(a, 12, false), (a + 12, 100, true)]);
    // Header only: no frame.
    let a = h.tx.next_slot_addr();
    h.tx.push(&h.mem, &[(a, 12, false)]);
    // Zero-length descriptor.
    let a = h.tx.next_slot_addr();
    h.tx.push(&h.mem, &[(a, 12, false), (a + 12, 0, false)]);
    // A loop: descriptor 1 points back to 0.
    let a = h.tx.next_slot_addr();
    h.tx.push_raw(&h.mem, &[(a, 12, F_NEXT, 1), (a + 12, 60, F_NEXT, 0)]);
    // Outside guest memory.
    h.tx.push(
        &h.mem,
        &[(MEM_SIZE - 8, 12, false), (MEM_SIZE + 0x1000, 60, false)],
    );
    // And a good one after them.
    let good = frame(42, 60);
    h.queue_tx(&good);
    h.kick(NET_TX_QUEUE);
    h.pump();
    assert_eq!(h.peer_recv_all(), vec![good]);
    assert_eq!(h.reap_tx(), 6, "every chain is completed");
    let m = h.dev().metrics();
    assert_eq!(m.tx_bad_chains.get(), 5);
    assert_eq!(m.tx_frames.get(), 1);
}

#[test]
fn malformed_rx_chains_are_counted_and_skipped() {
    let mut h = Harness::new();
    let mem = h.mem.clone();
    let a = h.rx.next_slot_addr();
    h.rx.push(&mem, &[(a, RX_BUF, false)]); // device-readable
    let a = h.rx.next_slot_addr();
    h.rx.push(&mem, &[(a, 12, true)]); // header only
    let a = h.rx.next_slot_addr();
    h.rx.push(&mem, &[(a, NET_MIN_RX_BUFFER as u32 - 1, true)]); // one byte short
    let a = h.rx.next_slot_addr();
    h.rx.push(&mem, &[(a, 12, true), (a + 12, 0, true)]); // zero length
    let a = h.rx.next_slot_addr();
    h.rx.push_raw(
        &mem,
        &[
            (a, 12, F_WRITE | F_NEXT, 1),
            (a + 12, 2000, F_WRITE | F_NEXT, 0),
        ],
    ); // loop
    let a = h.rx.next_slot_addr();
    h.rx.push(&mem, &[(a, NET_MIN_RX_BUFFER as u32, true)]); // the smallest good one
    let f = frame(3, 1514);
    h.peer_send(&f);
    h.kick(NET_RX_QUEUE);
    h.pump();
    let mut good = Vec::new();
    let mut bad = 0;
    while let Some((slot, len)) = h.rx.pop_used(&mem) {
        if len == 0 {
            bad += 1;
        } else {
            assert_eq!(len as usize, 12 + 1514);
            let mut d = vec![0u8; 1514];
            mem.read_slice(&mut d, GuestAddress(h.rx.slot_addr(slot) + 12))
                .unwrap();
            good.push(d);
        }
    }
    assert_eq!(bad, 5);
    assert_eq!(good, vec![f]);
    let m = h.dev().metrics();
    assert_eq!(m.rx_bad_chains.get(), 5);
    assert_eq!(m.rx_frames.get(), 1);
}

#[test]
fn oversized_rx_frames_are_dropped_and_the_buffer_reused() {
    let mut h = Harness::new();
    h.post_rx(1, RX_BUF);
    h.peer_send(&frame(1, RX_BUF as usize - 12 + 1)); // one byte too long for the buffer
    h.peer_send(&frame(2, NET_MAX_FRAME_LEN + 1)); // longer than any frame
    h.peer_send(&frame(3, RX_BUF as usize - 12)); // fits exactly
    h.pump();
    let got = h.take_rx();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, frame(3, RX_BUF as usize - 12));
    let m = h.dev().metrics();
    assert_eq!(m.rx_dropped.get(), 2);
    assert_eq!(m.rx_frames.get(), 1);
}

#[test]
fn tx_to_a_full_backend_drops_without_blocking() {
    let mut h = Harness::new();
    // The peer never reads: its receive queue fills up and later frames are dropped.
    let f = frame(1, 1514);
    let mut sent = 0;
    for _ in 0..20 {
        for _ in 0..SLOTS {
            h.queue_tx(&f);
        }
        h.kick(NET_TX_QUEUE);
        h.pump();
        sent += h.reap_tx();
    }
    let m = h.dev().metrics();
    assert_eq!(sent, 20 * usize::from(SLOTS));
    assert!(m.tx_dropped.get() > 0, "some frames dropped");
    assert_eq!(m.tx_frames.get() + m.tx_dropped.get(), sent as u64);
    assert_eq!(h.peer_recv_all().len() as u64, m.tx_frames.get());
}

#[test]
fn closed_backend_stops_receive_without_spinning() {
    let mut h = Harness::new();
    h.post_rx(4, RX_BUF);
    h.pump();
    h.peer_send(&frame(1, 80));
    let peer = std::mem::replace(&mut h.peer, seqpacket_pair().0);
    drop(peer);
    h.pump();
    assert_eq!(
        h.take_rx().len(),
        1,
        "the frame sent before the close arrives"
    );
    let m = h.dev().metrics();
    assert_eq!(m.backend_closed.get(), 1);
    // Transmit still completes the guest's chains (frames dropped).
    h.queue_tx(&frame(2, 60));
    h.kick(NET_TX_QUEUE);
    h.pump();
    assert_eq!(h.reap_tx(), 1);
    assert_eq!(m.tx_dropped.get(), 1);
}

#[test]
fn reset_and_reactivate() {
    let mut h = Harness::new();
    h.post_rx(2, RX_BUF);
    h.peer_send(&frame(1, 100));
    h.pump();
    assert_eq!(h.take_rx().len(), 1);

    h.dev().reset();
    h.pump();
    assert!(!h.dev().is_activated());
    assert_eq!(h.dev().acked_features(), 0);
    // While reset: kicks are ignored, frames wait in the backend.
    h.peer_send(&frame(2, 100));
    h.queue_tx(&frame(3, 60));
    h.kick(NET_TX_QUEUE);
    h.kick(NET_RX_QUEUE);
    h.pump();
    let m = h.dev().metrics();
    assert_eq!(m.events_before_activation.get(), 2);
    assert!(h.peer_recv_all().is_empty());
    assert_eq!(h.dev().process_tx(), 0);
    assert_eq!(h.dev().process_rx(), 0);

    // A fresh driver: new rings, new buffers.
    h.rx = Ring::new(0x8000, 0x10_0000 + 2 * u64::from(SLOTS) * SLOT_BYTES);
    h.tx = Ring::new(0xc000, 0x10_0000 + 3 * u64::from(SLOTS) * SLOT_BYTES);
    h.activate();
    h.post_rx(2, RX_BUF);
    h.queue_tx(&frame(4, 60));
    h.kick(NET_TX_QUEUE);
    h.pump();
    let got: Vec<_> = h.take_rx().into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, vec![frame(2, 100)]);
    assert_eq!(h.peer_recv_all(), vec![frame(4, 60)]);
    let again = h.dev().activate(
        h.mem.clone(),
        h.irq.clone(),
        vec![h.rx.queue(), h.tx.queue()],
    );
    assert!(again.is_err(), "activate twice without a reset");
}
