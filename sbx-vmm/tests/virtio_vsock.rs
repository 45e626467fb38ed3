//! virtio-vsock over real guest memory and real Unix sockets: the test plays the guest driver
//! on the queues and the host processes on the sockets, and runs the device on an event
//! manager as the VMM does.

mod vsock_util;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use sbx_vmm::devices::virtio::vsock::{
    Op, Vsock, VsockConfig, CONN_BUF_ALLOC, VSOCK_HDR_LEN, VSOCK_MAX_CONNECTIONS,
    VSOCK_REQUEST_TIMEOUT, VSOCK_SHUTDOWN_BOTH, VSOCK_SHUTDOWN_RCV, VSOCK_SHUTDOWN_SEND,
    VSOCK_SHUTDOWN_TIMEOUT,
};
use sbx_vmm::devices::virtio::{device_type, VirtioDevice, VirtioError};
use sbx_vmm::{require_kvm, VmBuilder, VmExit};

use vsock_util::*;

/// Read from `s` until EOF or an error; returns what was read and whether it ended in EOF.
fn read_to_end(s: &mut UnixStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (out, false),
        }
    }
}

#[test]
fn device_basics_and_config() {
    let dir = TempDir::new();
    let path = dir.0.join("v.sock");
    let mut dev = Vsock::new(VsockConfig::new(42, &path)).unwrap();
    assert_eq!(dev.device_type(), device_type::VSOCK);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    assert_eq!(dev.queue_events().len(), 3);
    assert_ne!(dev.avail_features() & (1 << 32), 0);
    let mut cid = [0u8; 8];
    dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 42);
    let mut hi = [0xffu8; 4];
    dev.read_config(4, &mut hi);
    assert_eq!(hi, [0; 4]);
    dev.write_config(0, &[1]);
    let mut past = [0xffu8; 4];
    dev.read_config(8, &mut past);
    assert_eq!(past, [0; 4]);
    assert_eq!(dev.metrics().config_errors.get(), 2);
    assert!(path.exists());

    // The socket path is taken while the device lives.
    assert!(matches!(
        Vsock::new(VsockConfig::new(43, &path)),
        Err(VirtioError::VsockSocket { .. })
    ));
    drop(dev);
    assert!(!path.exists(), "socket file removed on drop");

    for bad in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        assert!(matches!(
            Vsock::new(VsockConfig::new(bad, &path)),
            Err(VirtioError::InvalidCid(c)) if c == bad
        ));
    }
    let _ = VsockConfig::new(3, dir.0.join("x"));
}

#[test]
fn host_initiated_handshake() {
    let mut h = Harness::new();
    let (mut host, local) = h.host_connect(1234, 4096);
    assert!(local >= 1 << 30, "host-side ports start at 2^30");
    assert_eq!(h.dev().connection_count(), 1);
    assert_eq!(h.dev().metrics().host_connects.get(), 1);

    // Bytes flow both ways.
    host.write_all(b"ping").unwrap();
    h.pump();
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Rw));
    assert_eq!(pkts[0].data, b"ping");
    assert_eq!((pkts[0].hdr.src_port, pkts[0].hdr.dst_port), (local, 1234));
    assert_eq!(pkts[0].hdr.buf_alloc, CONN_BUF_ALLOC);

    h.send(&ghdr(Op::Rw, 1234, local, 4), b"pong");
    let mut b = [0u8; 4];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    assert!(h.irq.status() != 0, "used buffers raise the interrupt");
}

#[test]
fn host_data_written_before_the_guest_accepts_is_kept() {
    let mut h = Harness::new();
    let mut host = UnixStream::connect(&h.path).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    host.write_all(b"CONNECT 77\nearly bytes").unwrap();
    let pkts = h.recv();
    assert_eq!(
        pkts.len(),
        1,
        "only the REQUEST before the guest accepts: {pkts:?}"
    );
    let local = pkts[0].hdr.src_port;
    h.send(&ghdr(Op::Response, 77, local, 0), &[]);
    let pkts = h.recv();
    let data: Vec<u8> = pkts.iter().flat_map(|p| p.data.clone()).collect();
    assert_eq!(data, b"early bytes");
    let mut line = [0u8; 64];
    let n = host.read(&mut line).unwrap();
    assert_eq!(&line[..n], format!("OK {local}\n").as_bytes());
}

