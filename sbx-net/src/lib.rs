#![deny(unsafe_code)]
//! sbx-net (docs to come)

mod ca;
mod credentials;
mod error;
mod log;
mod policy;
mod proxy;

pub use ca::CertificateAuthority;
pub use credentials::{Credential, CredentialProvider, Sentinel, StaticCredentials};
pub use error::{Error, Result};
pub use log::{JsonLinesLog, LogRecord, MemoryLog, NoLog, PolicyLog, ProxyKind, RecordType};
pub use policy::*;
pub use proxy::*;
