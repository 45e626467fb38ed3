//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Errors of the guest agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{what} failed")]
    Io {
        /// What the agent was doing.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A mount failed.
    #[error("mount of {target} failed")]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A kernel module is not in `modules.dep`.
    #[error("kernel module {0} not found in modules.dep")]
    Module(String),
    /// `modules.dep` has a dependency cycle through this module.
    #[error("dependency cycle through kernel module {0}")]
    ModuleCycle(String),
    /// Configuring a network interface failed.
    #[error("cannot {what} {iface}")]
    Network {
        /// What the agent was doing, e.g. `set the address of`.
        what: &'static str,
        /// The interface.
        iface: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The network interface did not appear (is the virtio-net driver loaded?).
    #[error("network interface {iface} did not appear within {waited:?}")]
    NoInterface {
        /// The interface.
        iface: String,
        /// How long the agent waited.
        waited: std::time::Duration,
    },
    /// The CA certificate file is not PEM (`-----BEGIN CERTIFICATE-----` ...).
    #[error("the CA certificate is not a PEM certificate")]
    BadCertificate,
    /// Bad command-line arguments.
    #[error("usage: {0}")]
    Usage(String),
    /// `ldd` could not describe the agent executable.
    #[error("cannot resolve the libraries of {path}: {reason}")]
    Libraries {
        /// The executable.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