#[test]
fn guest_refuses_host_connect() {
    let mut h = Harness::new();
    let mut host = UnixStream::connect(&h.path).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    host.write_all(b"CONNECT 9\n").unwrap();
    let pkts = h.recv();
    assert_eq!(pkts[0].op(), Some(Op::Request));
    h.send(&ghdr(Op::Rst, 9, pkts[0].hdr.src_port, 0), &[]);
    let (data, eof) = read_to_end(&mut host);
    assert!(data.is_empty() && eof, "no OK line, just EOF");
    assert_eq!(h.dev().connection_count(), 0);
    assert_eq!(h.dev().metrics().rst_received.get(), 1);
}

#[test]
fn bad_connect_lines_close_the_stream() {
    let mut h = Harness::new();
    for line in [&b"CONNECT x\n"[..], b"HELLO 1\n", &[b'9'; 100]] {
        let mut host = UnixStream::connect(&h.path).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        host.write_all(line).unwrap();
        h.pump();
        let (data, _) = read_to_end(&mut host);
        assert!(data.is_empty());
    }
    // A host process that hangs up before finishing its line.
    let mut host = UnixStream::connect(&h.path).unwrap();
    host.write_all(b"CONN").unwrap();
    drop(host);
    h.pump();
    assert_eq!(h.dev().metrics().bad_connect_lines.get(), 4);
    assert_eq!(h.dev().connection_count(), 0);
    assert!(h.recv().is_empty(), "nothing reached the guest");
}

