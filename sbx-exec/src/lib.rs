//! The sbx exec protocol and its host-side client.
//!
//! Every command in a sandbox (`sbx run`, `sbx exec`, kit startup commands) is started by the
//! guest agent (`sbx-guest`, PID 1 of the sandbox) at the request of the host. This crate holds
//! the wire format both sides share and the client that embedders use:
//!
//! - [`Frame`] and [`FrameDecoder`]: versioned, length-prefixed frames; the decoder bounds frame
//!   sizes and reports malformed input as [`DecodeError`] (it never panics).
//! - [`Transport`]: how to reach the agent. [`UnixTransport`] for namespace sandboxes,
//!   [`HybridVsockTransport`] for a microVM's vsock port exposed as a Unix socket
//!   (`CONNECT <port>\n` / `OK <port>\n`).
//! - [`Client::exec`] returns an [`ExecSession`] streaming stdin, stdout and stderr with
//!   per-stream credit (backpressure), PTY resize, signals, and the exit status (code or signal).
//!   Each exec uses its own connection; any number may run concurrently.
//!
//! The API is synchronous (one helper thread per running exec); async callers wrap it in
//! `spawn_blocking`. Linux and other Unix hosts.
//!
//! # Example
//!
//! ```no_run
//! use sbx_exec::{Client, ExecRequest};
//!
//! # fn main() -> sbx_exec::Result<()> {
//! let client = Client::unix("/path/to/sandbox/exec.sock");
//! let out = client.output(ExecRequest::new(["uname", "-a"]).env("LANG", "C.UTF-8"))?;
//! assert!(out.status.success());
//! std::io::Write::write_all(&mut std::io::stdout(), &out.stdout)?;
//! # Ok(())
//! # }
//! ```
//!
//! Streaming, with a terminal:
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use sbx_exec::{Client, ExecRequest, WindowSize};
//!
//! # fn main() -> sbx_exec::Result<()> {
//! let client = Client::unix("/path/to/sandbox/exec.sock");
//! let mut session = client.exec(ExecRequest::new(["sh"]).tty(WindowSize::new(24, 80)))?;
//! let mut stdin = session.take_stdin().unwrap();
//! let mut stdout = session.take_stdout().unwrap();
//! stdin.write_all(b"stty size; exit 3\n")?;
//! session.resize(WindowSize::new(50, 132))?;
//! let mut screen = Vec::new();
//! stdout.read_to_end(&mut screen)?;
//! assert_eq!(session.wait()?.code(), Some(3));
//! # Ok(())
//! # }
//! ```
//!
//! # Security
//!
//! The agent trusts whoever can connect to its socket: keep the socket in a directory only the
//! sandbox's owner can reach. The client does not trust the agent (code in the sandbox can
//! replace it): frames are size-bounded and validated, output beyond the granted window is a
//! protocol error rather than host memory, and the start of an exec has a timeout
//! ([`Client::start_timeout`]); a wedged guest can still keep [`ExecSession::wait`] waiting,
//! so drop the session to give up. [`ExecRequest`]'s `Debug` output omits environment values, which
//! may carry tokens.

mod client;
mod error;
mod frame;
mod transport;
mod types;

pub use client::{Client, ExecOutput, ExecSession, ExecStdin, Output, DEFAULT_WINDOW};
pub use error::{DecodeError, Error, RemoteErrorKind, Result};
pub use frame::{Frame, FrameDecoder, MAGIC, MAX_DATA_CHUNK, MAX_FRAME_LEN, PROTOCOL_VERSION};
pub use transport::{HybridVsockTransport, Stream, Transport, UnixTransport};
pub use types::{ExecRequest, ExitStatus, StreamId, User, WindowSize};
