//! Helpers for tests that need KVM (feature `test-utils`).

/// Whether KVM tests must run: `SBX_REQUIRE_KVM=1` turns a missing `/dev/kvm` into a failure.
pub fn kvm_required() -> bool {
    std::env::var("SBX_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// Return `Some(reason)` when KVM tests should be skipped; panic instead when
/// `SBX_REQUIRE_KVM=1`. Prefer the [`require_kvm!`](crate::require_kvm) macro.
pub fn kvm_skip_reason() -> Option<String> {
    let probe = crate::detect_kvm();
    if probe.available() {
        return None;
    }
    if kvm_required() {
        panic!("SBX_REQUIRE_KVM=1 but KVM is not usable: {}", probe.reason);
    }
    Some(probe.reason)
}

/// Skip the calling test (return early, printing why) when `/dev/kvm` is absent, unless
/// `SBX_REQUIRE_KVM=1`, in which case the test fails.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if let Some(reason) = $crate::test_utils::kvm_skip_reason() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipping: KVM not available: {reason}");
            }
            return;
        }
    };
}

/// Drive a virtio-blk device with one queue whose descriptor table, available ring and request
/// bytes all come from `data` (a fuzzer's input), over a scratch 32 KiB disk image.
///
/// Layout of `data`: 16 raw split descriptors (16 bytes each: addr, len, flags, next; the
/// address is folded into 0..3 MiB so that most land in the 2 MiB of guest RAM and some do not),
/// then one byte `n` (heads made available, at most 16), `n` little-endian u16 heads, and the
/// rest copied into guest RAM at 0x10000 where descriptors may point. The device must process
/// every chain without panicking and complete each one in the used ring at most once.
/// Returns the number of completions.
pub fn fuzz_block_queue(data: &[u8]) -> usize {
    use crate::devices::virtio::{Block, BlockConfig, Interrupt, VirtioDevice};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::{Bytes, GuestAddress};

    const QSIZE: u16 = 16;
    const DESC_BYTES: usize = QSIZE as usize * 16;
    let mem = crate::memory::create_guest_memory(2 << 20).expect("guest memory");
    let q = MockSplitQueue::create(&mem, GuestAddress(0), QSIZE);

    let mut descs = [0u8; DESC_BYTES];
    let n = data.len().min(DESC_BYTES);
    descs[..n].copy_from_slice(&data[..n]);
    for d in descs.chunks_exact_mut(16) {
        let addr = u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) % (3 << 20);
        d[..8].copy_from_slice(&addr.to_le_bytes());
    }
    mem.write_slice(&descs, q.desc_table_addr())
        .expect("descriptor table");
    let rest = data.get(DESC_BYTES..).unwrap_or(&[]);
    let heads = usize::from(rest.first().copied().unwrap_or(0)).min(QSIZE.into());
    let ring = rest.get(1..).unwrap_or(&[]);
    for i in 0..heads {
        let head = ring
            .get(2 * i..2 * i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .unwrap_or(0);
        q.avail().ring().ref_at(i).expect("ring slot").store(head);
    }
    q.avail().idx().store(heads as u16);
    let payload = ring.get(2 * heads..).unwrap_or(&[]);
    let payload = &payload[..payload.len().min(0x10_0000)];
    mem.write_slice(payload, GuestAddress(0x1_0000))
        .expect("payload");

    let image = vmm_sys_util::tempfile::TempFile::new().expect("temp image");
    image.as_file().set_len(32 * 1024).expect("image size");
    let mut block = Block::new(BlockConfig::new(image.as_path())).expect("block device");
    let queue: Queue = q.create_queue().expect("queue");
    block
        .activate(
            mem.clone(),
            Interrupt::new().expect("interrupt"),
            vec![queue],
        )
        .expect("activate");
    block.process_queue();
    let used = q.used().idx().load();
    assert!(
        used as usize <= heads,
        "more completions ({used}) than requests ({heads})"
    );
    used as usize
}