/// Several MiB each way at once with a small guest buffer, checking every byte and the
/// credit rules on both sides.
#[test]
fn bulk_data_both_ways_with_credit() {
    const GUEST_BUF: u32 = 16 << 10;
    const TO_GUEST: usize = 4 << 20;
    const TO_HOST: usize = 4 << 20;
    let mut h = Harness::new();
    h.rx_buf_len = 8192;
    let (host, local) = h.host_connect(5000, GUEST_BUF);
    let port = 5000;

    let mut writer = host.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        let mut off = 0usize;
        while off < TO_GUEST {
            let n = (TO_GUEST - off).min(100_000);
            writer.write_all(&pattern(1, off as u64, n)).unwrap();
            off += n;
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = host.try_clone().unwrap();
    let r = std::thread::spawn(move || read_to_end(&mut reader));

    // Guest side state.
    let mut got = 0usize; // bytes received from the host
    let mut fwd_cnt = 0u32; // bytes the guest "application" consumed
    let mut fwd_cnt_sent = 0u32;
    let mut sent = 0usize; // bytes sent to the host
    let mut dev_buf_alloc = 0u32;
    let mut dev_fwd_cnt = 0u32;
    let mut host_eof = false;
    let mut seed_len = 1usize;
    let start = std::time::Instant::now();
    while got < TO_GUEST || sent < TO_HOST || !host_eof {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "stalled: got {got} sent {sent}"
        );
        for p in h.recv() {
            assert_eq!((p.hdr.src_port, p.hdr.dst_port), (local, port));
            dev_buf_alloc = p.hdr.buf_alloc;
            dev_fwd_cnt = p.hdr.fwd_cnt;
            match p.op() {
                Some(Op::Rw) => {
                    assert_eq!(p.data, pattern(1, got as u64, p.data.len()), "at {got}");
                    got += p.data.len();
                    // Never more than our credit.
                    assert!(got as u32 - fwd_cnt <= GUEST_BUF, "credit exceeded");
                    // The application consumes right away.
                    fwd_cnt = got as u32;
                }
                // The device returns credit on data packets and with these.
                Some(Op::CreditUpdate) => {}
                Some(Op::Shutdown) => {
                    assert_eq!(p.hdr.flags, VSOCK_SHUTDOWN_SEND);
                    assert_eq!(got, TO_GUEST, "shutdown after all data");
                    host_eof = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Tell the device about consumed data, like Linux does when it falls behind.
        if fwd_cnt.wrapping_sub(fwd_cnt_sent) >= GUEST_BUF / 2 {
            let mut c = ghdr(Op::CreditUpdate, port, local, 0);
            c.buf_alloc = GUEST_BUF;
            c.fwd_cnt = fwd_cnt;
            h.send(&c, &[]);
            fwd_cnt_sent = fwd_cnt;
        }
        // Send within the device's credit, in odd-sized chunks.
        let mut queued = false;
        while sent < TO_HOST {
            let credit = dev_buf_alloc.saturating_sub((sent as u32).wrapping_sub(dev_fwd_cnt));
            seed_len = (seed_len * 7919 + 13) % 60_000 + 1;
            let n = seed_len.min(TO_HOST - sent).min(credit as usize);
            if n == 0 {
                break;
            }
            let mut d = ghdr(Op::Rw, port, local, n as u32);
            d.buf_alloc = GUEST_BUF;
            d.fwd_cnt = fwd_cnt;
            if !h.queue_tx(&d, &pattern(2, sent as u64, n)) {
                break;
            }
            fwd_cnt_sent = fwd_cnt;
            sent += n;
            queued = true;
        }
        if queued {
            h.kick_tx();
        }
        h.pump();
    }
    // Close our side: the device shuts the host's write side once flushed, and resets us.
    let mut s = ghdr(Op::Shutdown, port, local, 0);
    s.flags = VSOCK_SHUTDOWN_BOTH;
    h.send(&s, &[]);
    let (to_host, eof) = r.join().unwrap();
    w.join().unwrap();
    assert!(eof);
    assert_eq!(to_host.len(), TO_HOST);
    assert!(
        to_host == pattern(2, 0, TO_HOST),
        "host received corrupted data"
    );
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Rst));
    h.pump();
    assert_eq!(h.dev().connection_count(), 0);
    let m = h.dev().metrics();
    assert_eq!(m.rx_bytes.get(), TO_GUEST as u64);
    assert_eq!(m.tx_bytes.get(), TO_HOST as u64);
    assert_eq!(m.credit_violations.get(), 0);
}

/// With only the guest sending, the device must hand back credit on its own.
#[test]
fn device_returns_credit_while_the_guest_sends() {
    const N: usize = 1 << 20;
    let mut h = Harness::new();
    let (host, local) = h.host_connect(88, 65536);
    let mut reader = host.try_clone().unwrap();
    let r = std::thread::spawn(move || {
        let mut got = vec![0u8; N];
        reader.read_exact(&mut got).unwrap();
        got == pattern(4, 0, N)
    });
    // The REQUEST told us the device's buffer; nothing consumed yet.
    let (mut buf_alloc, mut fwd_cnt) = (CONN_BUF_ALLOC, 0u32);
    let mut sent = 0usize;
    let mut updates = 0;
    let start = std::time::Instant::now();
    while sent < N {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "stalled at {sent}"
        );
        for p in h.recv() {
            assert_eq!(p.op(), Some(Op::CreditUpdate));
            updates += 1;
            buf_alloc = p.hdr.buf_alloc;
            fwd_cnt = p.hdr.fwd_cnt;
        }
        loop {
            let credit = buf_alloc - (sent as u32 - fwd_cnt);
            let n = (credit as usize).min(32 << 10).min(N - sent);
            if n == 0
                || !h.queue_tx(
                    &ghdr(Op::Rw, 88, local, n as u32),
                    &pattern(4, sent as u64, n),
                )
            {
                break;
            }
            sent += n;
        }
        h.kick_tx();
        h.pump();
    }
    assert!(r.join().unwrap(), "host received corrupted data");
    // The device's first buffer covers only CONN_BUF_ALLOC bytes; the rest of the megabyte
    // was sent on credit the device handed back unasked.
    assert!(updates > 0);
    // A credit request is answered with the current count.
    h.pump();
    h.send(&ghdr(Op::CreditRequest, 88, local, 0), &[]);
    let pkts = h.recv();
    let last = pkts.last().unwrap();
    assert_eq!(last.op(), Some(Op::CreditUpdate));
    assert_eq!(last.hdr.fwd_cnt, N as u32);
}

