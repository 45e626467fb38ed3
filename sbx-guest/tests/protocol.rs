//! Malformed input from the host: the agent answers with an error (or closes), never hangs or
//! dies, and serves the next exec.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{within, Sandbox};
use sbx_exec::{ExecRequest, Frame, FrameDecoder, RemoteErrorKind, MAX_FRAME_LEN};

/// Sends `bytes`, then reads frames until the agent closes; returns them.
fn exchange(sock: &std::path::Path, bytes: &[u8]) -> Vec<Frame> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The agent may close before reading everything; that is fine.
    let _ = s.write_all(bytes);
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    loop {
        while let Some(f) = dec.decode().expect("agent frames are well-formed") {
            frames.push(f);
        }
        match dec.read_from(&mut s) {
            Ok(0) => return frames,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return frames,
            Err(e) => panic!("agent did not close the connection: {e}"),
        }
    }
}

fn hello() -> Vec<u8> {
    Frame::Hello {
        version: sbx_exec::PROTOCOL_VERSION,
    }
    .to_bytes()
}

fn assert_error(frames: &[Frame], kind: RemoteErrorKind) {
    assert!(
        matches!(frames.first(), Some(Frame::Hello { .. })),
        "{frames:?}"
    );
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Error { kind: k, .. } if *k == kind)),
        "expected a {kind:?} error: {frames:?}"
    );
}

#[test]
fn malformed_frames_from_the_host_get_an_error() {
    let sb = Sandbox::start();
    let sock = sb.sock.clone();
    let client = sb.client.clone();
    within(120, move || {
        let huge = (MAX_FRAME_LEN + 1).to_le_bytes().to_vec();
        let mut bad_tag = hello();
        bad_tag.extend_from_slice(&[1, 0, 0, 0, 0x7e]);
        let mut bad_exec = hello();
        bad_exec.extend_from_slice(&[9, 0, 0, 0, 0x02, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        let mut zero_len = hello();
        zero_len.extend_from_slice(&[0, 0, 0, 0]);
        let mut wrong_first = Frame::StdinEof.to_bytes();
        wrong_first.extend(hello());
        let mut exec_then_hello = hello();
        exec_then_hello.extend(
            Frame::Exec {
                request: ExecRequest::new(["cat"]),
                window: 1 << 16,
            }
            .to_bytes(),
        );
        exec_then_hello.extend(hello());
        for (name, bytes) in [
            ("huge length", huge),
            ("unknown tag", bad_tag),
            ("lying count", bad_exec),
            ("zero length", zero_len),
            ("no hello", wrong_first),
            ("hello mid-exec", exec_then_hello),
        ] {
            let frames = exchange(&sock, &bytes);
            assert!(!frames.is_empty(), "{name}: no answer");
            assert_error(&frames, RemoteErrorKind::Protocol);
        }
        // A version this agent does not speak.
        let frames = exchange(&sock, &Frame::Hello { version: 999 }.to_bytes());
        assert_error(&frames, RemoteErrorKind::Version);

        // Random garbage of many sizes: some answer (error or nothing), never a hang.
        let mut state = 1u32;
        for len in [1usize, 3, 4, 5, 17, 100, 4096, 70_000] {
            let mut g = hello();
            g.extend((0..len).map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 16) as u8
            }));
            let mut s = UnixStream::connect(&sock).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
            let _ = s.write_all(&g);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            // Ends with EOF or reset: the agent closed the connection.
            let r = s.read_to_end(&mut sink);
            assert!(r.is_ok() || r.unwrap_err().kind() != std::io::ErrorKind::WouldBlock);
        }

        // Stdin beyond the granted window.
        let mut flood = hello();
        flood.extend(
            Frame::Exec {
                request: ExecRequest::new(["sleep", "100"]),
                window: 1 << 16,
            }
            .to_bytes(),
        );
        // 8 MiB: more than the 1 MiB window plus what the pipe to `sleep` can absorb.
        for _ in 0..64 {
            flood.extend(Frame::Stdin(vec![0; sbx_exec::MAX_DATA_CHUNK]).to_bytes());
        }
        let frames = exchange(&sock, &flood);
        assert!(
            frames.iter().any(|f| matches!(f, Frame::Started { .. })),
            "{frames:?}"
        );
        assert_error(&frames, RemoteErrorKind::Protocol);

        // The agent still serves, and the `sleep` of the flood was killed.
        let out = client
            .output(ExecRequest::new(["sh", "-c", "pidof sleep; echo ok"]))
            .unwrap();
        assert_eq!(out.stdout, b"ok\n");
        // pidof does see a running sleep (so the check above can fail).
        let _s = client.exec(ExecRequest::new(["sleep", "100"])).unwrap();
        let out = client.output(ExecRequest::new(["pidof", "sleep"])).unwrap();
        assert!(out.status.success() && !out.stdout.is_empty());
    });
}
