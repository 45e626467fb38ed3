//! One host connection: handshake, then one exec (or a shutdown request), driven by `poll`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sbx_exec::{
    ExecRequest, ExitStatus, Frame, FrameDecoder, RemoteErrorKind, StreamId, MAX_DATA_CHUNK,
    PROTOCOL_VERSION,
};

use crate::agent::Shared;
use crate::exec::{self, Started};
use crate::reaper::ChildHandle;
use crate::sys;

/// Stdin bytes the agent buffers for a command ahead of its reads.
const STDIN_WINDOW: u32 = 1 << 20;
/// Stop reading command output while this much is queued for the socket.
const SOCKET_HIGH_WATER: usize = 512 * 1024;
/// Pipe buffer size requested for a command's stdio pipes.
const PIPE_SIZE: i32 = 1 << 20;
/// Time for the host to send its hello and request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// After the command exits, how long to wait for output still in flight from descendants
/// that keep the pipes or terminal open.
const DRAIN_GRACE_MS: i32 = 50;

struct Conn {
    sock: File,
    dec: FrameDecoder,
    wbuf: Vec<u8>,
    wpos: usize,
}

enum Ended {
    /// The host closed or broke the connection.
    HostGone,
    /// The host sent something invalid; the error frame is queued.
    Protocol,
}

impl Conn {
    fn queue(&mut self, f: &Frame) {
        f.encode(&mut self.wbuf);
    }

    fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    fn try_flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.sock.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > 1 << 20 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Flushes everything queued, waiting up to `timeout`.
    fn flush_blocking(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.try_flush()?;
            if self.pending() == 0 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let mut p = [pollfd(self.sock.as_raw_fd(), libc::POLLOUT)];
            sys::poll(&mut p, left.as_millis().min(i32::MAX as u128) as i32)?;
        }
    }

    /// Reads until a complete frame arrives or `deadline` passes.
    fn next_frame(&mut self, deadline: Instant) -> Result<Frame, Ended> {
        loop {
            match self.dec.decode() {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "malformed frame from host");
                    self.queue(&Frame::Error {
                        kind: RemoteErrorKind::Protocol,
                        message: e.to_string(),
                    });
                    return Err(Ended::Protocol);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Ended::HostGone);
            }
            let mut p = [pollfd(self.sock.as_raw_fd(), libc::POLLIN)];
            sys::poll(&mut p, left.as_millis().min(i32::MAX as u128) as i32)
                .map_err(|_| Ended::HostGone)?;
            if p[0].revents != 0 {
                match self.dec.read_from(&mut self.sock) {
                    Ok(0) => return Err(Ended::HostGone),
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Ended::HostGone),
                }
            }
        }
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Serves one accepted connection to completion.
pub(crate) fn serve(sock: File, shared: Arc<Shared>) {
    if let Err(e) = sys::set_nonblocking(&sock, true) {
        tracing::warn!(error = %e, "cannot make connection non-blocking");
        return;
    }
    let mut conn = Conn {
        sock,
        dec: FrameDecoder::new(),
        wbuf: Vec::new(),
        wpos: 0,
    };
    conn.queue(&Frame::Hello {
        version: PROTOCOL_VERSION,
    });
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let first = handshake(&mut conn, deadline);
    match first {
        Ok(Frame::Exec { request, window }) => run_exec(&mut conn, &shared, &request, window),
        Ok(Frame::Shutdown) => {
            conn.queue(&Frame::Ack);
            let _ = conn.flush_blocking(Duration::from_secs(1));
            shared.request_shutdown(0);
        }
        Ok(other) => {
            conn.queue(&Frame::Error {
                kind: RemoteErrorKind::Protocol,
                message: format!("unexpected {} frame", other.name()),
            });
        }
        Err(Ended::HostGone) => return,
        Err(Ended::Protocol) => {}
    }
    let _ = conn.flush_blocking(Duration::from_secs(5));
}

fn handshake(conn: &mut Conn, deadline: Instant) -> Result<Frame, Ended> {
    // Send our hello first so the host learns our version even if it sends garbage.
    let _ = conn.try_flush();
    match conn.next_frame(deadline)? {
        Frame::Hello { version } if version == PROTOCOL_VERSION => {}
        Frame::Hello { version } => {
            conn.queue(&Frame::Error {
                kind: RemoteErrorKind::Version,
                message: format!("protocol version {version} not supported"),
            });
            return Err(Ended::Protocol);
        }
        other => {
            conn.queue(&Frame::Error {
                kind: RemoteErrorKind::Protocol,
                message: format!("expected hello, got {}", other.name()),
            });
            return Err(Ended::Protocol);
        }
    }
    conn.next_frame(deadline)
}

struct Out {
    file: Option<File>,
    credit: u64,
    eof_sent: bool,
    id: StreamId,
}

struct Io {
    handle: ChildHandle,
    pty: Option<File>,
    out: [Out; 2],
    stdin: Option<File>,
    stdin_buf: Vec<u8>,
    stdin_pos: usize,
    stdin_eof: bool,
    /// Bytes the host may still send without a new grant.
    stdin_allowed: u64,
    /// Bytes consumed (written or discarded) but not yet granted back.
    stdin_to_grant: u64,
    exited: Option<i32>,
}