#[test]
fn guest_connects_to_a_listening_host_port() {
    let mut h = Harness::new();
    let svc = UnixListener::bind(format!("{}_{}", h.path.display(), 52)).unwrap();
    h.send(&ghdr(Op::Request, 7000, 52, 0), &[]);
    let (mut conn, _) = svc.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Response));
    assert_eq!((pkts[0].hdr.src_port, pkts[0].hdr.dst_port), (52, 7000));
    assert_eq!(h.dev().metrics().guest_connects.get(), 1);

    h.send(&ghdr(Op::Rw, 7000, 52, 5), b"hello");
    let mut b = [0u8; 5];
    conn.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");
    conn.write_all(b"world").unwrap();
    h.pump();
    let pkts = h.recv();
    assert_eq!(pkts[0].data, b"world");

    // The guest shuts its send side: the host reads EOF but can still write.
    let mut s = ghdr(Op::Shutdown, 7000, 52, 0);
    s.flags = VSOCK_SHUTDOWN_SEND;
    h.send(&s, &[]);
    let (rest, eof) = read_to_end(&mut conn);
    assert!(rest.is_empty() && eof);
    conn.write_all(b"late").unwrap();
    h.pump();
    let pkts = h.recv();
    assert_eq!(pkts[0].data, b"late");
    // The host closes too: SHUTDOWN reaches the guest, then the device resets the
    // connection because both directions are done.
    drop(conn);
    h.pump();
    let ops: Vec<_> = h.recv().iter().map(|p| p.op()).collect();
    assert_eq!(ops, [Some(Op::Shutdown), Some(Op::Rst)]);
    h.pump();
    assert_eq!(h.dev().connection_count(), 0);
}

#[test]
fn guest_receive_shutdown_makes_host_writes_fail() {
    let mut h = Harness::new();
    let (mut host, local) = h.host_connect(89, 65536);
    let mut s = ghdr(Op::Shutdown, 89, local, 0);
    s.flags = VSOCK_SHUTDOWN_RCV;
    h.send(&s, &[]);
    let e = host.write_all(&[0u8; 1 << 20]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    // The other direction still works.
    h.send(&ghdr(Op::Rw, 89, local, 3), b"abc");
    let mut b = [0u8; 3];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"abc");
    assert!(h.recv().is_empty(), "nothing more for the guest");
}

#[test]
fn guest_connect_to_a_missing_port_is_reset() {
    let mut h = Harness::new();
    h.send(&ghdr(Op::Request, 7001, 99, 0), &[]);
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Rst));
    assert_eq!((pkts[0].hdr.src_port, pkts[0].hdr.dst_port), (99, 7001));
    assert_eq!(h.dev().metrics().guest_connects_refused.get(), 1);
    assert_eq!(h.dev().connection_count(), 0);
}

#[test]
fn guest_reset_closes_the_host_stream() {
    let mut h = Harness::new();
    let (mut host, local) = h.host_connect(80, 65536);
    h.send(&ghdr(Op::Rst, 80, local, 0), &[]);
    let (data, eof) = read_to_end(&mut host);
    assert!(data.is_empty() && eof);
    assert_eq!(h.dev().connection_count(), 0);
    // Packets for the dead connection are answered with RST (not RW into the void).
    h.send(&ghdr(Op::Rw, 80, local, 3), b"abc");
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Rst));
}

#[test]
fn host_closing_mid_stream() {
    let mut h = Harness::new();
    let (mut host, local) = h.host_connect(81, 1 << 20);
    h.rx_buf_len = 60_000;
    let data = pattern(3, 0, 150_000);
    host.write_all(&data).unwrap();
    drop(host);
    h.pump();
    let mut got = Vec::new();
    let mut shutdown = None;
    for _ in 0..10 {
        for p in h.recv() {
            match p.op() {
                Some(Op::Rw) => {
                    assert!(shutdown.is_none(), "data after SHUTDOWN");
                    got.extend_from_slice(&p.data);
                }
                Some(Op::Shutdown) => shutdown = Some(p.hdr.flags),
                other => panic!("unexpected {other:?}"),
            }
        }
        if shutdown.is_some() {
            break;
        }
    }
    assert!(got == data, "all data arrives before the shutdown");
    assert_eq!(
        shutdown,
        Some(VSOCK_SHUTDOWN_BOTH),
        "a full hang-up shuts both ways"
    );
    // The guest closes its end: the connection is gone.
    h.send(&ghdr(Op::Rst, 81, local, 0), &[]);
    assert_eq!(h.dev().connection_count(), 0);
}

#[test]
fn host_write_failure_resets_the_guest() {
    let mut h = Harness::new();
    let (host, local) = h.host_connect(82, 65536);
    // The host stops reading: writes to it fail.
    host.shutdown(Shutdown::Read).unwrap();
    h.pump();
    h.send(&ghdr(Op::Rw, 82, local, 4), b"data");
    let ops: Vec<_> = h.recv().iter().map(|p| p.op()).collect();
    assert_eq!(ops, [Some(Op::Rst)]);
    assert_eq!(h.dev().metrics().host_io_errors.get(), 1);
    assert_eq!(h.dev().connection_count(), 0);
}

