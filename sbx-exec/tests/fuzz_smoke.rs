//! The frame decoder over deterministic pseudo-random and mutated inputs on stable Rust (the
//! libFuzzer target in `fuzz/` runs the same checks with coverage guidance).

use sbx_exec::{ExecRequest, ExitStatus, Frame, FrameDecoder, StreamId, User, WindowSize};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let req = ExecRequest::new(["sh", "-c", "x"])
        .env("K", "V")
        .cwd("/tmp")
        .user(User::Name("agent".into()))
        .tty(WindowSize::new(24, 80));
    [
        Frame::Hello { version: 1 },
        Frame::Exec {
            request: req,
            window: 65536,
        },
        Frame::Stdin(b"data".to_vec()),
        Frame::Credit {
            stream: StreamId::Stdout,
            bytes: 5,
        },
        Frame::Output {
            stream: StreamId::Stderr,
            data: vec![1, 2, 3],
        },
        Frame::Exit(ExitStatus::Code(3)),
        Frame::Resize(WindowSize::new(1, 2)),
    ]
    .iter()
    .map(Frame::to_bytes)
    .collect()
}

/// The fuzz target's checks: no panic, bounded buffering, accepted frames round-trip.
fn check(data: &[u8], split: usize) {
    let split = split.min(data.len());
    let mut dec = FrameDecoder::new();
    for part in [&data[..split], &data[split..]] {
        dec.extend(part);
        loop {
            match dec.decode() {
                Ok(Some(f)) => {
                    let mut again = FrameDecoder::new();
                    again.extend(&f.to_bytes());
                    assert_eq!(again.decode().unwrap(), Some(f));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(dec.buffered() <= data.len());
    }
    let _ = Frame::decode_body(data);
}

#[test]
fn random_and_mutated_inputs() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let seeds = seeds();
    let mut accepted = 0;
    for i in 0..30_000 {
        let mut data = if i % 3 == 0 {
            (0..rng.below(300)).map(|_| rng.next() as u8).collect()
        } else {
            let mut d = seeds[rng.below(seeds.len())].clone();
            d.extend_from_slice(&seeds[rng.below(seeds.len())]);
            d
        };
        for _ in 0..rng.below(4) {
            if data.is_empty() {
                break;
            }
            let at = rng.below(data.len());
            data[at] = rng.next() as u8;
        }
        if data.len() > 4 && rng.below(4) == 0 {
            let cut = rng.below(data.len());
            data.truncate(cut);
        }
        let mut dec = FrameDecoder::new();
        dec.extend(&data);
        if matches!(dec.decode(), Ok(Some(_))) {
            accepted += 1;
        }
        check(&data, rng.below(data.len() + 1));
    }
    // The corpus must reach the decoder's success paths, not only its rejections.
    assert!(accepted > 1000, "only {accepted} inputs decoded");
}
