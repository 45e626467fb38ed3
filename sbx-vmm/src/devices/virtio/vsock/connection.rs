//! One vsock stream: its state machine, credit accounting and the host Unix stream behind it.
//!
//! Credit (virtio 1.2, 5.10.6.3): each side tells the other how big its receive buffer is
//! (`buf_alloc`) and how many bytes it has consumed from it (`fwd_cnt`). A sender may have at
//! most `buf_alloc - (sent - fwd_cnt)` bytes in flight. Here "consumed" means written to the
//! host socket; bytes the host socket does not take yet wait in a per-connection buffer whose
//! size is exactly the `buf_alloc` we advertise, so a guest that honours credit can never make
//! it grow past that, and one that does not is reset.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use event_manager::EventSet;
use nix::sys::socket::{send, MsgFlags};

use super::metrics::VsockMetrics;
use super::packet::{
    parse_connect_line, Op, PacketHeader, CONNECT_LINE_MAX, VSOCK_SHUTDOWN_BOTH,
    VSOCK_SHUTDOWN_RCV, VSOCK_SHUTDOWN_SEND,
};

/// Receive buffer we advertise per connection (`buf_alloc`), and the bound of the buffer that
/// holds guest data the host socket has not taken yet.
pub const CONN_BUF_ALLOC: u32 = 128 << 10;

/// Send a `CREDIT_UPDATE` once the guest believes less than this much room is left.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_ALLOC / 2;

/// How long the guest has to answer our REQUEST before the host stream is closed.
pub const VSOCK_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest has to finish (RST or SHUTDOWN) after we shut both directions.
pub const VSOCK_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection's ports: `local` is the host side, `peer` the guest side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub local: u32,
    pub peer: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// A host process connected to the device socket and is sending `CONNECT <port>\n`.
    AwaitingLine,
    /// We asked the guest to accept (REQUEST) and wait for its RESPONSE.
    LocalInit,
    /// Data flows.
    Established,
    /// We told the guest both directions are shut and wait for its RST.
    Closing,
}

/// What the caller must do with the connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Keep,
    /// Close the host stream and forget the connection without telling the guest.
    Close,
    /// Send RST to the guest, then close and forget.
    Reset,
}

/// Result of reading the connect line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineOutcome {
    Pending,
    Port(u32),
    Bad,
}

/// One packet the connection wants to send to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RxOut {
    /// Send `op` with `flags` and `len` payload bytes (already in the caller's buffer).
    Packet { op: Op, flags: u32, len: usize },
    /// Nothing to send right now.
    Nothing,
    /// The host stream failed: reset.
    Reset,
}

const P_REQUEST: u8 = 1;
const P_RESPONSE: u8 = 2;
const P_SHUTDOWN: u8 = 4;
const P_CREDIT: u8 = 8;

pub(super) struct Connection {
    pub stream: UnixStream,
    pub key: Option<Key>,
    pub state: State,
    /// Events currently registered with epoll (None: not registered).
    pub registered: Option<EventSet>,
    /// Waiting in the device's rx round-robin.
    pub in_rx_queue: bool,
    /// Marked for removal; the muxer deregisters and drops it.
    pub dead: bool,
    /// When the guest is late answering a REQUEST or finishing a close.
    pub deadline: Option<Instant>,
    line: Vec<u8>,

    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes sent to the guest.
    tx_cnt: u32,
    /// Payload bytes received from the guest.
    rx_cnt: u32,
    /// Payload bytes written to the host socket.
    fwd_cnt: u32,
    /// `fwd_cnt` as last told to the guest.
    last_fwd_cnt_sent: u32,

    /// The `OK <port>\n` reply, written to the host before any guest data.
    prefix: Vec<u8>,
    /// Guest data the host socket has not taken yet; at most `CONN_BUF_ALLOC` bytes.
    host_buf: VecDeque<u8>,
    pending: u8,
    shutdown_flags: u32,

    /// The host socket may have data (or EOF) to read; epoll IN is off while set.
    host_readable: bool,
    host_eof: bool,
    host_hup: bool,
    guest_shut_send: bool,
    guest_shut_recv: bool,
    host_write_shut: bool,
}

