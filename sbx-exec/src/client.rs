//! The host-side client: one connection per exec.
//!
//! Why a connection per exec rather than multiplexing: the transport (Unix socket, or the VMM's
//! vsock with its own credit-based flow control) already gives each connection independent
//! buffering and teardown, so a stuck or abandoned exec cannot stall another, closing the
//! connection is an unambiguous "host went away", and neither side needs a stream-id table.
//! A connect costs tens of microseconds, well under the budget of an exec round trip.
//! Within a connection the three standard streams have their own credit windows.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{DecodeError, Error, RemoteErrorKind, Result};
use crate::frame::{Frame, FrameDecoder, MAX_DATA_CHUNK, PROTOCOL_VERSION};
use crate::transport::{Stream, Transport, UnixTransport};
use crate::types::{ExecRequest, ExitStatus, StreamId, WindowSize};

/// Default output credit per stream.
pub const DEFAULT_WINDOW: u32 = 1 << 20;

/// A handle to one sandbox's agent. Cheap to clone; every exec opens its own connection.
#[derive(Clone, Debug)]
pub struct Client {
    transport: Arc<dyn Transport>,
    window: u32,
    start_timeout: Duration,
}

/// Collected result of [`Client::output`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Output {
    /// How the command ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout (or the PTY).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Client {
    /// A client over any transport.
    pub fn new(transport: impl Transport + 'static) -> Self {
        Self {
            transport: Arc::new(transport),
            window: DEFAULT_WINDOW,
            start_timeout: Duration::from_secs(30),
        }
    }

    /// A client for an agent listening on the Unix socket at `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::new(UnixTransport::new(path))
    }

    /// Sets the per-stream output window (bytes the agent may send ahead of reads).
    #[must_use]
    pub fn window(mut self, bytes: u32) -> Self {
        self.window = bytes.clamp(MAX_DATA_CHUNK as u32, 64 << 20);
        self
    }

    /// How long [`Client::exec`] and [`Client::shutdown`] wait for the agent's answer
    /// (default 30 s). The command itself may run for any time.
    #[must_use]
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    /// Connects, sends the request (and stdin EOF when `close_stdin`), and waits for
    /// `Started`. With `collect`, output is credited back as soon as it arrives.
    fn start(&self, request: ExecRequest, close_stdin: bool, collect: bool) -> Result<Begun> {
        let mut sock = self.transport.connect()?;
        let mut out = Vec::new();
        Frame::Hello {
            version: PROTOCOL_VERSION,
        }
        .encode(&mut out);
        Frame::Exec {
            request,
            window: self.window,
        }
        .encode(&mut out);
        if close_stdin {
            Frame::StdinEof.encode(&mut out);
        }
        sock.set_stream_read_timeout(Some(self.start_timeout))?;
        sock.write_all(&out)?;
        let mut dec = FrameDecoder::new();
        expect_hello(read_frame(&mut sock, &mut dec)?)?;
        let (pid, stdin_window) = match read_frame(&mut sock, &mut dec)? {
            Frame::Started { pid, stdin_window } => (pid, stdin_window),
            Frame::Error { kind, message } => return Err(Error::Remote { kind, message }),
            other => return Err(Error::Unexpected(other.name())),
        };
        sock.set_stream_read_timeout(None)?;
        let writer = sock.try_clone_stream()?;
        let buf = || OutBuf {
            allowed: u64::from(self.window),
            collect,
            ..OutBuf::default()
        };
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            state: Mutex::new(State {
                out: [buf(), buf()],
                stdin_credit: u64::from(stdin_window),
                exit: None,
                failure: None,
            }),
            cond: Condvar::new(),
            window: self.window,
        });
        tracing::debug!(pid, "exec started");
        Ok(Begun {
            sock,
            dec,
            shared,
            pid,
        })
    }

    /// Starts a command. Returns once the agent has started it (or failed to).
    pub fn exec(&self, request: ExecRequest) -> Result<ExecSession> {
        let Begun {
            sock,
            dec,
            shared,
            pid,
        } = self.start(request, false, false)?;
        let reader_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sbx-exec-reader".into())
            .spawn(move || reader_loop(&reader_shared, sock, dec))?;
        Ok(ExecSession {
            pid,
            stdin: Some(ExecStdin {
                shared: Arc::clone(&shared),
            }),
            stdout: Some(ExecOutput {
                shared: Arc::clone(&shared),
                stream: StreamId::Stdout,
            }),
            stderr: Some(ExecOutput {
                shared: Arc::clone(&shared),
                stream: StreamId::Stderr,
            }),
            shared,
        })
    }

    /// Runs a command with empty stdin and collects its output. Runs entirely in the calling
    /// thread (no helper thread), which makes it the fastest way to run a short command.
    pub fn output(&self, request: ExecRequest) -> Result<Output> {
        let Begun {
            sock, dec, shared, ..
        } = self.start(request, true, true)?;
        reader_loop(&shared, sock, dec);
        let mut st = shared.lock();
        let Some(status) = st.exit else {
            return Err(st
                .failure
                .as_ref()
                .map_or(Error::ConnectionClosed, Failure::to_error));
        };
        let [stdout, stderr] = [0, 1].map(|i| {
            let ob = &mut st.out[i];
            let mut v = Vec::with_capacity(ob.chunks.iter().map(Vec::len).sum());
            for c in ob.chunks.drain(..) {
                v.extend_from_slice(&c);
            }
            v
        });
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Asks the agent to shut the sandbox down (stop every process, then exit or power off).
    pub fn shutdown(&self) -> Result<()> {
        let mut sock = self.transport.connect()?;
        let mut out = Vec::new();
        Frame::Hello {
            version: PROTOCOL_VERSION,
        }
        .encode(&mut out);
        Frame::Shutdown.encode(&mut out);
        sock.set_stream_read_timeout(Some(self.start_timeout))?;
        sock.write_all(&out)?;
        let mut dec = FrameDecoder::new();
        expect_hello(read_frame(&mut sock, &mut dec)?)?;
        match read_frame(&mut sock, &mut dec)? {
            Frame::Ack => Ok(()),
            Frame::Error { kind, message } => Err(Error::Remote { kind, message }),
            other => Err(Error::Unexpected(other.name())),
        }
    }
}

