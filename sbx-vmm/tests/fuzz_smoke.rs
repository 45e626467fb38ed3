//! Run the fuzz harnesses of guest-controlled parsers over many deterministic pseudo-random
//! inputs, so CI (stable, no sanitizers) exercises them too; `fuzz/` runs them under
//! libFuzzer.

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn block_queue_survives_random_descriptor_tables() {
    let mut rng = Rng(0x5b5_c0ffee);
    let mut completed = 0;
    for i in 0..1500 {
        let len = (rng.next() % 2048) as usize;
        let mut data = rng.bytes(len);
        // Bias a third of the inputs towards plausible chains: small addresses, sane lengths.
        if i % 3 == 0 {
            for d in data.chunks_exact_mut(16).take(16) {
                let addr = 0x1_0000 + (rng.next() % 0x2000);
                d[..8].copy_from_slice(&addr.to_le_bytes());
                let len = (rng.next() % 1100) as u32;
                d[8..12].copy_from_slice(&len.to_le_bytes());
                d[12..14].copy_from_slice(&((rng.next() % 8) as u16).to_le_bytes());
                d[14..16].copy_from_slice(&((rng.next() % 17) as u16).to_le_bytes());
            }
        }
        completed += sbx_vmm::test_utils::fuzz_block_queue(&data);
    }
    // The inputs must reach the request parser, not just bounce off the ring.
    assert!(completed > 300, "only {completed} chains completed");
}

#[test]
fn net_queues_survive_random_descriptor_tables() {
    let mut rng = Rng(0x6e65_7400);
    let (mut completed, mut delivered) = (0, 0);
    for i in 0..1500 {
        let len = (rng.next() % 2048) as usize;
        let mut data = rng.bytes(len.max(1));
        // Bias a third of the inputs towards plausible chains: small addresses, sizes around
        // the header and a full frame.
        if i % 3 == 0 {
            for d in data[1..].chunks_exact_mut(16).take(16) {
                let addr = 0x1_0000 + (rng.next() % 0x2000);
                d[..8].copy_from_slice(&addr.to_le_bytes());
                let len = [12, 13, 100, 1526, 2048][(rng.next() % 5) as usize];
                d[8..12].copy_from_slice(&(len as u32).to_le_bytes());
                d[12..14].copy_from_slice(&((rng.next() % 4) as u16).to_le_bytes());
                d[14..16].copy_from_slice(&((rng.next() % 17) as u16).to_le_bytes());
            }
            // Heads mostly in range.
            if let Some(ring) = data.get_mut(257..257 + 33) {
                ring[0] = 1 + (rng.next() % 16) as u8;
                for h in ring[1..].chunks_exact_mut(2) {
                    h.copy_from_slice(&((rng.next() % 18) as u16).to_le_bytes());
                }
            }
        }
        let n = sbx_vmm::test_utils::fuzz_net_queue(&data);
        completed += n;
        if data[0] & 1 == 0 {
            delivered += n;
        }
    }
    // The inputs must reach the frame paths, not just bounce off the ring.
    assert!(completed > 300, "only {completed} chains completed");
    assert!(delivered > 100, "only {delivered} rx chains completed");
}

/// A libFuzzer find (2026-12-04): receive buffers pointed at the used ring, so the frames
/// written there garbled the completions the harness reads. Buffers now start above the
/// rings; the input must pass and still complete chains.
#[test]
fn net_queue_regression_rx_buffer_over_the_used_ring() {
    let data = include_bytes!("fixtures/fuzz-net-rx-buffer-over-used-ring.bin");
    assert_eq!(data[0] & 1, 0, "a receive-queue input");
    let n = sbx_vmm::test_utils::fuzz_net_queue(data);
    assert!(n > 0, "no chain completed");
}
