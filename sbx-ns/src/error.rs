//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while starting, running or stopping a namespace sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot describe a sandbox (bad path, unsupported character, ...).
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A host-side file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Spawning the setup helper process failed.
    #[error("cannot spawn the sandbox helper {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    /// A system call on the host side failed.
    #[error("{0}")]
    Sys(&'static str, #[source] nix::Error),
    /// The helper reported a failure while building the sandbox.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// The helper broke the control protocol (closed early, sent garbage).
    #[error("sandbox helper protocol: {0}")]
    Protocol(String),
    /// Installing or talking to the guest agent failed.
    #[error("guest agent")]
    Agent(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The sandbox did not become ready in time.
    #[error("sandbox did not start within {0:?}")]
    Timeout(std::time::Duration),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
