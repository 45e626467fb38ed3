//! Frames: `[u32 LE length][u8 tag][payload]`, where the length counts the tag and payload.
//!
//! Both sides open with [`Frame::Hello`]. The host then sends one [`Frame::Exec`] (or
//! [`Frame::Shutdown`]); the agent answers [`Frame::Started`] (or [`Frame::Error`]) and from then
//! on streams [`Frame::Output`], [`Frame::Eof`], and finally [`Frame::Exit`]. Output and stdin use
//! per-stream credit: a sender never has more unacknowledged bytes in flight on a stream than the
//! receiver granted ([`Frame::Credit`]), so one stalled stream never blocks the others.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::error::{DecodeError, RemoteErrorKind};
use crate::types::{ExecRequest, ExitStatus, StreamId, User, WindowSize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Magic number at the start of a hello frame: `SBXE`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SBXE");
/// The largest frame (length prefix value) either side accepts.
pub const MAX_FRAME_LEN: u32 = 1 << 20;
/// The largest data payload in one stdin or output frame.
pub const MAX_DATA_CHUNK: usize = 128 * 1024;
/// Largest argv/env element count accepted in a request.
const MAX_LIST: u32 = 65_536;

/// One protocol message.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Frame {
    /// First frame from each side.
    Hello {
        /// The sender's protocol version.
        version: u16,
    },
    /// Host: run a command; `window` is the initial output credit per stream.
    Exec {
        /// The command.
        request: ExecRequest,
        /// Initial credit for stdout and stderr, each.
        window: u32,
    },
    /// Host: shut the sandbox down.
    Shutdown,
    /// Host: bytes for the command's stdin.
    Stdin(Vec<u8>),
    /// Host: no more stdin.
    StdinEof,
    /// Host: new PTY size.
    Resize(WindowSize),
    /// Host: send this signal to the command.
    Signal(i32),
    /// Either side: the receiver may send `bytes` more on `stream`.
    Credit {
        /// The stream.
        stream: StreamId,
        /// Additional bytes allowed.
        bytes: u32,
    },
    /// Agent: the command started.
    Started {
        /// Its process id inside the sandbox.
        pid: u32,
        /// Initial stdin credit.
        stdin_window: u32,
    },
    /// Agent: output bytes.
    Output {
        /// Stdout or stderr.
        stream: StreamId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Agent: the stream ended.
    Eof {
        /// Stdout or stderr.
        stream: StreamId,
    },
    /// Agent: the command ended; the last frame of an exec.
    Exit(ExitStatus),
    /// Agent: a request succeeded and has no other answer (shutdown).
    Ack,
    /// Agent: the request failed.
    Error {
        /// The category.
        kind: RemoteErrorKind,
        /// A human-readable message.
        message: String,
    },
}

mod tag {
    pub const HELLO: u8 = 0x01;
    pub const EXEC: u8 = 0x02;
    pub const SHUTDOWN: u8 = 0x03;
    pub const STDIN: u8 = 0x04;
    pub const STDIN_EOF: u8 = 0x05;
    pub const RESIZE: u8 = 0x06;
    pub const SIGNAL: u8 = 0x07;
    pub const CREDIT: u8 = 0x08;
    pub const STARTED: u8 = 0x81;
    pub const OUTPUT: u8 = 0x82;
    pub const EOF: u8 = 0x83;
    pub const EXIT: u8 = 0x84;
    pub const ACK: u8 = 0x85;
    pub const ERROR: u8 = 0x86;
}

impl Frame {
    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Exec { .. } => "exec",
            Self::Shutdown => "shutdown",
            Self::Stdin(_) => "stdin",
            Self::StdinEof => "stdin-eof",
            Self::Resize(_) => "resize",
            Self::Signal(_) => "signal",
            Self::Credit { .. } => "credit",
            Self::Started { .. } => "started",
            Self::Output { .. } => "output",
            Self::Eof { .. } => "eof",
            Self::Exit(_) => "exit",
            Self::Ack => "ack",
            Self::Error { .. } => "error",
        }
    }

    /// Appends the encoded frame (with its length prefix) to `out`.
    ///
    /// Data frames larger than [`MAX_DATA_CHUNK`] and requests larger than [`MAX_FRAME_LEN`] are
    /// the caller's bug; the peer rejects them.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut w = Enc(out);
        match self {
            Self::Hello { version } => {
                w.u8(tag::HELLO);
                w.u32(MAGIC);
                w.u16(*version);
            }
            Self::Exec { request, window } => {
                w.u8(tag::EXEC);
                w.u32(*window);
                w.u32(request.argv.len() as u32);
                for a in &request.argv {
                    w.bytes(a.as_bytes());
                }
                w.u32(request.env.len() as u32);
                for (k, v) in &request.env {
                    w.bytes(k.as_bytes());
                    w.bytes(v.as_bytes());
                }
                match &request.cwd {
                    None => w.u8(0),
                    Some(p) => {
                        w.u8(1);
                        w.bytes(p.as_os_str().as_bytes());
                    }
                }
                match &request.user {
                    None => w.u8(0),
                    Some(User::Name(n)) => {
                        w.u8(1);
                        w.bytes(n.as_bytes());
                    }
                    Some(User::Id { uid, gid }) => {
                        w.u8(2);
                        w.u32(*uid);
                        w.u32(*gid);
                    }
                }
                match &request.tty {
                    None => w.u8(0),
                    Some(ws) => {
                        w.u8(1);
                        w.u16(ws.rows);
                        w.u16(ws.cols);
                    }
                }
            }
            Self::Shutdown => w.u8(tag::SHUTDOWN),
            Self::Stdin(data) => {
                w.u8(tag::STDIN);
                w.0.extend_from_slice(data);
            }
            Self::StdinEof => w.u8(tag::STDIN_EOF),
            Self::Resize(ws) => {
                w.u8(tag::RESIZE);
                w.u16(ws.rows);
                w.u16(ws.cols);
            }
            Self::Signal(s) => {
                w.u8(tag::SIGNAL);
                w.u32(*s as u32);
            }
            Self::Credit { stream, bytes } => {
                w.u8(tag::CREDIT);
                w.u8(stream.to_wire());
                w.u32(*bytes);
            }
            Self::Started { pid, stdin_window } => {
                w.u8(tag::STARTED);
                w.u32(*pid);
                w.u32(*stdin_window);
            }
            Self::Output { stream, data } => {
                w.u8(tag::OUTPUT);
                w.u8(stream.to_wire());
                w.0.extend_from_slice(data);
            }
            Self::Eof { stream } => {
                w.u8(tag::EOF);
                w.u8(stream.to_wire());
            }
            Self::Exit(status) => {
                w.u8(tag::EXIT);
                match status {
                    ExitStatus::Code(c) => {
                        w.u8(0);
                        w.u32(*c as u32);
                    }
                    ExitStatus::Signal {
                        signal,
                        core_dumped,
                    } => {
                        w.u8(if *core_dumped { 2 } else { 1 });
                        w.u32(*signal as u32);
                    }
                }
            }
            Self::Ack => w.u8(tag::ACK),
            Self::Error { kind, message } => {
                w.u8(tag::ERROR);
                w.u16(kind.to_wire());
                w.bytes(message.as_bytes());
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes one frame body (tag and payload, without the length prefix).
    pub fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let (&t, rest) = body.split_first().ok_or(DecodeError::Empty)?;
        let mut r = Dec(rest);
        let frame = match t {
            tag::HELLO => {
                if r.u32()? != MAGIC {
                    return Err(DecodeError::InvalidValue("magic"));
                }
                Self::Hello { version: r.u16()? }
            }
            tag::EXEC => {
                let window = r.u32()?;
                let argc = r.count()?;
                let mut argv = Vec::new();
                for _ in 0..argc {
                    argv.push(OsString::from_vec(r.bytes()?.to_vec()));
                }
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(DecodeError::InvalidValue("argv"));
                }
                let envc = r.count()?;
                let mut env = Vec::new();
                for _ in 0..envc {
                    let k = OsString::from_vec(r.bytes()?.to_vec());
                    let v = OsString::from_vec(r.bytes()?.to_vec());
                    env.push((k, v));
                }
                let cwd = match r.u8()? {
                    0 => None,
                    1 => Some(PathBuf::from(OsString::from_vec(r.bytes()?.to_vec()))),
                    _ => return Err(DecodeError::InvalidValue("cwd")),
                };
                let user = match r.u8()? {
                    0 => None,
                    1 => Some(User::Name(
                        String::from_utf8(r.bytes()?.to_vec())
                            .map_err(|_| DecodeError::InvalidValue("user name"))?,
                    )),
                    2 => Some(User::Id {
                        uid: r.u32()?,
                        gid: r.u32()?,
                    }),
                    _ => return Err(DecodeError::InvalidValue("user")),
                };
                let tty = match r.u8()? {
                    0 => None,
                    1 => Some(WindowSize::new(r.u16()?, r.u16()?)),
                    _ => return Err(DecodeError::InvalidValue("tty")),
                };
                let mut request = ExecRequest::new(argv);
                request.env = env;
                request.cwd = cwd;
                request.user = user;
                request.tty = tty;
                Self::Exec { request, window }
            }
            tag::SHUTDOWN => Self::Shutdown,
            tag::STDIN => Self::Stdin(r.rest_data()?),
            tag::STDIN_EOF => Self::StdinEof,
            tag::RESIZE => Self::Resize(WindowSize::new(r.u16()?, r.u16()?)),
            tag::SIGNAL => {
                let s = r.u32()? as i32;
                if !(1..=64).contains(&s) {
                    return Err(DecodeError::InvalidValue("signal"));
                }
                Self::Signal(s)
            }
            tag::CREDIT => Self::Credit {
                stream: r.stream()?,
                bytes: r.u32()?,
            },
            tag::STARTED => Self::Started {
                pid: r.u32()?,
                stdin_window: r.u32()?,
            },
            tag::OUTPUT => {
                let stream = r.stream()?;
                if stream == StreamId::Stdin {
                    return Err(DecodeError::InvalidValue("stream"));
                }
                Self::Output {
                    stream,
                    data: r.rest_data()?,
                }
            }
            tag::EOF => {
                let stream = r.stream()?;
                if stream == StreamId::Stdin {
                    return Err(DecodeError::InvalidValue("stream"));
                }
                Self::Eof { stream }
            }
            tag::EXIT => {
                let kind = r.u8()?;
                let v = r.u32()? as i32;
                Self::Exit(match kind {
                    0 if (0..=255).contains(&v) => ExitStatus::Code(v),
                    1 | 2 if (1..=64).contains(&v) => ExitStatus::Signal {
                        signal: v,
                        core_dumped: kind == 2,
                    },
                    _ => return Err(DecodeError::InvalidValue("exit status")),
                })
            }
            tag::ACK => Self::Ack,
            tag::ERROR => Self::Error {
                kind: RemoteErrorKind::from_wire(r.u16()?),
                message: String::from_utf8_lossy(r.bytes()?).into_owned(),
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        if !r.0.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(frame)
    }

    /// Appends an [`Frame::Output`] frame for `data` (at most [`MAX_DATA_CHUNK`] bytes)
    /// without building a [`Frame`]; the agent's hot path.
    pub fn encode_output(out: &mut Vec<u8>, stream: StreamId, data: &[u8]) {
        out.extend_from_slice(&((data.len() + 2) as u32).to_le_bytes());
        out.push(tag::OUTPUT);
        out.push(stream.to_wire());
        out.extend_from_slice(data);
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

struct Enc<'a>(&'a mut Vec<u8>);

impl Enc<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn count(&mut self) -> Result<u32, DecodeError> {
        let n = self.u32()?;
        // Every element takes at least 4 bytes, so a count larger than what remains is a lie;
        // refusing it early keeps a hostile count from driving a long loop.
        if n > MAX_LIST || n as usize > self.0.len() / 4 {
            return Err(DecodeError::InvalidValue("count"));
        }
        Ok(n)
    }
    fn stream(&mut self) -> Result<StreamId, DecodeError> {
        StreamId::from_wire(self.u8()?).ok_or(DecodeError::InvalidValue("stream"))
    }
    fn rest_data(&mut self) -> Result<Vec<u8>, DecodeError> {
        if self.0.len() > MAX_DATA_CHUNK {
            return Err(DecodeError::InvalidValue("data chunk size"));
        }
        let v = self.0.to_vec();
        self.0 = &[];
        Ok(v)
    }
}

/// Incremental decoder: feed it bytes as they arrive, take complete frames out.
///
/// It never panics on any input, rejects a length prefix above its limit as soon as the four
/// length bytes are in (before buffering the body), and holds at most one frame plus one read.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Storage; bytes `start..end` are received but not yet decoded. Only grows, so reads do
    /// not re-zero it.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_len: u32,
}

