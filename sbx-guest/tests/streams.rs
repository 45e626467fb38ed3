//! 100 MiB each way through the agent, with checksums.

mod common;

use std::io::{Read, Write};

use common::{within, Sandbox};
use sbx_exec::ExecRequest;
use sha2::{Digest, Sha256};

const SIZE: usize = 100 << 20;

/// Deterministic pseudo-random bytes (xorshift64*), so nothing compresses or repeats.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams SIZE bytes into stdin from another thread; returns their SHA-256.
fn feed(mut stdin: sbx_exec::ExecStdin) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut h = Sha256::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..SIZE / buf.len() {
            fill(&mut buf, &mut state);
            h.update(&buf);
            stdin.write_all(&buf).unwrap();
        }
        hex(&h.finalize())
    })
}

fn drain_hash(mut r: impl Read) -> (usize, String) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            return (n, hex(&h.finalize()));
        }
        n += k;
        h.update(&buf[..k]);
    }
}

#[test]
fn hundred_mib_through_cat_both_ways_at_once() {
    let sb = Sandbox::start();
    let client = sb.client.clone();
    within(300, move || {
        let mut s = client.exec(ExecRequest::new(["cat"])).unwrap();
        let sent = feed(s.take_stdin().unwrap());
        let (n, got) = drain_hash(s.take_stdout().unwrap());
        assert!(s.wait().unwrap().success());
        assert_eq!(n, SIZE);
        assert_eq!(got, sent.join().unwrap());
    });
}

#[test]
fn hundred_mib_in_checked_by_the_guest() {
    let sb = Sandbox::start();
    let client = sb.client.clone();
    within(300, move || {
        let mut s = client.exec(ExecRequest::new(["sha256sum"])).unwrap();
        let sent = feed(s.take_stdin().unwrap());
        let mut out = String::new();
        s.take_stdout().unwrap().read_to_string(&mut out).unwrap();
        assert!(s.wait().unwrap().success());
        assert_eq!(
            out.split_whitespace().next(),
            Some(sent.join().unwrap().as_str())
        );
    });
}

#[test]
fn hundred_mib_out_checked_against_the_guest() {
    let sb = Sandbox::start();
    let client = sb.client.clone();
    within(300, move || {
        let script = format!(
            "head -c {SIZE} /dev/urandom > /tmp/big && sha256sum /tmp/big >&2 && cat /tmp/big"
        );
        let mut s = client
            .exec(ExecRequest::new(["sh", "-c", &script]))
            .unwrap();
        let mut err = s.take_stderr().unwrap();
        let t = std::thread::spawn(move || {
            let mut e = String::new();
            err.read_to_string(&mut e).unwrap();
            e
        });
        let (n, got) = drain_hash(s.take_stdout().unwrap());
        assert!(s.wait().unwrap().success());
        assert_eq!(n, SIZE);
        let guest = t.join().unwrap();
        assert_eq!(guest.split_whitespace().next(), Some(got.as_str()));
    });
}
