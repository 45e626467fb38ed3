//! The host side of the device: the Unix listener, the connection table, and the order in
//! which connections get rx buffers.
//!
//! Every fd change goes through [`Muxer::sync`], which the event handler calls at the end of
//! each event with the subscriber's `EventOps`: connections touched during the event are
//! (re)registered with the events they need now, and dead ones are deregistered before their
//! fd is closed (the event manager keys its dispatch table by fd number, so a closed but still
//! registered fd would poison the next one to reuse that number).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Connection, Key, LineOutcome, RxOut, State, Verdict};
use super::metrics::VsockMetrics;
use super::packet::{Op, PacketHeader, VSOCK_HOST_CID, VSOCK_TYPE_STREAM};

/// Most connections (including host connections still sending their `CONNECT` line) one
/// device holds. Each may buffer up to `CONN_BUF_ALLOC` bytes of guest data.
pub const VSOCK_MAX_CONNECTIONS: usize = 256;

/// Most RSTs to unknown or finished connections that wait for rx buffers. Past half of it the
/// device stops taking tx packets (whose answers would add more); past all of it host-side
/// resets are dropped.
const STRAY_RST_MAX: usize = 256;
const STRAY_RST_PAUSE: usize = STRAY_RST_MAX / 2;

/// First local port handed out to host-initiated connections (as Firecracker does).
const LOCAL_PORT_BASE: u32 = 1 << 30;

/// epoll data of connection fds starts here; lower values name queues and the listener.
pub(super) const FIRST_CONN_TOKEN: u32 = 16;

pub(super) struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    pub listener: UnixListener,
    /// Fires at the earliest connection deadline.
    pub timer: TimerFd,
    timer_at: Option<Instant>,
    conns: HashMap<u32, Connection>,
    index: HashMap<Key, u32>,
    next_token: u32,
    next_local_port: u32,
    rx_queue: VecDeque<u32>,
    stray_rsts: VecDeque<Key>,
    dirty: Vec<u32>,
    metrics: Arc<VsockMetrics>,
}

/// `<path>_<port>`: where a host service for guest connections to `port` listens.
pub(super) fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut s = OsString::from(uds_path.as_os_str());
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// A non-blocking connect, so that a host service with a full backlog cannot stall the
/// event thread (it gets `EAGAIN`, and the guest an RST).
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(fd.as_raw_fd(), &addr)?;
    Ok(UnixStream::from(fd))
}

