//! The crate's error type.

use std::io;

/// A malformed frame: the peer does not speak this protocol or is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces a frame larger than the limit.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// A frame with a zero length (no tag byte).
    #[error("empty frame")]
    Empty,
    /// The frame's tag byte names no known frame type.
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    /// A field runs past the end of the frame.
    #[error("truncated frame")]
    Truncated,
    /// Bytes left over after the last field.
    #[error("trailing bytes in frame")]
    TrailingBytes,
    /// A field holds a value outside its domain.
    #[error("invalid {0}")]
    InvalidValue(&'static str),
}

/// What went wrong on the agent's side, as reported in an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The program could not be started (not found, not executable, bad cwd...).
    Spawn,
    /// The requested user does not exist in the sandbox.
    NoSuchUser,
    /// The peer sent something the agent could not decode or did not expect.
    Protocol,
    /// The protocol version is not supported.
    Version,
    /// Anything else.
    Other,
}

impl RemoteErrorKind {
    pub(crate) fn to_wire(self) -> u16 {
        match self {
            Self::Spawn => 1,
            Self::NoSuchUser => 2,
            Self::Protocol => 3,
            Self::Version => 4,
            Self::Other => 0,
        }
    }

    pub(crate) fn from_wire(v: u16) -> Self {
        match v {
            1 => Self::Spawn,
            2 => Self::NoSuchUser,
            3 => Self::Protocol,
            4 => Self::Version,
            _ => Self::Other,
        }
    }
}

/// Errors of the exec protocol and client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on the connection.
    #[error("i/o error on the exec connection")]
    Io(#[from] io::Error),
    /// The transport could not connect.
    #[error("cannot connect to the agent at {path}")]
    Connect {
        /// The socket path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The `CONNECT <port>` handshake of a hybrid vsock socket failed.
    #[error("vsock handshake refused: {0}")]
    Handshake(String),
    /// The peer sent a malformed frame.
    #[error("malformed frame from the peer")]
    Protocol(#[from] DecodeError),
    /// The peer sent a well-formed frame at the wrong time.
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0}")]
    Version(u16),
    /// The agent refused or failed the request.
    #[error("agent error: {message}")]
    Remote {
        /// The category.
        kind: RemoteErrorKind,
        /// The agent's message.
        message: String,
    },
    /// The agent did not answer the request in time.
    #[error("the agent did not answer in time")]
    Timeout,
    /// The connection ended before the command's exit status arrived.
    #[error("connection closed before the exit status")]
    ConnectionClosed,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