fn run_exec(conn: &mut Conn, shared: &Shared, request: &ExecRequest, window: u32) {
    let Started {
        handle,
        stdin,
        stdout,
        stderr,
        pty,
    } = match exec::start(request, &shared.defaults, &shared.reaper) {
        Ok(s) => s,
        Err((kind, message)) => {
            tracing::debug!(%message, "exec failed");
            conn.queue(&Frame::Error { kind, message });
            return;
        }
    };
    let pid = handle.pid;
    tracing::debug!(pid, program = ?request.argv[0], "exec started");
    conn.queue(&Frame::Started {
        pid: pid as u32,
        stdin_window: STDIN_WINDOW,
    });
    for f in [&stdin, &stdout].into_iter().chain(stderr.as_ref()) {
        if let Err(e) = sys::set_nonblocking(f, true) {
            tracing::warn!(error = %e, "cannot make pipe non-blocking");
        }
        if pty.is_none() {
            // Bigger pipes mean fewer, larger frames for bulk data; 64 KiB is the default.
            let _ = sys::set_pipe_size(f, PIPE_SIZE);
        }
    }
    let mut io = Io {
        handle,
        pty,
        stdin: Some(stdin),
        out: [
            Out {
                file: Some(stdout),
                credit: u64::from(window),
                eof_sent: false,
                id: StreamId::Stdout,
            },
            Out {
                file: stderr,
                credit: u64::from(window),
                eof_sent: false,
                id: StreamId::Stderr,
            },
        ],
        stdin_buf: Vec::new(),
        stdin_pos: 0,
        stdin_eof: false,
        stdin_allowed: u64::from(STDIN_WINDOW),
        stdin_to_grant: 0,
        exited: None,
    };
    if let Err(e) = io_loop(conn, &mut io) {
        if io.handle.waiter.status().is_none() {
            match e {
                Ended::HostGone => tracing::debug!(pid, "host went away; killing the command"),
                Ended::Protocol => tracing::debug!(pid, "protocol error; killing the command"),
            }
            let _ = sys::kill(-pid, libc::SIGKILL);
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }
}

/// Applies one frame from the host.
fn on_frame(conn: &mut Conn, io: &mut Io, f: Frame) -> Result<(), Ended> {
    match f {
        Frame::Stdin(data) => {
            let n = data.len() as u64;
            if n > io.stdin_allowed || io.stdin_eof {
                conn.queue(&Frame::Error {
                    kind: RemoteErrorKind::Protocol,
                    message: "stdin beyond the granted window".into(),
                });
                return Err(Ended::Protocol);
            }
            io.stdin_allowed -= n;
            if io.stdin.is_some() {
                io.stdin_buf.extend_from_slice(&data);
            } else {
                io.stdin_to_grant += n;
            }
        }
        Frame::StdinEof => io.stdin_eof = true,
        Frame::Resize(ws) => {
            if let Some(pty) = &io.pty {
                if let Err(e) = sys::set_winsize(pty, ws.rows, ws.cols) {
                    tracing::debug!(error = %e, "resize failed");
                }
            }
        }
        Frame::Signal(sig) => {
            if io.exited.is_none() {
                let _ = sys::kill(io.handle.pid, sig);
            }
        }
        Frame::Credit { stream, bytes } if stream != StreamId::Stdin => {
            let o = &mut io.out[usize::from(stream == StreamId::Stderr)];
            o.credit = o.credit.saturating_add(u64::from(bytes));
        }
        other => {
            conn.queue(&Frame::Error {
                kind: RemoteErrorKind::Protocol,
                message: format!("unexpected {} frame", other.name()),
            });
            return Err(Ended::Protocol);
        }
    }
    Ok(())
}

fn decode_pending(conn: &mut Conn, io: &mut Io) -> Result<(), Ended> {
    loop {
        match conn.dec.decode() {
            Ok(Some(f)) => on_frame(conn, io, f)?,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "malformed frame from host");
                conn.queue(&Frame::Error {
                    kind: RemoteErrorKind::Protocol,
                    message: e.to_string(),
                });
                return Err(Ended::Protocol);
            }
        }
    }
}