fn expect_hello(f: Frame) -> Result<()> {
    match f {
        Frame::Hello { version } if version == PROTOCOL_VERSION => Ok(()),
        Frame::Hello { version } => Err(Error::Version(version)),
        Frame::Error { kind, message } => Err(Error::Remote { kind, message }),
        other => Err(Error::Unexpected(other.name())),
    }
}

fn read_frame(sock: &mut Box<dyn Stream>, dec: &mut FrameDecoder) -> Result<Frame> {
    loop {
        if let Some(f) = dec.decode()? {
            return Ok(f);
        }
        match dec.read_from(sock) {
            Ok(0) => return Err(Error::ConnectionClosed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Error::ConnectionClosed)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::Timeout)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[derive(Default)]
struct OutBuf {
    /// Bytes the agent may still send (granted and not yet used): a guest that ignores its
    /// window cannot make the host buffer without bound.
    allowed: u64,
    /// Collected by [`Client::output`]: credited back on arrival.
    collect: bool,
    chunks: VecDeque<Vec<u8>>,
    front_pos: usize,
    eof: bool,
    discard: bool,
    unacked: u32,
}

#[derive(Clone, Debug)]
enum Failure {
    Closed,
    Io(io::ErrorKind),
    Protocol(DecodeError),
    Unexpected(&'static str),
    Remote(RemoteErrorKind, String),
}

impl Failure {
    fn to_error(&self) -> Error {
        match self {
            Self::Closed => Error::ConnectionClosed,
            Self::Io(k) => Error::Io(io::Error::from(*k)),
            Self::Protocol(e) => Error::Protocol(e.clone()),
            Self::Unexpected(n) => Error::Unexpected(n),
            Self::Remote(kind, message) => Error::Remote {
                kind: *kind,
                message: message.clone(),
            },
        }
    }
}

/// A started exec before its reader runs.
struct Begun {
    sock: Box<dyn Stream>,
    dec: FrameDecoder,
    shared: Arc<Shared>,
    pid: u32,
}

struct State {
    out: [OutBuf; 2],
    stdin_credit: u64,
    exit: Option<ExitStatus>,
    failure: Option<Failure>,
}

struct Shared {
    writer: Mutex<Box<dyn Stream>>,
    state: Mutex<State>,
    cond: Condvar,
    window: u32,
}

fn out_index(s: StreamId) -> usize {
    match s {
        StreamId::Stderr => 1,
        _ => 0,
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, frame: &Frame) -> io::Result<()> {
        let bytes = frame.to_bytes();
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&bytes)
    }

    fn credit(&self, stream: StreamId, bytes: u32) {
        if bytes > 0 {
            self.lock().out[out_index(stream)].allowed += u64::from(bytes);
            // A failed credit write means the connection is gone; the reader reports that.
            let _ = self.send(&Frame::Credit { stream, bytes });
        }
    }

    fn fail(&self, f: Failure) {
        let mut st = self.lock();
        if st.exit.is_none() && st.failure.is_none() {
            tracing::debug!(failure = ?f, "exec connection failed");
            st.failure = Some(f);
        }
        drop(st);
        self.cond.notify_all();
    }

    /// Handles one frame from the agent; false when the exec is over.
    fn handle(&self, f: Frame) -> bool {
        match f {
            Frame::Output { stream, data } => {
                let mut st = self.lock();
                let ob = &mut st.out[out_index(stream)];
                let n = data.len() as u64;
                if n > ob.allowed {
                    drop(st);
                    self.fail(Failure::Protocol(DecodeError::InvalidValue(
                        "output beyond the granted window",
                    )));
                    return false;
                }
                ob.allowed -= n;
                if ob.discard {
                    drop(st);
                    self.credit(stream, data.len() as u32);
                } else if ob.collect {
                    ob.chunks.push_back(data);
                    drop(st);
                    self.credit(stream, n as u32);
                } else if !data.is_empty() {
                    ob.chunks.push_back(data);
                    drop(st);
                    self.cond.notify_all();
                }
                true
            }
            Frame::Eof { stream } => {
                self.lock().out[out_index(stream)].eof = true;
                self.cond.notify_all();
                true
            }
            Frame::Credit {
                stream: StreamId::Stdin,
                bytes,
            } => {
                self.lock().stdin_credit += u64::from(bytes);
                self.cond.notify_all();
                true
            }
            Frame::Exit(status) => {
                let mut st = self.lock();
                st.exit = Some(status);
                for ob in &mut st.out {
                    ob.eof = true;
                }
                drop(st);
                self.cond.notify_all();
                false
            }
            Frame::Error { kind, message } => {
                self.fail(Failure::Remote(kind, message));
                false
            }
            other => {
                self.fail(Failure::Unexpected(other.name()));
                false
            }
        }
    }
}

fn reader_loop(shared: &Shared, mut sock: Box<dyn Stream>, mut dec: FrameDecoder) {
    loop {
        loop {
            match dec.decode() {
                Ok(Some(f)) => {
                    if !shared.handle(f) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    shared.fail(Failure::Protocol(e));
                    let _ = sock.shutdown_stream(Shutdown::Both);
                    return;
                }
            }
        }
        match dec.read_from(&mut sock) {
            Ok(0) => {
                shared.fail(Failure::Closed);
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                shared.fail(Failure::Closed);
                return;
            }
            Err(e) => {
                shared.fail(Failure::Io(e.kind()));
                return;
            }
        }
    }
}

/// A running command.
///
/// Take the stream handles to read and write concurrently (from other threads if needed); any
/// output stream still held by the session when [`ExecSession::wait`] is called is discarded.
/// Dropping the session closes the connection, and the agent kills the command's process group.
pub struct ExecSession {
    pid: u32,
    shared: Arc<Shared>,
    stdin: Option<ExecStdin>,
    stdout: Option<ExecOutput>,
    stderr: Option<ExecOutput>,
}

impl fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecSession")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl ExecSession {
    /// The command's process id inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The stdin writer, unless taken or closed.
    pub fn stdin(&mut self) -> Option<&mut ExecStdin> {
        self.stdin.as_mut()
    }

    /// Takes the stdin writer (dropping it sends end-of-file).
    pub fn take_stdin(&mut self) -> Option<ExecStdin> {
        self.stdin.take()
    }

    /// Takes the stdout reader (with a PTY: the terminal output).
    pub fn take_stdout(&mut self) -> Option<ExecOutput> {
        self.stdout.take()
    }

    /// Takes the stderr reader (empty with a PTY).
    pub fn take_stderr(&mut self) -> Option<ExecOutput> {
        self.stderr.take()
    }

    /// Sends end-of-file on stdin if the session still holds the writer.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Changes the PTY size; the command gets `SIGWINCH`.
    pub fn resize(&self, size: WindowSize) -> Result<()> {
        Ok(self.shared.send(&Frame::Resize(size))?)
    }

    /// Sends a signal to the command.
    pub fn signal(&self, signal: i32) -> Result<()> {
        Ok(self.shared.send(&Frame::Signal(signal))?)
    }

    /// The exit status if the command has ended.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let st = self.shared.lock();
        if let Some(s) = st.exit {
            return Ok(Some(s));
        }
        match &st.failure {
            Some(f) => Err(f.to_error()),
            None => Ok(None),
        }
    }

    /// Closes stdin (if still held), discards output streams not taken, and waits for the exit
    /// status. Read taken output streams concurrently, or the command may block on a full window.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.stdin = None;
        self.stdout = None;
        self.stderr = None;
        let mut st = self.shared.lock();
        loop {
            if let Some(s) = st.exit {
                return Ok(s);
            }
            if let Some(f) = &st.failure {
                return Err(f.to_error());
            }
            st = self.shared.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        let w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.shutdown_stream(Shutdown::Both);
    }
}