#[test]
fn guest_data_after_a_full_host_hangup_is_dropped() {
    let mut h = Harness::new();
    let (host, local) = h.host_connect(87, 65536);
    drop(host);
    h.pump();
    let ops: Vec<_> = h.recv().iter().map(|p| (p.op(), p.hdr.flags)).collect();
    assert_eq!(ops, [(Some(Op::Shutdown), VSOCK_SHUTDOWN_BOTH)]);
    // Late data is dropped; the guest's own SHUTDOWN finishes the connection with RST.
    h.send(&ghdr(Op::Rw, 87, local, 4), b"late");
    assert!(h.recv().is_empty());
    let mut s = ghdr(Op::Shutdown, 87, local, 0);
    s.flags = VSOCK_SHUTDOWN_BOTH;
    h.send(&s, &[]);
    let ops: Vec<_> = h.recv().iter().map(|p| p.op()).collect();
    assert_eq!(ops, [Some(Op::Rst)]);
    assert_eq!(h.dev().connection_count(), 0);
}

/// Run the loop until the device holds no connection; returns how long that took.
fn wait_for_no_connections(h: &mut Harness) -> Duration {
    let start = std::time::Instant::now();
    while h.dev().connection_count() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "connection never timed out"
        );
        h.em.run_with_timeout(50).unwrap();
    }
    start.elapsed()
}

#[test]
fn unanswered_request_times_out() {
    let mut h = Harness::new();
    let mut host = UnixStream::connect(&h.path).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    host.write_all(b"CONNECT 90\n").unwrap();
    let pkts = h.recv();
    assert_eq!(pkts[0].op(), Some(Op::Request));
    // The guest never answers.
    let waited = wait_for_no_connections(&mut h);
    assert!(
        waited + Duration::from_millis(300) >= VSOCK_REQUEST_TIMEOUT,
        "{waited:?}"
    );
    let (data, eof) = read_to_end(&mut host);
    assert!(data.is_empty() && eof);
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Rst));
    assert_eq!(h.dev().metrics().timeouts.get(), 1);
    // The timer is quiet again.
    assert_eq!(h.em.run_with_timeout(100).unwrap(), 0);
}

#[test]
fn unfinished_close_times_out() {
    let mut h = Harness::new();
    let (host, _) = h.host_connect(91, 65536);
    drop(host);
    h.pump();
    let pkts = h.recv();
    assert_eq!(pkts[0].op(), Some(Op::Shutdown));
    // The guest never sends its RST.
    let waited = wait_for_no_connections(&mut h);
    assert!(
        waited + Duration::from_millis(300) >= VSOCK_SHUTDOWN_TIMEOUT,
        "{waited:?}"
    );
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Rst));
    assert_eq!(h.dev().metrics().timeouts.get(), 1);
    // The timer is quiet again.
    assert_eq!(h.em.run_with_timeout(100).unwrap(), 0);
}

#[test]
fn guest_flooding_past_its_credit_is_reset() {
    let mut h = Harness::new();
    let (mut host, local) = h.host_connect(83, 65536);
    // The host does not read; the guest ignores the credit it was given.
    let chunk = vec![0x5a; 60_000];
    let mut reset = false;
    for _ in 0..200 {
        h.send(&ghdr(Op::Rw, 83, local, chunk.len() as u32), &chunk);
        if h.recv().iter().any(|p| p.op() == Some(Op::Rst)) {
            reset = true;
            break;
        }
    }
    assert!(reset, "the device must reset a guest that ignores credit");
    let m = h.dev().metrics();
    assert_eq!(m.credit_violations.get(), 1);
    // Never more than the socket buffer plus our bounded buffer were taken.
    assert!(m.tx_bytes.get() <= u64::from(CONN_BUF_ALLOC) + (8 << 20));
    h.pump();
    assert_eq!(h.dev().connection_count(), 0);
    let (data, _) = read_to_end(&mut host);
    assert!(data.iter().all(|&b| b == 0x5a));
}