fn io_loop(conn: &mut Conn, io: &mut Io) -> Result<(), Ended> {
    const SOCK: usize = 0;
    const OUT0: usize = 1;
    const STDIN: usize = 3;
    const EXIT: usize = 4;
    let mut buf = vec![0u8; MAX_DATA_CHUNK];
    let mut host_eof = false;
    // Frames may have arrived together with the request.
    decode_pending(conn, io)?;
    loop {
        // Done: the command exited and both output streams ended (or were abandoned).
        if io.exited.is_some() && io.out.iter().all(|o| o.file.is_none()) {
            for o in &mut io.out {
                if !o.eof_sent {
                    conn.queue(&Frame::Eof { stream: o.id });
                    o.eof_sent = true;
                }
            }
            let status = ExitStatus::from_wait_status(io.exited.unwrap_or(0));
            conn.queue(&Frame::Exit(status));
            return conn
                .flush_blocking(Duration::from_secs(10))
                .map_err(|_| Ended::HostGone);
        }
        let mut fds = [pollfd(-1, 0); 5];
        let mut ev = 0;
        if !host_eof {
            ev |= libc::POLLIN;
        }
        if conn.pending() > 0 {
            ev |= libc::POLLOUT;
        }
        fds[SOCK] = pollfd(conn.sock.as_raw_fd(), ev);
        for (i, o) in io.out.iter().enumerate() {
            if let Some(f) = &o.file {
                if o.credit > 0 && conn.pending() < SOCKET_HIGH_WATER {
                    fds[OUT0 + i] = pollfd(f.as_raw_fd(), libc::POLLIN);
                }
            }
        }
        if let Some(f) = &io.stdin {
            if io.stdin_pos < io.stdin_buf.len() {
                fds[STDIN] = pollfd(f.as_raw_fd(), libc::POLLOUT);
            }
        }
        if io.exited.is_none() {
            fds[EXIT] = pollfd(io.handle.exit_notify.as_raw_fd(), libc::POLLIN);
        }
        let timeout = if io.exited.is_some() {
            DRAIN_GRACE_MS
        } else {
            -1
        };
        let n = sys::poll(&mut fds, timeout).map_err(|_| Ended::HostGone)?;
        if n == 0 && io.exited.is_some() {
            // Nothing more arrived after the exit: whoever still holds the pipes or terminal
            // is a descendant that outlived the command. Stop waiting for it, unless the
            // stream is merely waiting for host credit.
            for o in &mut io.out {
                if o.credit > 0 {
                    o.file = None;
                }
            }
            continue;
        }

        // Socket.
        let sev = fds[SOCK].revents;
        if sev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && !host_eof {
            match conn.dec.read_from(&mut conn.sock) {
                Ok(0) => host_eof = true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Ended::HostGone),
            }
            decode_pending(conn, io)?;
            if host_eof {
                // A half-closed host can still read, but this protocol never half-closes:
                // treat it as gone.
                return Err(Ended::HostGone);
            }
        }

        // Command output.
        for i in 0..2 {
            let rev = fds[OUT0 + i].revents;
            if rev == 0 {
                continue;
            }
            let o = &mut io.out[i];
            let Some(f) = o.file.as_mut() else { continue };
            let want = (o.credit.min(MAX_DATA_CHUNK as u64)) as usize;
            match f.read(&mut buf[..want]) {
                Ok(0) => o.file = None,
                Ok(n) => {
                    o.credit -= n as u64;
                    Frame::encode_output(&mut conn.wbuf, o.id, &buf[..n]);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                // EIO: the PTY's last slave closed.
                Err(_) => o.file = None,
            }
            if o.file.is_none() && !o.eof_sent {
                conn.queue(&Frame::Eof { stream: o.id });
                o.eof_sent = true;
            }
        }

        // Command input.
        if fds[STDIN].revents != 0 {
            if let Some(f) = io.stdin.as_mut() {
                match f.write(&io.stdin_buf[io.stdin_pos..]) {
                    Ok(n) => {
                        io.stdin_pos += n;
                        io.stdin_to_grant += n as u64;
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // The command closed its stdin: discard what is buffered and later.
                        io.stdin_to_grant += (io.stdin_buf.len() - io.stdin_pos) as u64;
                        io.stdin = None;
                    }
                }
            }
        }
        if io.stdin_pos == io.stdin_buf.len() {
            io.stdin_buf.clear();
            io.stdin_pos = 0;
        } else if io.stdin.is_none() {
            io.stdin_to_grant += (io.stdin_buf.len() - io.stdin_pos) as u64;
            io.stdin_buf.clear();
            io.stdin_pos = 0;
        } else if io.stdin_pos > (1 << 20) {
            io.stdin_buf.drain(..io.stdin_pos);
            io.stdin_pos = 0;
        }
        if io.stdin_eof && io.stdin_buf.is_empty() && io.pty.is_none() {
            // Closing our end delivers EOF to the command (a PTY has no such thing).
            io.stdin = None;
        }
        if io.stdin_to_grant >= u64::from(STDIN_WINDOW / 4)
            || (io.stdin_to_grant > 0 && io.stdin_buf.is_empty())
        {
            let g = io.stdin_to_grant.min(u64::from(u32::MAX));
            io.stdin_to_grant -= g;
            io.stdin_allowed += g;
            conn.queue(&Frame::Credit {
                stream: StreamId::Stdin,
                bytes: g as u32,
            });
        }

        // Exit notification.
        if fds[EXIT].revents != 0 {
            io.handle.drain_notify();
            if let Some(st) = io.handle.waiter.status() {
                io.exited = Some(st);
                // The command's own stdin no longer matters.
                io.stdin = None;
            }
        }

        conn.try_flush().map_err(|_| Ended::HostGone)?;
    }
}