/// Drive a virtio-net device with one fuzzed queue, laid out from `data` as in
/// [`fuzz_block_queue`] after a first control byte: bit 0 picks the queue (0 = receive,
/// 1 = transmit), bits 1 to 7 scale the third of three frames waiting in the backend (a
/// `SOCK_SEQPACKET` socketpair) for the receive queue. The other queue is valid and empty.
/// The rings sit at fixed addresses (descriptors at 0, available ring at 0x1000, used ring at
/// 0x2000) so that a full available ring cannot overlap the used ring, and descriptor
/// buffers are moved to 0x8000 and above so that frames never land on the rings.
/// The device must process every chain without panicking, complete each one at most once and
/// never report a used length beyond the header and the longest frame (0 for transmit).
/// Returns the number of completions.
pub fn fuzz_net_queue(data: &[u8]) -> usize {
    use crate::devices::virtio::net::{NET_MAX_FRAME_LEN, VIRTIO_NET_HDR_LEN};
    use crate::devices::virtio::{FdNetBackend, Interrupt, Net, NetConfig, VirtioDevice};
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress};

    const QSIZE: u16 = 16;
    const DESC_BYTES: usize = QSIZE as usize * 16;
    const FUZZED: u64 = 0;
    const OTHER: u64 = 0x4000;
    const BUFFERS: u64 = 0x8000;
    let queue_at = |base: u64| {
        let mut q = Queue::new(QSIZE).expect("queue");
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(base as u32), Some(0));
        q.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
        q.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
        q.set_ready(true);
        q
    };
    let control = data.first().copied().unwrap_or(0);
    let data = data.get(1..).unwrap_or(&[]);
    let tx = control & 1 == 1;
    let mem = crate::memory::create_guest_memory(2 << 20).expect("guest memory");

    let mut descs = [0u8; DESC_BYTES];
    let n = data.len().min(DESC_BYTES);
    descs[..n].copy_from_slice(&data[..n]);
    // Buffers start above both queues' rings (some still end beyond guest memory): a guest
    // may point a receive buffer at its own used ring, and the frame written there would
    // garble the completions these checks read.
    for d in descs.chunks_exact_mut(16) {
        let raw = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
        let addr = BUFFERS + raw % ((3 << 20) - BUFFERS);
        d[..8].copy_from_slice(&addr.to_le_bytes());
    }
    mem.write_slice(&descs, GuestAddress(FUZZED))
        .expect("descriptor table");
    let rest = data.get(DESC_BYTES..).unwrap_or(&[]);
    let heads = usize::from(rest.first().copied().unwrap_or(0)).min(QSIZE.into());
    let ring = rest.get(1..).unwrap_or(&[]);
    for i in 0..heads {
        let head = ring
            .get(2 * i..2 * i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .unwrap_or(0);
        mem.write_obj(head, GuestAddress(FUZZED + 0x1004 + 2 * i as u64))
            .expect("avail ring");
    }
    mem.write_obj(heads as u16, GuestAddress(FUZZED + 0x1002))
        .expect("avail idx");
    let payload = ring.get(2 * heads..).unwrap_or(&[]);
    let payload = &payload[..payload.len().min(0x10_0000)];
    mem.write_slice(payload, GuestAddress(0x1_0000))
        .expect("payload");

    let (ours, peer) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .expect("socketpair");
    let third = usize::from(control >> 1) * 600;
    for len in [60, 1514, third] {
        let frame = vec![0x5a; len];
        nix::unistd::write(&peer, &frame).expect("frame to the backend");
    }
    let backend = FdNetBackend::new(ours).expect("backend");
    let mut net = Net::new(NetConfig::new([2, 0, 0, 0, 0, 1], Box::new(backend))).expect("net");
    let queues = if tx {
        vec![queue_at(OTHER), queue_at(FUZZED)]
    } else {
        vec![queue_at(FUZZED), queue_at(OTHER)]
    };
    net.activate(mem.clone(), Interrupt::new().expect("interrupt"), queues)
        .expect("activate");
    if tx {
        net.process_tx();
    } else {
        net.process_rx();
    }
    let used: u16 = mem
        .read_obj(GuestAddress(FUZZED + 0x2002))
        .expect("used idx");
    assert!(
        used as usize <= heads,
        "more completions ({used}) than chains ({heads})"
    );
    let max = if tx {
        0
    } else {
        (VIRTIO_NET_HDR_LEN + NET_MAX_FRAME_LEN) as u32
    };
    for i in 0..u64::from(used) {
        let len: u32 = mem
            .read_obj(GuestAddress(FUZZED + 0x2004 + 8 * i + 4))
            .expect("used element");
        assert!(len <= max, "used length {len} beyond {max}");
    }
    drop(peer);
    used as usize
}