/// The command's stdin. Writes block while the agent's window is full (backpressure).
pub struct ExecStdin {
    shared: Arc<Shared>,
}

impl fmt::Debug for ExecStdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExecStdin")
    }
}

impl Write for ExecStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut st = self.shared.lock();
        loop {
            if st.exit.is_some() || st.failure.is_some() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if st.stdin_credit > 0 {
                break;
            }
            st = self.shared.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let n = buf
            .len()
            .min(MAX_DATA_CHUNK)
            .min(usize::try_from(st.stdin_credit).unwrap_or(usize::MAX));
        st.stdin_credit -= n as u64;
        drop(st);
        self.shared.send(&Frame::Stdin(buf[..n].to_vec()))?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ExecStdin {
    fn drop(&mut self) {
        let _ = self.shared.send(&Frame::StdinEof);
    }
}

/// The command's stdout or stderr. Reading returns credit to the agent; dropping the reader
/// discards the rest of the stream.
pub struct ExecOutput {
    shared: Arc<Shared>,
    stream: StreamId,
}

impl fmt::Debug for ExecOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ExecOutput").field(&self.stream).finish()
    }
}

impl Read for ExecOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let idx = out_index(self.stream);
        let mut st = self.shared.lock();
        loop {
            let ob = &mut st.out[idx];
            if !ob.chunks.is_empty() {
                // Copy as many buffered chunks as fit: one lock and one wakeup per read, not
                // per frame.
                let mut n = 0;
                while let Some(front) = ob.chunks.front() {
                    let avail = &front[ob.front_pos..];
                    let k = avail.len().min(buf.len() - n);
                    buf[n..n + k].copy_from_slice(&avail[..k]);
                    n += k;
                    ob.front_pos += k;
                    if ob.front_pos == front.len() {
                        ob.chunks.pop_front();
                        ob.front_pos = 0;
                    }
                    if n == buf.len() {
                        break;
                    }
                }
                ob.unacked += n as u32;
                let grant = if ob.unacked >= self.shared.window / 4 {
                    std::mem::take(&mut ob.unacked)
                } else {
                    0
                };
                drop(st);
                self.shared.credit(self.stream, grant);
                return Ok(n);
            }
            if ob.eof {
                return Ok(0);
            }
            if let Some(f) = &st.failure {
                return Err(io::Error::other(f.to_error()));
            }
            st = self.shared.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for ExecOutput {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let ob = &mut st.out[out_index(self.stream)];
        ob.discard = true;
        let mut grant = std::mem::take(&mut ob.unacked) as usize;
        grant += ob.chunks.iter().map(Vec::len).sum::<usize>() - ob.front_pos;
        ob.chunks.clear();
        ob.front_pos = 0;
        let done = ob.eof;
        drop(st);
        if !done {
            self.shared.credit(self.stream, grant as u32);
        }
    }
}
