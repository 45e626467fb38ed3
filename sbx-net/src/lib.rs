#![deny(unsafe_code)]
//! sbx-net (docs to come)

mod ca;
#[allow(dead_code)] // The injection engine is wired into the proxy in the next commit.
mod credentials;
mod error;
#[allow(dead_code)] // Records are produced by the proxy in the next commit.
mod log;
mod policy;

pub use ca::CertificateAuthority;
pub use credentials::{Credential, CredentialProvider, Sentinel, StaticCredentials};
pub use error::{Error, Result};
pub use log::{JsonLinesLog, LogRecord, MemoryLog, NoLog, PolicyLog, ProxyKind, RecordType};
pub use policy::*;
