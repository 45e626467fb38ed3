//! A broken or hostile agent: the client reports an error instead of hanging or panicking.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use sbx_exec::{Client, Error, ExecRequest, ExitStatus, Frame, StreamId, MAX_FRAME_LEN};

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake agent that reads the client's opening frames, then writes `reply` and closes.
fn fake_agent(tag: &str, reply: Vec<u8>) -> (Dir, Client, std::thread::JoinHandle<()>) {
    let dir = std::env::temp_dir().join(format!("sbx-exec-fake-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.sock");
    let l = UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(&reply);
        // Keep the connection open briefly so the client must act on the bytes, not on EOF.
        std::thread::sleep(Duration::from_millis(300));
    });
    (Dir(dir), Client::unix(path), h)
}

fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("client hung")
}

fn hello() -> Vec<u8> {
    Frame::Hello {
        version: sbx_exec::PROTOCOL_VERSION,
    }
    .to_bytes()
}

#[test]
fn garbage_before_start_is_an_error() {
    let mut bad_magic = vec![7, 0, 0, 0, 0x01, b'X', b'X', b'X', b'X', 1, 0];
    bad_magic.truncate(11);
    let mut unknown = hello();
    unknown.extend_from_slice(&[1, 0, 0, 0, 0x55]);
    type Check = fn(&Error) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("huge", (MAX_FRAME_LEN + 1).to_le_bytes().to_vec(), |e| {
            matches!(e, Error::Protocol(_))
        }),
        ("magic", bad_magic, |e| matches!(e, Error::Protocol(_))),
        ("unknown", unknown, |e| matches!(e, Error::Protocol(_))),
        ("version", Frame::Hello { version: 77 }.to_bytes(), |e| {
            matches!(e, Error::Version(77))
        }),
        ("closed", Vec::new(), |e| {
            matches!(e, Error::ConnectionClosed)
        }),
        ("truncated", hello()[..5].to_vec(), |e| {
            matches!(e, Error::ConnectionClosed)
        }),
        (
            "wrong frame",
            [hello(), Frame::Ack.to_bytes()].concat(),
            |e| matches!(e, Error::Unexpected(_)),
        ),
    ];
    for (tag, reply, check) in cases {
        let (_d, client, h) = fake_agent(tag, reply);
        let r = within(move || client.exec(ExecRequest::new(["true"])).map(|_| ()));
        let e = r.expect_err(tag);
        assert!(check(&e), "{tag}: {e:?}");
        h.join().unwrap();
    }
}

#[test]
fn garbage_mid_stream_is_an_error() {
    let mut reply = hello();
    reply.extend(
        Frame::Started {
            pid: 5,
            stdin_window: 10,
        }
        .to_bytes(),
    );
    reply.extend(
        Frame::Output {
            stream: StreamId::Stdout,
            data: b"partial".to_vec(),
        }
        .to_bytes(),
    );
    reply.extend_from_slice(&[3, 0, 0, 0, 0x84, 0xff, 0xff]);
    let (_d, client, h) = fake_agent("mid", reply);
    within(move || {
        let mut s = client.exec(ExecRequest::new(["x"])).unwrap();
        assert_eq!(s.pid(), 5);
        let mut out = s.take_stdout().unwrap();
        let mut v = Vec::new();
        assert!(out.read_to_end(&mut v).is_err());
        assert_eq!(v, b"partial");
        assert!(matches!(s.wait(), Err(Error::Protocol(_))));
    });
    h.join().unwrap();
}

#[test]
fn well_formed_fake_session_works() {
    let mut reply = hello();
    reply.extend(
        Frame::Started {
            pid: 9,
            stdin_window: 10,
        }
        .to_bytes(),
    );
    reply.extend(
        Frame::Output {
            stream: StreamId::Stderr,
            data: b"e".to_vec(),
        }
        .to_bytes(),
    );
    reply.extend(
        Frame::Output {
            stream: StreamId::Stdout,
            data: b"o".to_vec(),
        }
        .to_bytes(),
    );
    reply.extend(
        Frame::Eof {
            stream: StreamId::Stdout,
        }
        .to_bytes(),
    );
    reply.extend(
        Frame::Eof {
            stream: StreamId::Stderr,
        }
        .to_bytes(),
    );
    reply.extend(Frame::Exit(ExitStatus::Code(4)).to_bytes());
    let (_d, client, h) = fake_agent("ok", reply);
    let out = within(move || client.output(ExecRequest::new(["x"])).unwrap());
    assert_eq!(out.stdout, b"o");
    assert_eq!(out.stderr, b"e");
    assert_eq!(out.status, ExitStatus::Code(4));
    h.join().unwrap();
}

#[test]
fn connection_lost_before_exit_is_an_error() {
    let mut reply = hello();
    reply.extend(
        Frame::Started {
            pid: 9,
            stdin_window: 10,
        }
        .to_bytes(),
    );
    let (_d, client, h) = fake_agent("lost", reply);
    let r = within(move || client.exec(ExecRequest::new(["x"])).unwrap().wait());
    assert!(matches!(r, Err(Error::ConnectionClosed)), "{r:?}");
    h.join().unwrap();
}

#[test]
fn output_beyond_the_window_is_an_error() {
    let mut reply = hello();
    reply.extend(
        Frame::Started {
            pid: 9,
            stdin_window: 10,
        }
        .to_bytes(),
    );
    // The client grants 128 KiB per stream; a guest sending 4 x 128 KiB without credit is
    // refused instead of buffered.
    for _ in 0..4 {
        reply.extend(
            Frame::Output {
                stream: StreamId::Stdout,
                data: vec![0; sbx_exec::MAX_DATA_CHUNK],
            }
            .to_bytes(),
        );
    }
    let (_d, client, h) = fake_agent("flood", reply);
    let client = client.window(sbx_exec::MAX_DATA_CHUNK as u32);
    let r = within(move || {
        let mut s = client.exec(ExecRequest::new(["x"])).unwrap();
        // Nobody reads stdout, so no credit goes back.
        std::thread::sleep(Duration::from_millis(100));
        s.wait()
    });
    assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");
    h.join().unwrap();
}

#[test]
fn a_silent_agent_times_out() {
    let dir = std::env::temp_dir().join(format!("sbx-exec-silent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.sock");
    // Bound but never accepting: the connect succeeds (backlog), nothing ever answers.
    let _l = UnixListener::bind(&path).unwrap();
    let client = Client::unix(&path).start_timeout(Duration::from_millis(300));
    let r = within(move || client.exec(ExecRequest::new(["x"])).map(|_| ()));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