#[test]
fn tx_flood_without_rx_buffers_is_backpressured() {
    let mut h = Harness::new();
    // No rx buffers: every REQUEST to a missing port needs an RST the device cannot deliver.
    let mut queued = 0u32;
    let mut stalled_rounds = 0;
    while stalled_rounds < 3 {
        let before = h.tx.used_idx(&h.mem);
        while h.queue_tx(&ghdr(Op::Request, 10_000 + queued, 99, 0), &[]) {
            queued += 1;
        }
        h.kick_tx();
        h.pump();
        if h.tx.used_idx(&h.mem) == before {
            stalled_rounds += 1;
        }
    }
    let consumed = h.tx.used_idx(&h.mem);
    assert!(queued > u32::from(consumed), "tx must stop being consumed");
    assert!(consumed < 1000, "bounded: {consumed}");
    assert_eq!(h.dev().metrics().tx_pauses.get(), 1);
    // Giving rx buffers lets the resets out and tx resumes until every request is answered.
    let mut rsts = 0u32;
    for _ in 0..200 {
        rsts += h.recv().iter().filter(|p| p.op() == Some(Op::Rst)).count() as u32;
        h.reap_tx();
        h.kick_tx();
        h.pump();
        if rsts == queued {
            break;
        }
    }
    assert_eq!(rsts, queued);
    assert_eq!(h.dev().metrics().stray_rsts_dropped.get(), 0);
}

#[test]
fn garbage_from_the_guest() {
    let mut h = Harness::new();
    let scratch = h.tx_scratch();
    // A header split across a short buffer only.
    h.queue_tx_raw(&[(scratch, 20, false)]);
    // A device-writable tx buffer.
    h.queue_tx_raw(&[(scratch, 64, true)]);
    // A buffer outside guest memory.
    h.queue_tx_raw(&[(1 << 40, 64, false)]);
    h.kick_tx();
    h.pump();
    // Oversized length, and a payload shorter than the header says.
    h.send(&ghdr(Op::Rw, 1, 2, 1 << 20), &[]);
    h.send(&ghdr(Op::Rw, 1, 2, 100), &[0u8; 50]);
    // Wrong CIDs.
    let mut w = ghdr(Op::Request, 1, 2, 0);
    w.src_cid = 4;
    h.send(&w, &[]);
    let mut w = ghdr(Op::Request, 1, 2, 0);
    w.dst_cid = 3;
    h.send(&w, &[]);
    let m = h.dev().metrics();
    assert_eq!(m.bad_headers.get(), 4);
    assert_eq!(m.bad_chains.get(), 1);
    assert_eq!(m.wrong_cid.get(), 2);
    assert!(h.recv().is_empty(), "dropped packets get no answer");

    // Unknown op and unknown type are reset.
    let mut u = ghdr(Op::Rw, 1, 2, 0);
    u.op = 99;
    h.send(&u, &[]);
    let mut u = ghdr(Op::Request, 1, 3, 0);
    u.type_ = 2;
    h.send(&u, &[]);
    // Ops that need a connection, without one.
    h.send(&ghdr(Op::Shutdown, 1, 4, 0), &[]);
    h.send(&ghdr(Op::CreditRequest, 1, 5, 0), &[]);
    let pkts = h.recv();
    assert_eq!(pkts.len(), 4);
    assert!(pkts.iter().all(|p| p.op() == Some(Op::Rst)));
    assert_eq!(m.unknown_op.get(), 1);
    assert_eq!(m.unknown_type.get(), 1);

    // Zero-length data, then a REQUEST on an open connection.
    let (mut host, local) = h.host_connect(84, 65536);
    h.send(&ghdr(Op::Rw, 84, local, 0), &[]);
    assert_eq!(h.dev().connection_count(), 1);
    h.send(&ghdr(Op::Request, 84, local, 0), &[]);
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Rst));
    assert_eq!(m.protocol_errors.get(), 3);
    let (data, eof) = read_to_end(&mut host);
    assert!(data.is_empty() && eof);

    // The device still works.
    let (_host, _) = h.host_connect(85, 65536);
}

#[test]
fn tiny_rx_buffers_are_skipped() {
    let mut h = Harness::new();
    let mut host = UnixStream::connect(&h.path).unwrap();
    host.write_all(b"CONNECT 1\n").unwrap();
    h.pump();
    // One rx chain with room for half a header: used with length 0 and skipped.
    let a = h.tx_scratch();
    let slot =
        h.rx.push(&h.mem, &[(a, (VSOCK_HDR_LEN / 2) as u32, true)])
            .unwrap();
    h.dev().queue_events()[0].write(1).unwrap();
    h.pump();
    assert_eq!(h.rx.pop_used(&h.mem), Some((slot, 0)));
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Request));
    assert_eq!(h.dev().metrics().bad_chains.get(), 1);
}

