//! virtio-rng against a real guest memory, driven through virtio-queue's mock split queue.

mod virtio_util;

use sbx_vmm::devices::virtio::rng::RNG_MAX_BYTES_PER_REQUEST;
use sbx_vmm::devices::virtio::{device_type, Interrupt, Rng, VirtioDevice, VIRTIO_MMIO_INT_VRING};
use sbx_vmm::memory::GuestMemory;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::GuestAddress;

use virtio_util::*;

fn activate<'a>(
    mem: &'a GuestMemory,
    rng: &mut Rng,
) -> (MockSplitQueue<'a, GuestMemory>, Interrupt) {
    let q = MockSplitQueue::create(mem, GuestAddress(0), 256);
    let irq = Interrupt::new().unwrap();
    let queue: Queue = q.create_queue().unwrap();
    rng.activate(mem.clone(), irq.clone(), vec![queue]).unwrap();
    (q, irq)
}

#[test]
fn fills_buffers_with_fresh_bytes() {
    let mem = guest_memory();
    let mut rng = Rng::new().unwrap();
    assert_eq!(rng.device_type(), device_type::RNG);
    let (q, irq) = activate(&mem, &mut rng);

    let a = BUF_BASE;
    let b = BUF_BASE + 0x1000;
    add_chain(&q, 0, &[wr(a, 64)]);
    // Split across three descriptors.
    add_chain(&q, 1, &[wr(b, 10), wr(b + 10, 22), wr(b + 32, 32)]);
    assert_eq!(rng.process_queue(), 2);

    assert_eq!(used_idx(&q), 2);
    assert_eq!(used_elem(&q, 0), (0, 64));
    assert_eq!(used_elem(&q, 1), (1, 64));
    let x = read_bytes(&mem, a, 64);
    let y = read_bytes(&mem, b, 64);
    assert_ne!(x, vec![0; 64]);
    assert_ne!(y, vec![0; 64]);
    assert_ne!(x, y, "two requests must not get the same bytes");
    assert_eq!(irq.status(), VIRTIO_MMIO_INT_VRING);
    assert_eq!(rng.metrics().bytes.get(), 128);

    // The same buffer again gets different bytes.
    add_chain(&q, 0, &[wr(a, 64)]);
    rng.process_queue();
    assert_ne!(read_bytes(&mem, a, 64), x);
}

#[test]
fn oversized_buffers_are_bounded() {
    let mem = guest_memory();
    let mut rng = Rng::new().unwrap();
    let (q, _irq) = activate(&mem, &mut rng);
    let len = 2 * RNG_MAX_BYTES_PER_REQUEST as u32;
    add_chain(&q, 0, &[wr(BUF_BASE, len)]);
    rng.process_queue();
    assert_eq!(used_elem(&q, 0), (0, RNG_MAX_BYTES_PER_REQUEST as u32));
    let filled = read_bytes(&mem, BUF_BASE, RNG_MAX_BYTES_PER_REQUEST);
    assert!(filled[filled.len() - 64..].iter().any(|&b| b != 0));
    let rest = read_bytes(
        &mem,
        BUF_BASE + RNG_MAX_BYTES_PER_REQUEST as u64,
        RNG_MAX_BYTES_PER_REQUEST,
    );
    assert!(
        rest.iter().all(|&b| b == 0),
        "bytes past the bound were written"
    );
    assert_eq!(rng.metrics().capped_requests.get(), 1);
}

#[test]
fn bad_chains_are_skipped() {
    let mem = guest_memory();
    let mut rng = Rng::new().unwrap();
    let (q, _irq) = activate(&mem, &mut rng);
    // Device-readable buffer, out-of-memory buffer, zero-length buffer.
    add_chain(&q, 0, &[rd(BUF_BASE, 16)]);
    add_chain(&q, 1, &[wr(MEM_SIZE - 8, 16)]);
    add_chain(&q, 2, &[wr(BUF_BASE, 0)]);
    assert_eq!(rng.process_queue(), 3);
    for i in 0..3 {
        assert_eq!(used_elem(&q, i), (u32::from(i), 0));
    }
    assert_eq!(read_bytes(&mem, BUF_BASE, 16), vec![0; 16]);
    let m = rng.metrics();
    assert_eq!(m.bad_chains.get(), 3);
    assert_eq!(m.bytes.get(), 0);

    // Still serves good requests afterwards.
    add_chain(&q, 0, &[wr(BUF_BASE, 16)]);
    rng.process_queue();
    assert_eq!(used_elem(&q, 3), (0, 16));
}

#[test]
fn no_config_space_and_reset() {
    let mem = guest_memory();
    let mut rng = Rng::new().unwrap();
    let mut b = [0xffu8; 4];
    rng.read_config(0, &mut b);
    assert_eq!(b, [0; 4]);
    rng.write_config(0, &[1]);
    assert_eq!(rng.metrics().config_errors.get(), 2);
    let (_q, _irq) = activate(&mem, &mut rng);
    assert!(rng.is_activated());
    rng.reset();
    assert!(!rng.is_activated());
    assert_eq!(rng.process_queue(), 0);
}