impl Muxer {
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        listener: UnixListener,
        metrics: Arc<VsockMetrics>,
    ) -> io::Result<Self> {
        Ok(Self {
            guest_cid,
            uds_path,
            listener,
            timer: TimerFd::new()?,
            timer_at: None,
            conns: HashMap::new(),
            index: HashMap::new(),
            next_token: FIRST_CONN_TOKEN,
            next_local_port: LOCAL_PORT_BASE,
            rx_queue: VecDeque::new(),
            stray_rsts: VecDeque::new(),
            dirty: Vec::new(),
            metrics,
        })
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn alloc_token(&mut self) -> u32 {
        loop {
            let t = self.next_token;
            self.next_token = match t.checked_add(1) {
                Some(n) => n,
                None => FIRST_CONN_TOKEN,
            };
            if !self.conns.contains_key(&t) {
                return t;
            }
        }
    }

    fn alloc_local_port(&mut self, peer: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = match p.checked_add(1) {
                Some(n) => n,
                None => LOCAL_PORT_BASE,
            };
            if !self.index.contains_key(&Key { local: p, peer }) {
                return p;
            }
        }
    }

    fn push_stray_rst(&mut self, key: Key) {
        if self.stray_rsts.len() >= STRAY_RST_MAX {
            self.metrics.stray_rsts_dropped.inc();
            return;
        }
        self.stray_rsts.push_back(key);
    }

    /// Whether the tx queue should wait until the guest gave rx buffers for queued resets.
    pub fn tx_should_pause(&self) -> bool {
        self.stray_rsts.len() >= STRAY_RST_PAUSE
    }

    pub fn has_rx_work(&self) -> bool {
        !self.stray_rsts.is_empty() || !self.rx_queue.is_empty()
    }

    /// Queue the connection for an rx buffer if it has something to send, and re-check its
    /// epoll registration at the next sync.
    fn touch(&mut self, token: u32) {
        self.dirty.push(token);
        if let Some(c) = self.conns.get_mut(&token) {
            if !c.in_rx_queue && c.wants_rx() {
                c.in_rx_queue = true;
                self.rx_queue.push_back(token);
            }
        }
    }

    fn kill(&mut self, token: u32, rst: bool) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        c.dead = true;
        let key = c.key;
        self.dirty.push(token);
        if let Some(key) = key {
            if self.index.get(&key) == Some(&token) {
                self.index.remove(&key);
            }
            if rst {
                self.push_stray_rst(key);
            }
        }
    }

    fn apply(&mut self, token: u32, v: Verdict) {
        match v {
            Verdict::Keep => self.touch(token),
            Verdict::Close => self.kill(token, false),
            Verdict::Reset => self.kill(token, true),
        }
    }

    /// Accept every pending host connection.
    pub fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= VSOCK_MAX_CONNECTIONS {
                        self.metrics.connection_limit_hits.inc();
                        tracing::warn!(
                            "virtio-vsock: connection limit reached, host connection dropped"
                        );
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        self.metrics.host_io_errors.inc();
                        tracing::warn!(error = %e, "virtio-vsock: cannot make a host connection non-blocking");
                        continue;
                    }
                    self.metrics.host_connects.inc();
                    let token = self.alloc_token();
                    self.conns.insert(token, Connection::host_initiated(stream));
                    self.dirty.push(token);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.metrics.host_io_errors.inc();
                    tracing::warn!(error = %e, "virtio-vsock: accept failed");
                    break;
                }
            }
        }
    }

    /// epoll reported `set` on connection `token`.
    pub fn host_event(&mut self, token: u32, set: event_manager::EventSet) {
        let m = self.metrics.clone();
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if c.dead {
            return;
        }
        if c.state != State::AwaitingLine {
            let v = c.on_host_event(set, &m);
            self.apply(token, v);
            return;
        }
        match c.read_connect_line() {
            LineOutcome::Pending => {}
            LineOutcome::Bad => {
                m.bad_connect_lines.inc();
                self.kill(token, false);
            }
            LineOutcome::Port(peer) => {
                let local = self.alloc_local_port(peer);
                let key = Key { local, peer };
                if let Some(c) = self.conns.get_mut(&token) {
                    c.start_local_init(key);
                }
                self.index.insert(key, token);
                self.touch(token);
            }
        }
    }

    /// A packet from the guest's tx queue; `data` is its payload.
    pub fn on_tx(&mut self, hdr: &PacketHeader, data: &[u8]) {
        let m = self.metrics.clone();
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != VSOCK_HOST_CID {
            m.wrong_cid.inc();
            tracing::debug!(
                src = hdr.src_cid,
                dst = hdr.dst_cid,
                "virtio-vsock: packet with wrong CIDs dropped"
            );
            return;
        }
        let key = Key {
            local: hdr.dst_port,
            peer: hdr.src_port,
        };
        let existing = self.index.get(&key).copied();
        let op = match (hdr.type_, hdr.op()) {
            (VSOCK_TYPE_STREAM, Some(op)) => op,
            (t, op) => {
                if t == VSOCK_TYPE_STREAM {
                    m.unknown_op.inc();
                } else {
                    m.unknown_type.inc();
                }
                match existing {
                    Some(token) => self.kill(token, true),
                    None if op != Some(Op::Rst) => self.push_stray_rst(key),
                    None => {}
                }
                return;
            }
        };
        if let Some(token) = existing {
            if let Some(c) = self.conns.get_mut(&token) {
                let v = c.on_guest(hdr, op, data, &m);
                self.apply(token, v);
            }
            return;
        }
        match op {
            Op::Request => self.guest_connect(key, hdr),
            Op::Rst => m.rst_received.inc(),
            _ => {
                m.protocol_errors.inc();
                self.push_stray_rst(key);
            }
        }
    }

    fn guest_connect(&mut self, key: Key, hdr: &PacketHeader) {
        if self.conns.len() >= VSOCK_MAX_CONNECTIONS {
            self.metrics.connection_limit_hits.inc();
            self.push_stray_rst(key);
            return;
        }
        let path = port_path(&self.uds_path, key.local);
        match connect_nonblocking(&path) {
            Ok(stream) => {
                self.metrics.guest_connects.inc();
                let token = self.alloc_token();
                self.conns
                    .insert(token, Connection::guest_initiated(stream, key, hdr));
                self.index.insert(key, token);
                self.touch(token);
            }
            Err(e) => {
                self.metrics.guest_connects_refused.inc();
                tracing::debug!(port = key.local, error = %e, "virtio-vsock: no host listener");
                self.push_stray_rst(key);
            }
        }
    }

    fn header(&self, key: Key, op: Op, flags: u32, len: usize, credit: (u32, u32)) -> PacketHeader {
        PacketHeader {
            src_cid: VSOCK_HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.local,
            dst_port: key.peer,
            // len <= VSOCK_MAX_PKT_LEN: the caller's buffer is bounded by it.
            len: len as u32,
            type_: VSOCK_TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: credit.0,
            fwd_cnt: credit.1,
        }
    }

    /// The next packet for the guest, its payload read into `buf` (at most `buf.len()`
    /// bytes). Resets go first, then connections in round-robin order.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<(PacketHeader, usize)> {
        let m = self.metrics.clone();
        // Connections with nothing for this buffer (e.g. data but a buffer with no room for
        // payload) are requeued after the loop, so that each is looked at once per call.
        let mut skipped = Vec::new();
        let out = loop {
            if let Some(key) = self.stray_rsts.pop_front() {
                self.metrics.rst_sent.inc();
                break Some((self.header(key, Op::Rst, 0, 0, (0, 0)), 0));
            }
            let Some(token) = self.rx_queue.pop_front() else {
                break None;
            };
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            c.in_rx_queue = false;
            let Some(key) = c.key.filter(|_| !c.dead) else {
                continue;
            };
            match c.next_rx(buf, &m) {
                RxOut::Packet { op, flags, len } => {
                    let credit = c.stamp();
                    let v = c.after_rx();
                    let hdr = self.header(key, op, flags, len, credit);
                    self.apply(token, v);
                    break Some((hdr, len));
                }
                RxOut::Nothing => skipped.push(token),
                RxOut::Reset => self.kill(token, true),
            }
        };
        for token in skipped {
            self.touch(token);
        }
        out
    }

    /// The timer fired: reset connections whose guest did not answer in time.
    pub fn on_timer(&mut self) {
        // Disarming resets the expiry count, which makes the fd unreadable again. No read: the
        // timerfd is blocking, and an earlier event of the same epoll batch may have re-armed
        // it. The next sync arms it for the next deadline.
        if let Err(e) = self.timer.clear() {
            tracing::warn!(error = %e, "virtio-vsock: cannot disarm the timer");
        }
        self.timer_at = None;
        let now = Instant::now();
        let late: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.dead && c.deadline.is_some_and(|d| d <= now))
            .map(|(&t, _)| t)
            .collect();
        for token in late {
            self.metrics.timeouts.inc();
            tracing::debug!(token, "virtio-vsock: guest did not answer in time");
            self.kill(token, true);
        }
    }

    /// Arm the timer for the earliest deadline, if it is not armed for it already.
    fn arm_timer(&mut self) {
        let next = self
            .conns
            .values()
            .filter(|c| !c.dead)
            .filter_map(|c| c.deadline)
            .min();
        if next == self.timer_at {
            return;
        }
        let res = match next {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                // A zero duration would disarm the timer.
                self.timer.reset(wait.max(Duration::from_millis(1)), None)
            }
            None => self.timer.clear(),
        };
        match res {
            Ok(()) => self.timer_at = next,
            Err(e) => tracing::warn!(error = %e, "virtio-vsock: cannot arm the timer"),
        }
    }

    /// Forget every connection (device reset); fds are closed at the next sync.
    pub fn reset_all(&mut self) {
        let tokens: Vec<u32> = self.conns.keys().copied().collect();
        for t in tokens {
            self.kill(t, false);
        }
        self.index.clear();
        self.rx_queue.clear();
        self.stray_rsts.clear();
    }

    /// Bring epoll registrations in line with what touched connections need, and close dead
    /// ones.
    pub fn sync(&mut self, ops: &mut EventOps<'_>) {
        for token in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            let want = c.interest();
            if want != c.registered {
                let res = match (c.registered, want) {
                    (None, Some(set)) => ops.add(Events::with_data(&c.stream, token, set)),
                    (Some(_), Some(set)) => ops.modify(Events::with_data(&c.stream, token, set)),
                    (Some(_), None) => ops.remove(Events::empty(&c.stream)),
                    (None, None) => Ok(()),
                };
                match res {
                    Ok(()) => c.registered = want,
                    Err(e) => {
                        self.metrics.host_io_errors.inc();
                        tracing::warn!(error = ?e, "virtio-vsock: cannot update epoll for a connection");
                        if c.registered.is_none() {
                            // Never watched: it would hang forever. Drop it.
                            c.dead = true;
                        }
                    }
                }
            }
            if c.dead {
                if c.registered.is_some() {
                    // Removal failed above; the fd stays open rather than be reused under a
                    // stale registration. Try again at the next sync.
                    self.dirty.push(token);
                    continue;
                }
                self.conns.remove(&token);
            }
        }
        self.arm_timer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_paths() {
        assert_eq!(
            port_path(Path::new("/run/sbx/v.sock"), 52),
            PathBuf::from("/run/sbx/v.sock_52")
        );
    }
}
