//! One guest TCP connection: its smoltcp socket, the pipe to its proxy task, and the wakers
//! that tell the stack which flows have work.

use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Flows with work to do, filled by their wakers (smoltcp socket events and pipe readiness),
/// drained by the stack task.
#[derive(Debug, Default)]
pub(crate) struct ReadySet {
    inner: Mutex<ReadyInner>,
}

#[derive(Debug, Default)]
struct ReadyInner {
    ids: Vec<usize>,
    main: Option<Waker>,
}

impl ReadySet {
    /// Remembers the stack task's waker.
    pub(crate) fn set_main(&self, waker: &Waker) {
        let mut g = self.lock();
        match &g.main {
            Some(w) if w.will_wake(waker) => {}
            _ => g.main = Some(waker.clone()),
        }
    }

    /// Moves the queued ids into `out` (cleared first).
    pub(crate) fn take(&self, out: &mut Vec<usize>) {
        out.clear();
        std::mem::swap(&mut self.lock().ids, out);
    }

    fn push(&self, id: usize) {
        let main = {
            let mut g = self.lock();
            g.ids.push(id);
            g.main.clone()
        };
        if let Some(w) = main {
            w.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadyInner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// The waker of one flow: queues its id once until the stack services it.
pub(crate) struct FlowWaker {
    id: usize,
    queued: AtomicBool,
    ready: Arc<ReadySet>,
}

impl Wake for FlowWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.id);
        }
    }
}

/// What a flow is for, decided when its handshake completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Handshake in progress.
    Opening,
    /// Connected to its proxy task.
    Open,
}

/// One guest TCP connection.
pub(crate) struct Flow {
    pub(crate) handle: SocketHandle,
    /// The guest's end.
    pub(crate) peer: SocketAddrV4,
    /// Where the guest connected (the socket's local endpoint).
    pub(crate) dst: SocketAddrV4,
    pub(crate) phase: Phase,
    pub(crate) created: Instant,
    /// When the flow started closing (either side), for the close timeout.
    pub(crate) closing_since: Option<Instant>,
    /// When bytes last moved (a half-closed flow that still moves data is not stuck).
    pub(crate) last_active: Instant,
    pipe: Option<DuplexStream>,
    guest_eof_sent: bool,
    upstream_eof: bool,
    pipe_broken: bool,
    waker: Arc<FlowWaker>,
    waker_handle: Waker,
}

/// What servicing a flow concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Keep it.
    Keep,
    /// The handshake completed: connect it to a proxy task.
    Established,
    /// Done: remove the socket and the flow.
    Remove,
}

impl Flow {
    pub(crate) fn new(
        id: usize,
        handle: SocketHandle,
        peer: SocketAddrV4,
        dst: SocketAddrV4,
        ready: Arc<ReadySet>,
        now: Instant,
    ) -> Flow {
        let waker = Arc::new(FlowWaker {
            id,
            queued: AtomicBool::new(false),
            ready,
        });
        Flow {
            handle,
            peer,
            dst,
            phase: Phase::Opening,
            created: now,
            closing_since: None,
            last_active: now,
            pipe: None,
            guest_eof_sent: false,
            upstream_eof: false,
            pipe_broken: false,
            waker_handle: Waker::from(waker.clone()),
            waker,
        }
    }

    /// Connects the flow to its proxy task's end of `pipe`.
    pub(crate) fn attach(&mut self, pipe: DuplexStream) {
        self.pipe = Some(pipe);
        self.phase = Phase::Open;
    }

    /// Moves bytes between the socket and the pipe as far as both allow, follows closes,
    /// and re-arms the wakers. Returns whether bytes moved and what to do with the flow.
    pub(crate) fn service(&mut self, sock: &mut tcp::Socket<'_>, now: Instant) -> (bool, Outcome) {
        self.waker.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&self.waker_handle);
        let state = sock.state();
        let outcome = match (self.phase, state) {
            (_, State::Closed | State::TimeWait) => Outcome::Remove,
            (Phase::Opening, State::Listen | State::SynReceived) => Outcome::Keep,
            (Phase::Opening, _) => Outcome::Established,
            (Phase::Open, _) => Outcome::Keep,
        };
        if outcome != Outcome::Keep {
            return (false, outcome);
        }
        let mut moved = false;
        if let Some(pipe) = self.pipe.as_mut() {
            moved |= guest_to_pipe(sock, pipe, &mut cx, &mut self.pipe_broken);
            if !self.guest_eof_sent && !sock.may_recv() && sock.recv_queue() == 0 {
                // The guest sent FIN (or the connection is gone): pass the EOF on.
                if Pin::new(&mut *pipe).poll_shutdown(&mut cx).is_ready() {
                    self.guest_eof_sent = true;
                }
            }
            if !self.upstream_eof {
                let (m, eof) = pipe_to_guest(sock, pipe, &mut cx);
                moved |= m;
                if eof {
                    self.upstream_eof = true;
                    sock.close();
                }
            }
            if self.pipe_broken && self.upstream_eof && sock.send_queue() == 0 {
                // The proxy task is gone and the guest still sends: reset like a closed
                // socket would.
                sock.abort();
            }
        }
        if moved {
            self.last_active = now;
        }
        if self.closing_since.is_none() && (self.upstream_eof || self.guest_eof_sent) {
            self.closing_since = Some(now);
        }
        sock.register_recv_waker(&self.waker_handle);
        sock.register_send_waker(&self.waker_handle);
        (moved, Outcome::Keep)
    }

    /// Re-arms the socket wakers (for flows still opening).
    pub(crate) fn arm(&self, sock: &mut tcp::Socket<'_>) {
        self.waker.queued.store(false, Ordering::Release);
        sock.register_recv_waker(&self.waker_handle);
        sock.register_send_waker(&self.waker_handle);
    }
}

/// Guest bytes waiting in the socket go into the pipe. With the proxy task gone they are
/// discarded so the guest's window stays open until the flow is reset.
fn guest_to_pipe(
    sock: &mut tcp::Socket<'_>,
    pipe: &mut DuplexStream,
    cx: &mut Context<'_>,
    broken: &mut bool,
) -> bool {
    let mut moved = false;
    while sock.can_recv() {
        let r = sock.recv(|buf| {
            if *broken {
                return (buf.len(), true);
            }
            match Pin::new(&mut *pipe).poll_write(cx, buf) {
                Poll::Ready(Ok(n)) => (n, n > 0),
                Poll::Ready(Err(_)) => {
                    *broken = true;
                    (buf.len(), true)
                }
                Poll::Pending => (0, false),
            }
        });
        match r {
            Ok(true) => moved = true,
            _ => break,
        }
    }
    moved
}

/// Proxy bytes waiting in the pipe go into the socket's send buffer. Returns (moved, eof).
fn pipe_to_guest(
    sock: &mut tcp::Socket<'_>,
    pipe: &mut DuplexStream,
    cx: &mut Context<'_>,
) -> (bool, bool) {
    let mut moved = false;
    if !sock.may_send() {
        // The guest reset or we already closed: nothing more can be sent.
        return (moved, matches!(sock.state(), State::Closed));
    }
    while sock.can_send() {
        let r = sock.send(|buf| {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut *pipe).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    (n, Some(n))
                }
                Poll::Ready(Err(_)) => (0, Some(0)),
                Poll::Pending => (0, None),
            }
        });
        match r {
            Ok(Some(0)) => return (moved, true),
            Ok(Some(_)) => moved = true,
            _ => break,
        }
    }
    (moved, false)
}
