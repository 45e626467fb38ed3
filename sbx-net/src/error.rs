//! The crate's error type.

use std::io;

/// Errors returned by sbx-net.
///
/// Messages are short and lowercase; causes are chained through `source()`. No variant ever
/// carries a secret value: credential errors name the credential, never its value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy resource (`example.com`, `*.example.com:443`, `10.0.0.0/8`, ...) is malformed.
    #[error("invalid resource {resource:?}: {why}")]
    InvalidResource {
        /// The resource as given (host names are not secret).
        resource: String,
        /// Why it was rejected.
        why: &'static str,
    },
    /// A destination host (from CONNECT, a URI, SNI or Host) is malformed.
    #[error("invalid host {host:?}: {why}")]
    InvalidHost {
        /// The host as given, truncated.
        host: String,
        /// Why it was rejected.
        why: &'static str,
    },
    /// A preset name is not one of `allow-all`, `balanced`, `deny-all`.
    #[error("unknown preset {0:?}")]
    UnknownPreset(String),
    /// A sandbox name used as a policy scope is malformed.
    #[error("invalid sandbox name {0:?}")]
    InvalidSandboxName(String),
    /// A serialized policy could not be read; the running policy is kept.
    #[error("invalid policy")]
    InvalidPolicy(#[source] serde_json::Error),
    /// A credential is misconfigured (the value is never part of the message).
    #[error("invalid credential {name:?}: {why}")]
    InvalidCredential {
        /// Credential name.
        name: String,
        /// Why it was rejected.
        why: &'static str,
    },
    /// The credential provider has no value for a credential.
    #[error("credential {0:?} is not available")]
    CredentialUnavailable(String),
    /// Generating or loading the interception CA or a leaf certificate failed.
    #[error("certificate error")]
    Certificate(#[source] rcgen::Error),
    /// A PEM file or blob held no usable certificate or key.
    #[error("invalid pem: {0}")]
    InvalidPem(&'static str),
    /// TLS configuration failed.
    #[error("tls configuration error")]
    Tls(#[source] rustls::Error),
    /// An I/O error (binding the listener, reading CA files, writing the log).
    #[error("i/o error")]
    Io(#[from] io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Certificate(e)
    }
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Error::Tls(e)
    }
}