/// How much one `read_from` asks for at least.
const READ_SIZE: usize = 256 * 1024;

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with the [`MAX_FRAME_LEN`] limit.
    pub fn new() -> Self {
        Self::with_limit(MAX_FRAME_LEN)
    }

    /// A decoder with a custom frame limit (bounded by [`MAX_FRAME_LEN`]).
    pub fn with_limit(max_len: u32) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_len: max_len.min(MAX_FRAME_LEN),
        }
    }

    /// Makes room for `n` more bytes after `end`.
    fn make_room(&mut self, n: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < n {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < n {
                self.buf.resize(self.end + n, 0);
            }
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.make_room(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// Reads once from `r` into the buffer; returns what `read` returned (0 at end of stream).
    pub fn read_from(&mut self, r: &mut impl std::io::Read) -> std::io::Result<usize> {
        // At least the rest of the frame being assembled, so a large frame takes one read.
        let have = self.end - self.start;
        let need = if have >= 4 {
            let a = &self.buf[self.start..];
            4 + u32::from_le_bytes([a[0], a[1], a[2], a[3]]).min(self.max_len) as usize
        } else {
            0
        };
        let want = need.saturating_sub(have).max(READ_SIZE);
        self.make_room(want);
        let n = r.read(&mut self.buf[self.end..self.end + want])?;
        self.end += n.min(want);
        Ok(n)
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is out of sync; the caller must drop the connection.
    pub fn decode(&mut self) -> Result<Option<Frame>, DecodeError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]);
        if len > self.max_len {
            return Err(DecodeError::TooLarge(u64::from(len)));
        }
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        let total = 4 + len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let frame = Frame::decode_body(&avail[4..total]);
        self.start += total;
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) {
        let bytes = f.to_bytes();
        let mut d = FrameDecoder::new();
        // Byte-at-a-time feeding exercises every partial state.
        let mut out = None;
        for b in &bytes {
            assert!(out.is_none());
            d.extend(&[*b]);
            out = d.decode().unwrap();
        }
        assert_eq!(out, Some(f));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn all_frames_roundtrip() {
        let req = ExecRequest::new(["sh", "-c", "echo hi"])
            .env("A", "b")
            .cwd("/tmp")
            .user(User::Name("agent".into()))
            .tty(WindowSize::new(24, 80));
        let req2 = ExecRequest::new(["true"]).user(User::Id { uid: 5, gid: 6 });
        for f in [
            Frame::Hello { version: 1 },
            Frame::Exec {
                request: req,
                window: 1234,
            },
            Frame::Exec {
                request: req2,
                window: 0,
            },
            Frame::Shutdown,
            Frame::Stdin(b"abc".to_vec()),
            Frame::Stdin(Vec::new()),
            Frame::StdinEof,
            Frame::Resize(WindowSize::new(50, 132)),
            Frame::Signal(15),
            Frame::Credit {
                stream: StreamId::Stderr,
                bytes: 99,
            },
            Frame::Started {
                pid: 42,
                stdin_window: 7,
            },
            Frame::Output {
                stream: StreamId::Stdout,
                data: vec![0; 1000],
            },
            Frame::Eof {
                stream: StreamId::Stderr,
            },
            Frame::Exit(ExitStatus::Code(255)),
            Frame::Exit(ExitStatus::Signal {
                signal: 9,
                core_dumped: true,
            }),
            Frame::Ack,
            Frame::Error {
                kind: RemoteErrorKind::Spawn,
                message: "nope".into(),
            },
        ] {
            roundtrip(f);
        }
    }

    #[test]
    fn oversized_length_rejected_before_body() {
        let mut d = FrameDecoder::new();
        d.extend(&(MAX_FRAME_LEN + 1).to_le_bytes());
        assert!(matches!(d.decode(), Err(DecodeError::TooLarge(_))));
        let mut d = FrameDecoder::new();
        d.extend(&u32::MAX.to_le_bytes());
        assert!(matches!(d.decode(), Err(DecodeError::TooLarge(_))));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let cases: &[&[u8]] = &[
            &[],
            &[0x7f],
            &[tag::HELLO, 1, 2, 3, 4, 1, 0],
            &[tag::CREDIT, 9, 0, 0, 0, 0],
            &[tag::EXIT, 0, 0, 1, 0, 0],
            &[tag::EXIT, 1, 0, 0, 0, 0],
            &[tag::SIGNAL, 0, 0, 0, 0],
            &[tag::EOF, 0],
            &[tag::ACK, 0],
            // exec with argc = 2^32-1
            &[tag::EXEC, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            // exec with empty argv
            &[tag::EXEC, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ];
        for c in cases {
            assert!(Frame::decode_body(c).is_err(), "{c:?}");
        }
    }

    #[test]
    fn direct_output_encoding_matches() {
        let mut v = vec![9u8];
        Frame::encode_output(&mut v, StreamId::Stderr, b"abc");
        let want = Frame::Output {
            stream: StreamId::Stderr,
            data: b"abc".to_vec(),
        }
        .to_bytes();
        assert_eq!(&v[1..], &want[..]);
    }

    #[test]
    fn decoder_reuses_its_buffer() {
        let mut d = FrameDecoder::new();
        let f = Frame::Stdin(vec![1; 1000]).to_bytes();
        for _ in 0..1000 {
            let mut r = &f[..];
            d.read_from(&mut r).unwrap();
            assert!(matches!(d.decode(), Ok(Some(Frame::Stdin(_)))));
        }
        assert!(d.buf.len() <= READ_SIZE + 2 * f.len());
    }

    #[test]
    fn zero_length_prefix_is_error() {
        let mut d = FrameDecoder::new();
        d.extend(&[0, 0, 0, 0]);
        assert_eq!(d.decode(), Err(DecodeError::Empty));
    }

    #[test]
    fn several_frames_in_one_chunk() {
        let mut bytes = Frame::Hello { version: 1 }.to_bytes();
        Frame::StdinEof.encode(&mut bytes);
        let mut d = FrameDecoder::new();
        d.extend(&bytes);
        assert_eq!(d.decode().unwrap(), Some(Frame::Hello { version: 1 }));
        assert_eq!(d.decode().unwrap(), Some(Frame::StdinEof));
        assert_eq!(d.decode().unwrap(), None);
    }
}