impl Connection {
    fn new(stream: UnixStream, key: Option<Key>, state: State) -> Self {
        Self {
            stream,
            key,
            state,
            registered: None,
            in_rx_queue: false,
            dead: false,
            deadline: None,
            line: Vec::new(),
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            prefix: Vec::new(),
            host_buf: VecDeque::new(),
            pending: 0,
            shutdown_flags: 0,
            host_readable: false,
            host_eof: false,
            host_hup: false,
            guest_shut_send: false,
            guest_shut_recv: false,
            host_write_shut: false,
        }
    }

    /// A host process connected to the device socket.
    pub fn host_initiated(stream: UnixStream) -> Self {
        Self::new(stream, None, State::AwaitingLine)
    }

    /// The guest asked to connect and `stream` is connected to the host listener.
    pub fn guest_initiated(stream: UnixStream, key: Key, hdr: &PacketHeader) -> Self {
        let mut c = Self::new(stream, Some(key), State::Established);
        c.update_peer_credit(hdr);
        c.pending = P_RESPONSE;
        c
    }

    /// Read the connect line one byte at a time, so that data the host sends right after it
    /// stays in the socket until the guest accepted.
    pub fn read_connect_line(&mut self) -> LineOutcome {
        let mut b = [0u8; 1];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return LineOutcome::Bad,
                Ok(_) if b[0] == b'\n' => {
                    return match parse_connect_line(&self.line) {
                        Some(port) => LineOutcome::Port(port),
                        None => LineOutcome::Bad,
                    };
                }
                Ok(_) => {
                    if self.line.len() + 1 >= CONNECT_LINE_MAX {
                        return LineOutcome::Bad;
                    }
                    self.line.push(b[0]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return LineOutcome::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return LineOutcome::Bad,
            }
        }
    }

    /// The connect line named the guest port: ask the guest.
    pub fn start_local_init(&mut self, key: Key) {
        self.key = Some(key);
        self.state = State::LocalInit;
        self.line = Vec::new();
        self.pending |= P_REQUEST;
    }