#[test]
fn header_only_rx_buffers_carry_control_packets_but_no_data() {
    let mut h = Harness::new();
    let mut host = UnixStream::connect(&h.path).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    host.write_all(b"CONNECT 93\n").unwrap();
    h.pump();
    h.push_rx_header_only();
    h.pump();
    let pkts = h.take_rx();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::Request));
    let local = pkts[0].hdr.src_port;
    h.send(&ghdr(Op::Response, 93, local, 0), &[]);
    host.write_all(b"data").unwrap();
    h.pump();
    // Data cannot go into a buffer without room for payload: it stays unused, and the
    // device does not spin on it.
    h.push_rx_header_only();
    h.pump();
    assert!(h.take_rx().is_empty());
    // A credit request's answer fits, and data follows once real buffers arrive.
    h.send(&ghdr(Op::CreditRequest, 93, local, 0), &[]);
    let pkts = h.take_rx();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Some(Op::CreditUpdate));
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].data, b"data");
}

#[test]
fn connection_limit() {
    let mut h = Harness::new();
    let mut hosts = Vec::new();
    for _ in 0..VSOCK_MAX_CONNECTIONS {
        hosts.push(UnixStream::connect(&h.path).unwrap());
    }
    h.pump();
    assert_eq!(h.dev().connection_count(), VSOCK_MAX_CONNECTIONS);
    let mut extra = UnixStream::connect(&h.path).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    h.pump();
    let (data, eof) = read_to_end(&mut extra);
    assert!(data.is_empty() && eof, "over the limit: closed at once");
    // The guest is refused too.
    let svc = UnixListener::bind(format!("{}_{}", h.path.display(), 60)).unwrap();
    h.send(&ghdr(Op::Request, 1, 60, 0), &[]);
    assert_eq!(h.recv()[0].op(), Some(Op::Rst));
    assert_eq!(h.dev().metrics().connection_limit_hits.get(), 2);
    drop(hosts);
    h.pump();
    assert_eq!(h.dev().connection_count(), 0);
    drop(svc);
}

#[test]
fn device_reset_closes_everything() {
    let mut h = Harness::new();
    let (mut host, _) = h.host_connect(86, 65536);
    h.dev().reset();
    assert!(!h.dev().is_activated());
    h.pump();
    let (data, eof) = read_to_end(&mut host);
    assert!(data.is_empty() && eof);
    assert_eq!(h.dev().connection_count(), 0);
}

#[test]
fn bogus_available_index_does_not_wedge_the_device() {
    let mut h = Harness::new();
    let mut host = UnixStream::connect(&h.path).unwrap();
    host.write_all(b"CONNECT 1\n").unwrap();
    h.pump();
    // The driver claims 1000 new buffers on both rings, more than the ring holds.
    for ring_base in [0u64, 0x4000] {
        h.mem
            .write_obj(1000u16, GuestAddress(ring_base + 0x1000 + 2))
            .unwrap();
    }
    h.dev().queue_events()[0].write(1).unwrap();
    h.kick_tx();
    h.pump();
    assert_eq!(h.tx.used_idx(&h.mem), 0);
    assert_eq!(h.rx.used_idx(&h.mem), 0);
    // Host events keep being served.
    let mut other = UnixStream::connect(&h.path).unwrap();
    other.write_all(b"CONNECT 2\n").unwrap();
    h.pump();
    assert_eq!(h.dev().connection_count(), 2);
}

/// The builder wires the device into a VM: the host socket serves while the VM runs (the
/// test guest has no vsock driver, so a host connection just waits), and everything is
/// closed and removed when the VM ends.
#[test]
fn vm_builder_attaches_vsock() {
    require_kvm!();
    let dir = TempDir::new();
    let path = dir.0.join("vm.sock");
    let vm = VmBuilder::new(sbx_test_guests::SPIN)
        .memory_mib(16)
        .vsock(3, &path)
        .start()
        .unwrap();
    assert!(vm_config_has_vsock(&path));
    let mut host = UnixStream::connect(&path).unwrap();
    host.write_all(b"CONNECT 52\n").unwrap();
    host.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 16];
    let e = host.read(&mut b).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    vm.stop_handle().stop();
    assert_eq!(vm.wait(), VmExit::Stopped);
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (data, eof) = read_to_end(&mut host);
    assert!(
        data.is_empty() && eof,
        "host stream closed when the VM ends"
    );
    assert!(!path.exists(), "socket removed when the VM ends");

    // A reserved CID is refused before the VM runs.
    let err = VmBuilder::new(sbx_test_guests::SPIN)
        .memory_mib(16)
        .vsock(2, dir.0.join("bad.sock"))
        .start()
        .unwrap_err();
    assert!(format!("{err:?}").contains("InvalidCid"), "{err:?}");
}

