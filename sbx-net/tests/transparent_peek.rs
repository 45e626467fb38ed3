//! The transparent peek parser over real rustls ClientHellos, HTTP heads and deterministic
//! mutations of both, checking what the fuzz target checks (no panic; the same decision for
//! any read size) on stable, without sanitizers. `fuzz/fuzz_targets/transparent_peek.rs` runs
//! it under libFuzzer; set `SBX_FUZZ_SEEDS=<dir>` to write the seeds used here as a corpus.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use sbx_net::peek_for_fuzzing;

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The first flight of a rustls client: one record holding the ClientHello.
fn client_hello(server: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(server.to_string()).unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// Re-frames the handshake bytes of `flight` into records of at most `size` bytes.
fn reframe(flight: &[u8], size: usize) -> Vec<u8> {
    let mut handshake = Vec::new();
    let mut rest = flight;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        handshake.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    let mut out = Vec::new();
    for part in handshake.chunks(size) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn long_name() -> String {
    let label = "l".repeat(62);
    format!("{label}.{label}.{label}.{}.example", "m".repeat(56))
}

fn seeds() -> Vec<Vec<u8>> {
    let long = long_name();
    let mut out = vec![
        client_hello("api.test", &[b"h2", b"http/1.1"]),
        client_hello("a.b.c.example.com", &[]),
        client_hello(&long, &[b"http/1.1"]),
        client_hello("127.0.0.1", &[]),
        reframe(&client_hello("split.test", &[b"h2"]), 1),
        reframe(&client_hello("split.test", &[b"h2"]), 100),
        b"GET /x?y=1 HTTP/1.1\r\nHost: web.test\r\nAccept: */*\r\n\r\n".to_vec(),
        b"POST /upload HTTP/1.1\r\nHost: web.test:8080\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        b"OPTIONS * HTTP/1.1\r\nHost: web.test\r\n\r\n".to_vec(),
    ];
    out.push(b"\x16\x03\x01\x00".to_vec());
    out
}

#[test]
fn real_client_hellos_give_their_sni_at_any_read_size() {
    let long = long_name();
    assert_eq!(long.len(), 253);
    for name in ["api.test", "a.b.c.example.com", long.as_str()] {
        let want = format!("tls sni=Some({name:?})");
        let flight = client_hello(name, &[b"h2", b"http/1.1"]);
        for record_size in [usize::MAX, 4096, 100, 7, 1] {
            let bytes = if record_size == usize::MAX {
                flight.clone()
            } else {
                reframe(&flight, record_size)
            };
            for step in [0, 1, 2, 3, 5, 64, 1000] {
                assert_eq!(
                    peek_for_fuzzing(&bytes, step),
                    want,
                    "{name}, records of {record_size}, reads of {step}"
                );
            }
            // Anything short of the whole hello is undecided, never a wrong answer.
            assert_eq!(peek_for_fuzzing(&bytes[..bytes.len() - 1], 1), "undecided");
        }
    }
    assert_eq!(
        peek_for_fuzzing(&client_hello("127.0.0.1", &[]), 1),
        "tls sni=None"
    );
}

#[test]
fn mutated_inputs_never_panic_and_do_not_depend_on_read_size() {
    let seeds = seeds();
    if let Some(dir) = std::env::var_os("SBX_FUZZ_SEEDS") {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            // The fuzz target reads its step from the first byte.
            let mut input = vec![(i * 5) as u8];
            input.extend_from_slice(s);
            std::fs::write(std::path::Path::new(&dir).join(format!("seed-{i}")), input).unwrap();
        }
    }
    let mut rng = Rng(0x7a5_9eed);
    let mut decided = 0;
    for i in 0..4000 {
        let mut data = seeds[i % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(5) {
                0 if !data.is_empty() => {
                    let at = rng.below(data.len());
                    data[at] = rng.next() as u8;
                }
                1 if !data.is_empty() => {
                    let at = rng.below(data.len());
                    data[at] ^= 1 << rng.below(8);
                }
                2 => {
                    let cut = rng.below(data.len() + 1);
                    data.truncate(cut);
                }
                3 => {
                    let at = rng.below(data.len() + 1);
                    let n = rng.below(64);
                    let fill: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    data.splice(at..at, fill);
                }
                _ => {
                    // Lengths are the interesting bytes: poke one of the first 64.
                    if !data.is_empty() {
                        let at = rng.below(data.len().min(64));
                        data[at] = [0, 1, 0x40, 0xff][rng.below(4)];
                    }
                }
            }
        }
        let whole = peek_for_fuzzing(&data, 0);
        let step = rng.below(32) + 1;
        assert_eq!(
            whole,
            peek_for_fuzzing(&data, step),
            "input {i}, step {step}"
        );
        if whole != "undecided" {
            decided += 1;
        }
    }
    // The mutations reach decisions, not just truncations.
    assert!(decided > 1000, "{decided}");
    // Big inputs are always decided within the bound.
    let big = vec![b'A'; 20 * 1024];
    assert!(peek_for_fuzzing(&big, 4096).starts_with("invalid"));
    // A ClientHello that needs a second full record cannot fit in 16 KiB.
    let mut huge_hello = vec![0x16, 3, 1, 0x40, 0, 1, 0, 0x3f, 0xf0];
    huge_hello.extend(std::iter::repeat_n(0u8, 20 * 1024));
    assert_eq!(
        peek_for_fuzzing(&huge_hello, 4096),
        "invalid: client hello or request head over the limit"
    );
}