    fn update_peer_credit(&mut self, hdr: &PacketHeader) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
    }

    /// Bytes we may still send to the guest.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Counters to stamp on a packet to the guest: (`buf_alloc`, `fwd_cnt`). Every packet
    /// carries them, so sending any packet answers a pending credit update.
    pub fn stamp(&mut self) -> (u32, u32) {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.pending &= !P_CREDIT;
        (CONN_BUF_ALLOC, self.fwd_cnt)
    }

    fn check_credit_update(&mut self) {
        let unacked = self.rx_cnt.wrapping_sub(self.last_fwd_cnt_sent);
        let guest_view_free = CONN_BUF_ALLOC.saturating_sub(unacked);
        if guest_view_free < CREDIT_UPDATE_THRESHOLD && self.fwd_cnt != self.last_fwd_cnt_sent {
            self.pending |= P_CREDIT;
        }
    }

    /// A packet from the guest for this connection. `data` is its payload (RW only).
    pub fn on_guest(
        &mut self,
        hdr: &PacketHeader,
        op: Op,
        data: &[u8],
        m: &VsockMetrics,
    ) -> Verdict {
        self.update_peer_credit(hdr);
        if op == Op::Rst {
            m.rst_received.inc();
            return Verdict::Close;
        }
        match (self.state, op) {
            (State::AwaitingLine, _) => {
                // Unreachable through the muxer (no key yet); treat as a protocol error.
                m.protocol_errors.inc();
                Verdict::Reset
            }
            (State::LocalInit, Op::Response) => {
                self.state = State::Established;
                self.deadline = None;
                if let Some(key) = self.key {
                    self.prefix = format!("OK {}\n", key.local).into_bytes();
                }
                self.flush_host(m)
            }
            (State::LocalInit, _) => {
                m.protocol_errors.inc();
                Verdict::Reset
            }
            (State::Established, Op::Rw) => self.on_guest_data(data, m),
            (State::Established, Op::CreditUpdate) => Verdict::Keep,
            (State::Established, Op::CreditRequest) => {
                self.pending |= P_CREDIT;
                Verdict::Keep
            }
            (State::Established, Op::Shutdown) => {
                if hdr.flags & VSOCK_SHUTDOWN_RCV != 0 && !self.guest_shut_recv {
                    self.guest_shut_recv = true;
                    // The host's writes now fail (EPIPE) instead of blocking forever.
                    let _ = self.stream.shutdown(Shutdown::Read);
                }
                if hdr.flags & VSOCK_SHUTDOWN_SEND != 0 {
                    self.guest_shut_send = true;
                }
                self.after_progress()
            }
            (State::Established, Op::Request | Op::Response) => {
                m.protocol_errors.inc();
                Verdict::Reset
            }
            // We already said both directions are shut; the guest finishing is what we wait
            // for, anything else is dropped.
            (State::Closing, Op::Shutdown) => Verdict::Reset,
            (State::Closing, _) => Verdict::Keep,
            (_, Op::Rst) => Verdict::Close,
        }
    }

    fn on_guest_data(&mut self, data: &[u8], m: &VsockMetrics) -> Verdict {
        if data.is_empty() {
            return Verdict::Keep;
        }
        if self.guest_shut_send {
            m.protocol_errors.inc();
            return Verdict::Reset;
        }
        if self.host_buf.len() + data.len() > CONN_BUF_ALLOC as usize {
            m.credit_violations.inc();
            tracing::debug!(key = ?self.key, "virtio-vsock: guest exceeded its credit");
            return Verdict::Reset;
        }
        m.tx_bytes.add(data.len() as u64);
        self.rx_cnt = self.rx_cnt.wrapping_add(data.len() as u32);
        let mut rest = data;
        if self.prefix.is_empty() && self.host_buf.is_empty() && !self.host_write_shut {
            match self.send(data) {
                Ok(n) => {
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                    rest = &data[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return self.host_error(&e, m),
            }
        }
        self.host_buf.extend(rest);
        self.check_credit_update();
        Verdict::Keep
    }

    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match send(self.stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    fn host_error(&mut self, e: &io::Error, m: &VsockMetrics) -> Verdict {
        m.host_io_errors.inc();
        tracing::debug!(key = ?self.key, error = %e, "virtio-vsock: host socket error");
        Verdict::Reset
    }

    /// Write buffered output to the host socket until it would block.
    pub fn flush_host(&mut self, m: &VsockMetrics) -> Verdict {
        while !self.prefix.is_empty() {
            match self.send(&self.prefix) {
                // A stream socket never takes 0 of a non-empty buffer; do not spin if it does.
                Ok(0) => return Verdict::Keep,
                Ok(n) => {
                    self.prefix.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Verdict::Keep,
                Err(e) => return self.host_error(&e, m),
            }
        }
        while !self.host_buf.is_empty() {
            let (front, _) = self.host_buf.as_slices();
            match self.send(front) {
                Ok(0) => break,
                Ok(n) => {
                    self.host_buf.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return self.host_error(&e, m),
            }
        }
        self.check_credit_update();
        self.after_progress()
    }

    /// Apply shutdowns that were waiting for buffered data to drain; tell whether the
    /// connection is finished.
    fn after_progress(&mut self) -> Verdict {
        if !matches!(self.state, State::Established | State::Closing) {
            return Verdict::Keep;
        }
        let flushed = self.prefix.is_empty() && self.host_buf.is_empty();
        if self.guest_shut_send && flushed && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        // Both directions are finished: nothing more can flow, reset to release the guest.
        let host_to_guest_done = self.host_eof || self.guest_shut_recv;
        if self.guest_shut_send && flushed && host_to_guest_done {
            return Verdict::Reset;
        }
        Verdict::Keep
    }

    /// epoll told us about the host socket.
    pub fn on_host_event(&mut self, set: EventSet, m: &VsockMetrics) -> Verdict {
        if set.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            self.host_hup = true;
            self.host_readable = true;
        }
        if set.contains(EventSet::IN) {
            self.host_readable = true;
        }
        if set.contains(EventSet::OUT) || self.host_hup {
            return self.flush_host(m);
        }
        Verdict::Keep
    }

    fn can_read_host(&self) -> bool {
        self.state == State::Established && !self.guest_shut_recv && !self.host_eof
    }

    fn has_host_output(&self) -> bool {
        !self.prefix.is_empty() || !self.host_buf.is_empty()
    }

    /// Whether the connection has a packet for the guest now.
    pub fn wants_rx(&self) -> bool {
        if self.dead {
            return false;
        }
        self.pending != 0 || (self.can_read_host() && self.host_readable && self.peer_credit() > 0)
    }

    /// The epoll events to watch for, or None to not be registered at all.
    pub fn interest(&self) -> Option<EventSet> {
        if self.dead || self.host_hup {
            // Hang-up is reported whatever we ask for; once seen, stop watching.
            return None;
        }
        let mut set = EventSet::empty();
        if self.state == State::AwaitingLine
            || (self.can_read_host() && !self.host_readable && self.peer_credit() > 0)
        {
            set |= EventSet::IN;
        }
        if self.has_host_output() {
            set |= EventSet::OUT;
        }
        Some(set)
    }

    /// Produce the next packet for the guest, reading at most `buf.len()` bytes of host data
    /// into `buf`.
    pub fn next_rx(&mut self, buf: &mut [u8], m: &VsockMetrics) -> RxOut {
        if self.pending & P_REQUEST != 0 {
            self.pending &= !P_REQUEST;
            self.deadline = Some(Instant::now() + VSOCK_REQUEST_TIMEOUT);
            return control(Op::Request, 0);
        }
        if self.pending & P_RESPONSE != 0 {
            self.pending &= !P_RESPONSE;
            return control(Op::Response, 0);
        }
        if self.can_read_host() && self.host_readable {
            let want = buf.len().min(self.peer_credit() as usize);
            if want > 0 {
                match self.read_host(&mut buf[..want], m) {
                    RxOut::Nothing => {}
                    other => return other,
                }
            }
        }
        if self.pending & P_SHUTDOWN != 0 {
            self.pending &= !P_SHUTDOWN;
            if self.shutdown_flags == VSOCK_SHUTDOWN_BOTH {
                self.state = State::Closing;
                self.deadline = Some(Instant::now() + VSOCK_SHUTDOWN_TIMEOUT);
            }
            return control(Op::Shutdown, self.shutdown_flags);
        }
        if self.pending & P_CREDIT != 0 {
            return control(Op::CreditUpdate, 0);
        }
        RxOut::Nothing
    }

    fn read_host(&mut self, buf: &mut [u8], m: &VsockMetrics) -> RxOut {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.host_eof = true;
                    self.host_readable = false;
                    // A full hang-up means the host will not read either.
                    self.shutdown_flags = if self.host_hup {
                        VSOCK_SHUTDOWN_BOTH
                    } else {
                        VSOCK_SHUTDOWN_SEND
                    };
                    self.pending |= P_SHUTDOWN;
                    return RxOut::Nothing;
                }
                Ok(n) => {
                    self.tx_cnt = self.tx_cnt.wrapping_add(n as u32);
                    m.rx_bytes.add(n as u64);
                    return RxOut::Packet {
                        op: Op::Rw,
                        flags: 0,
                        len: n,
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.host_readable = false;
                    return RxOut::Nothing;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    m.host_io_errors.inc();
                    tracing::debug!(key = ?self.key, error = %e, "virtio-vsock: host read failed");
                    return RxOut::Reset;
                }
            }
        }
    }

    /// After sending SHUTDOWN(SEND) on host EOF: whether both directions are now finished.
    pub fn after_rx(&mut self) -> Verdict {
        self.after_progress()
    }
}

fn control(op: Op, flags: u32) -> RxOut {
    RxOut::Packet { op, flags, len: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::packet::VSOCK_TYPE_STREAM;
    use std::io::Write;

    fn hdr(op: Op, buf_alloc: u32, fwd_cnt: u32) -> PacketHeader {
        PacketHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1000,
            dst_port: 52,
            len: 0,
            type_: VSOCK_TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        }
    }

    fn pair() -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let key = Key {
            local: 52,
            peer: 1000,
        };
        let c = Connection::guest_initiated(a, key, &hdr(Op::Request, 4096, 0));
        (c, b)
    }

    #[test]
    fn credit_never_exceeds_peer_buffer() {
        let (mut c, mut host) = pair();
        let m = VsockMetrics::default();
        assert_eq!(
            c.next_rx(&mut [0u8; 16], &m),
            RxOut::Packet {
                op: Op::Response,
                flags: 0,
                len: 0
            }
        );
        host.write_all(&[7u8; 10_000]).unwrap();
        c.on_host_event(EventSet::IN, &m);
        let mut buf = vec![0u8; 65536];
        let mut got = 0;
        while let RxOut::Packet { len, .. } = c.next_rx(&mut buf, &m) {
            got += len;
        }
        assert_eq!(got, 4096, "must stop at the peer's buf_alloc");
        assert_eq!(c.peer_credit(), 0);
        assert!(!c.wants_rx());
        // The guest consumed 1000 bytes.
        c.on_guest(
            &hdr(Op::CreditUpdate, 4096, 1000),
            Op::CreditUpdate,
            &[],
            &m,
        );
        assert!(c.wants_rx());
        assert_eq!(
            c.next_rx(&mut buf, &m),
            RxOut::Packet {
                op: Op::Rw,
                flags: 0,
                len: 1000
            }
        );
        // A lying fwd_cnt ahead of what we sent gives no credit, not a wrap-around.
        c.on_guest(
            &hdr(Op::CreditUpdate, 4096, 1 << 31),
            Op::CreditUpdate,
            &[],
            &m,
        );
        assert_eq!(c.peer_credit(), 0);
    }

    #[test]
    fn guest_data_over_credit_resets() {
        let (mut c, _host) = pair();
        let m = VsockMetrics::default();
        let chunk = vec![1u8; 64 << 10];
        let mut verdict = Verdict::Keep;
        // The host never reads: the socket buffer fills, then our buffer, then we reset.
        for _ in 0..64 {
            verdict = c.on_guest(&hdr(Op::Rw, 4096, 0), Op::Rw, &chunk, &m);
            if verdict != Verdict::Keep {
                break;
            }
        }
        assert_eq!(verdict, Verdict::Reset);
        assert_eq!(m.credit_violations.get(), 1);
        assert!(c.host_buf.len() <= CONN_BUF_ALLOC as usize);
    }

    #[test]
    fn credit_update_after_half_the_buffer() {
        let (mut c, mut host) = pair();
        let m = VsockMetrics::default();
        c.stamp();
        let chunk = vec![1u8; 16 << 10];
        for _ in 0..3 {
            assert_eq!(
                c.on_guest(&hdr(Op::Rw, 4096, 0), Op::Rw, &chunk, &m),
                Verdict::Keep
            );
        }
        assert!(c.pending & P_CREDIT == 0);
        c.on_guest(&hdr(Op::Rw, 4096, 0), Op::Rw, &chunk, &m);
        c.on_guest(&hdr(Op::Rw, 4096, 0), Op::Rw, &chunk, &m);
        assert!(c.pending & P_CREDIT != 0);
        let mut sink = vec![0u8; 80 << 10];
        host.read_exact(&mut sink).unwrap();
    }

    #[test]
    fn connect_line_is_bounded() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut c = Connection::host_initiated(a);
        b.write_all(b"CONNECT 5").unwrap();
        assert_eq!(c.read_connect_line(), LineOutcome::Pending);
        b.write_all(b"2\nhello").unwrap();
        assert_eq!(c.read_connect_line(), LineOutcome::Port(52));
        // The bytes after the line are still in the socket.
        let mut rest = [0u8; 5];
        c.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"hello");

        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut c = Connection::host_initiated(a);
        b.write_all(&[b'A'; 100]).unwrap();
        assert_eq!(c.read_connect_line(), LineOutcome::Bad);
    }
}
