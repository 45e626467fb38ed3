//! The [`SecretStore`] seam and the stores behind it.

mod file;
mod keyring;
mod memory;

use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::Scope;

pub use file::{FileKey, FileStore, FileStoreConfig, KdfParams, Unlock};
pub use keyring::KeyringStore;
pub use memory::MemoryStore;

/// Where secret values live. Implementations never log or format values, and their errors
/// never carry them.
///
/// Values are addressed by scope and name; the catalog of what exists (and what it is for)
/// is kept separately by [`Secrets`](crate::Secrets), because not every store can list its
/// contents.
pub trait SecretStore: Send + Sync + fmt::Debug {
    /// Which kind of store this is.
    fn kind(&self) -> StoreKind;

    /// A one-line description for users: what it is, where, how long it keeps values.
    fn describe(&self) -> String;

    /// The value, or `None` if the store has none.
    fn get(&self, scope: &Scope, name: &str) -> Result<Option<SecretString>>;

    /// Stores or replaces a value.
    fn set(&self, scope: &Scope, name: &str, value: &SecretString) -> Result<()>;

    /// Removes a value; `false` if there was none.
    fn delete(&self, scope: &Scope, name: &str) -> Result<bool>;
}

/// The kinds of store, as named in `SBX_SECRET_STORE` and listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StoreKind {
    /// The Linux kernel keyring (keyutils): user and persistent keyrings; lost at reboot.
    Keyring,
    /// The desktop Secret Service over D-Bus (GNOME Keyring, KWallet).
    SecretService,
    /// The macOS Keychain.
    Keychain,
    /// An encrypted file (XChaCha20-Poly1305, key from a passphrase via Argon2id).
    File,
    /// Process memory: tests and embedders.
    Memory,
}

impl StoreKind {
    /// The name used in `SBX_SECRET_STORE` and the STORE column.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Keyring => "keyring",
            StoreKind::SecretService => "secret-service",
            StoreKind::Keychain => "keychain",
            StoreKind::File => "file",
            StoreKind::Memory => "memory",
        }
    }

    /// How long values survive in this kind of store.
    pub fn persistence(self) -> &'static str {
        match self {
            StoreKind::Keyring => "until reboot",
            StoreKind::SecretService | StoreKind::Keychain | StoreKind::File => "until removed",
            StoreKind::Memory => "until the process exits",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`StoreKind::from_str`].
#[derive(Debug, thiserror::Error)]
#[error("unknown secret store `{0}` (use keyring, secret-service, keychain, file or memory)")]
pub struct UnknownStoreKind(String);

impl FromStr for StoreKind {
    type Err = UnknownStoreKind;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "keyring" | "kernel-keyring" | "keyutils" => StoreKind::Keyring,
            "secret-service" => StoreKind::SecretService,
            "keychain" => StoreKind::Keychain,
            "file" => StoreKind::File,
            "memory" => StoreKind::Memory,
            other => return Err(UnknownStoreKind(crate::error::clip(other))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in [
            StoreKind::Keyring,
            StoreKind::SecretService,
            StoreKind::Keychain,
            StoreKind::File,
            StoreKind::Memory,
        ] {
            assert_eq!(k.as_str().parse::<StoreKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
        }
        assert!("disk".parse::<StoreKind>().is_err());
    }
}
