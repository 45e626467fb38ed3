//! The frame fd as a smoltcp device: one read is one frame in, one write is one frame out.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use tokio::io::unix::AsyncFd;

/// Frames queued when the fd would block (a SOCK_SEQPACKET peer that is behind); beyond this
/// smoltcp is told the device is busy and keeps the data in its socket buffers.
const MAX_BACKLOG: usize = 1024;

/// Counters shared with the stack's handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) frames_blocked: AtomicU64,
    pub(crate) flows_opened: AtomicU64,
    pub(crate) flows_refused: AtomicU64,
    pub(crate) flows_active: AtomicU64,
    pub(crate) dns_queries: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The writing half: the fd and frames waiting for it.
pub(crate) struct Port {
    fd: AsyncFd<File>,
    backlog: VecDeque<Vec<u8>>,
    tx_buf: Vec<u8>,
    counters: Arc<Counters>,
}

/// The device smoltcp polls: at most one staged incoming frame (the stack classifies each
/// frame before handing it over) and the port.
pub(crate) struct Link {
    pub(crate) port: Port,
    rx: Vec<u8>,
    rx_len: Option<usize>,
    mtu: usize,
}

impl Link {
    /// Takes ownership of a frame fd and makes it non-blocking. Must run inside a tokio
    /// runtime.
    pub(crate) fn new(fd: OwnedFd, mtu: usize, counters: Arc<Counters>) -> io::Result<Link> {
        set_nonblocking(&fd)?;
        let frame_max = mtu + 18;
        let file = File::from(fd);
        // The one unsafe block of the crate: tokio's registration asks the caller to vouch
        // for the descriptor.
        #[allow(unsafe_code)]
        // SAFETY: `file` owns the descriptor, and `File::as_raw_fd` returns that same
        // descriptor for as long as the `AsyncFd` (which owns the `File`) lives.
        let fd = unsafe { AsyncFd::register(file) }.map_err(io::Error::from)?;
        Ok(Link {
            port: Port {
                fd,
                backlog: VecDeque::new(),
                tx_buf: vec![0; frame_max],
                counters,
            },
            // Room for oversized frames so they are seen (and dropped) whole, not truncated
            // into something that parses.
            rx: vec![0; 65536 + 18],
            rx_len: None,
            mtu,
        })
    }

    /// Reads the next frame from the fd into the staging buffer. `Ready(Ok(None))` when
    /// nothing is queued (readiness is re-armed), `Pending` when the fd is not readable.
    pub(crate) fn poll_read_frame(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = match self.port.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let buf = &mut self.rx;
            let closed = guard.ready().is_read_closed();
            match guard.try_io(|fd| fd.get_ref().read(buf)) {
                // An empty datagram, unless the peer hung up (SOCK_SEQPACKET end of file).
                Ok(Ok(0)) if !closed => {
                    Counters::bump(&self.port.counters.frames_dropped);
                    continue;
                }
                Ok(Ok(n)) => {
                    Counters::bump(&self.port.counters.frames_in);
                    self.rx_len = None;
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // WouldBlock: readiness cleared; poll again to register the waker.
                Err(_) => continue,
            }
        }
    }

    /// The frame last read.
    pub(crate) fn frame(&self, len: usize) -> &[u8] {
        &self.rx[..len.min(self.rx.len())]
    }

    /// Offers the frame last read (`len` bytes) to the next `receive`.
    pub(crate) fn stage(&mut self, len: usize) {
        self.rx_len = Some(len.min(self.rx.len()));
    }

    /// Writes queued frames while the fd takes them; registers for writability otherwise.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(frame) = self.port.backlog.front() {
            let mut guard = match self.port.fd.poll_write_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            match guard.try_io(|fd| fd.get_ref().write(frame)) {
                Ok(Ok(_)) => {
                    Counters::bump(&self.port.counters.frames_out);
                    self.port.backlog.pop_front();
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "frame write failed; dropped");
                    Counters::bump(&self.port.counters.frames_dropped);
                    self.port.backlog.pop_front();
                }
                Err(_) => {}
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether frames wait for the fd.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.port.backlog.is_empty()
    }
}

impl Port {
    fn send<R>(&mut self, len: usize, build: impl FnOnce(&mut [u8]) -> R) -> R {
        if self.tx_buf.len() < len {
            self.tx_buf.resize(len, 0);
        }
        let frame = &mut self.tx_buf[..len];
        let r = build(frame);
        if !self.backlog.is_empty() {
            self.backlog.push_back(frame.to_vec());
            return r;
        }
        loop {
            match self.fd.get_ref().write(frame) {
                Ok(_) => {
                    Counters::bump(&self.counters.frames_out);
                    return r;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog.push_back(frame.to_vec());
                    return r;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "frame write failed; dropped");
                    Counters::bump(&self.counters.frames_dropped);
                    return r;
                }
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL)?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.insert(OFlag::O_NONBLOCK);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(())
}

pub(crate) struct RxToken<'a>(&'a [u8]);

pub(crate) struct TxToken<'a>(&'a mut Port);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.0.send(len, f)
    }
}

impl phy::Device for Link {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let len = self.rx_len.take()?;
        Some((RxToken(&self.rx[..len]), TxToken(&mut self.port)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        if self.port.backlog.len() >= MAX_BACKLOG {
            return None;
        }
        Some(TxToken(&mut self.port))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps.max_burst_size = None;
        caps
    }
}