fn vm_config_has_vsock(path: &std::path::Path) -> bool {
    let b = VmBuilder::new("k").vsock(7, path);
    b.config()
        .vsock
        .as_ref()
        .is_some_and(|v| v.guest_cid == 7 && v.uds_path == path)
        && path.exists()
}

/// Thousands of random guest packets (any op, type, flags, credit and length, to a small set
/// of ports so that they hit live connections) mixed with host connects, writes and closes.
/// The device must never panic, always go idle, and stay within its connection limit.
#[test]
fn random_traffic_never_wedges_the_device() {
    let mut h = Harness::new();
    let svc = UnixListener::bind(format!("{}_60", h.path.display())).unwrap();
    svc.set_nonblocking(true).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut streams: Vec<UnixStream> = Vec::new();
    let mut local_ports: Vec<u32> = vec![60, 61];
    for _ in 0..3000 {
        match rnd(10) {
            0..=5 => {
                let op = rnd(9) as u16;
                let len = if rnd(3) == 0 { rnd(3000) as u32 } else { 0 };
                let mut hdr = ghdr(Op::Rw, 1000 + rnd(4) as u32, 0, len);
                hdr.op = op;
                hdr.dst_port = local_ports[rnd(local_ports.len() as u64) as usize];
                hdr.flags = rnd(4) as u32;
                hdr.buf_alloc = [0, 1, 4096, u32::MAX][rnd(4) as usize];
                hdr.fwd_cnt = [0, rnd(1 << 20) as u32, u32::MAX][rnd(3) as usize];
                if rnd(20) == 0 {
                    hdr.type_ = 2;
                }
                if rnd(30) == 0 {
                    hdr.src_cid = rnd(5);
                }
                let data = vec![rnd(256) as u8; len as usize];
                if h.queue_tx(&hdr, &data) {
                    h.kick_tx();
                }
            }
            6 => {
                let mut s = UnixStream::connect(&h.path).unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = writeln!(s, "CONNECT {}", 1000 + rnd(4));
                streams.push(s);
            }
            7 if !streams.is_empty() => {
                let i = rnd(streams.len() as u64) as usize;
                let _ = streams[i].write(&vec![7u8; rnd(70_000) as usize]);
                let mut sink = [0u8; 4096];
                let _ = streams[i].read(&mut sink);
            }
            8 if !streams.is_empty() => {
                let i = rnd(streams.len() as u64) as usize;
                drop(streams.swap_remove(i));
            }
            _ => {
                h.fill_rx_n(rnd(8) as usize);
                for p in h.take_rx() {
                    if p.op() == Some(Op::Request) {
                        local_ports.push(p.hdr.src_port);
                        if rnd(2) == 0 {
                            let r = ghdr(Op::Response, p.hdr.dst_port, p.hdr.src_port, 0);
                            let _ = h.queue_tx(&r, &[]);
                            h.kick_tx();
                        }
                    }
                }
            }
        }
        while let Ok((s, _)) = svc.accept() {
            s.set_nonblocking(true).unwrap();
            streams.push(s);
        }
        h.pump();
        assert!(h.dev().connection_count() <= VSOCK_MAX_CONNECTIONS);
    }
    // Everything closes down: host streams go away, the guest resets what is left.
    drop(streams);
    h.pump();
    for _ in 0..20 {
        for p in h.recv() {
            if p.op() != Some(Op::Rst) {
                let r = ghdr(Op::Rst, p.hdr.dst_port, p.hdr.src_port, 0);
                if h.queue_tx(&r, &[]) {
                    h.kick_tx();
                }
            }
        }
        h.reap_tx();
        h.pump();
    }
    assert_eq!(h.dev().connection_count(), 0, "{:?}", h.dev());
    let m = h.dev().metrics();
    assert!(m.tx_packets.get() > 1000);
    assert!(m.rst_sent.get() > 0 && m.unknown_op.get() > 0 && m.protocol_errors.get() > 0);
}
