//! OS keychains through the keyring-core ecosystem.
//!
//! The store is chosen explicitly, never through keyring-core's process-wide default:
//! [`KeyringStore::kernel`] uses the Linux kernel keyring (keyutils; works on headless hosts,
//! forgets everything at reboot); [`KeyringStore::from_keyring_core`] wraps any other
//! keyring-core store (the D-Bus Secret Service, the macOS Keychain, or
//! `keyring_core::mock` in tests).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};
use secrecy::{ExposeSecret, SecretString};

use super::{SecretStore, StoreKind};
use crate::error::{Error, Result};
use crate::model::Scope;

/// A keychain store. Entries are named `<namespace>/<scope>/<name>` (scope `g` for global,
/// `s:<sandbox>` for a sandbox); the namespace keeps separate installations (and tests) apart.
#[derive(Clone)]
pub struct KeyringStore {
    inner: Arc<CredentialStore>,
    kind: StoreKind,
    namespace: String,
}

impl fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringStore")
            .field("kind", &self.kind)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn validate_namespace(ns: &str) -> Result<()> {
    let ok = (1..=64).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: crate::error::clip(ns),
            why: "a keyring namespace uses letters, digits, `-`, `_`, `.` (at most 64)",
        })
    }
}

impl KeyringStore {
    /// The Linux kernel keyring: keys are added to the session keyring and linked into the
    /// user's persistent keyring, so they outlive the login session but not a reboot.
    #[cfg(target_os = "linux")]
    pub fn kernel(namespace: &str) -> Result<KeyringStore> {
        validate_namespace(namespace)?;
        let inner = linux_keyutils_keyring_store::Store::new()
            .map_err(|e| map_err(StoreKind::Keyring, e))?;
        Ok(KeyringStore {
            inner,
            kind: StoreKind::Keyring,
            namespace: namespace.to_string(),
        })
    }

    /// The desktop Secret Service (GNOME Keyring, KWallet) on the D-Bus session bus. Fails
    /// with [`Error::StoreUnavailable`] when no session bus or no service answers; call
    /// [`KeyringStore::probe`] before relying on it (a locked collection shows up there).
    #[cfg(all(target_os = "linux", feature = "secret-service"))]
    pub fn secret_service(namespace: &str) -> Result<KeyringStore> {
        validate_namespace(namespace)?;
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none_or(|v| v.is_empty()) {
            return Err(Error::StoreUnavailable {
                store: StoreKind::SecretService,
                hint: hint(StoreKind::SecretService, false),
                source: Some("DBUS_SESSION_BUS_ADDRESS is not set".into()),
            });
        }
        let inner: Arc<CredentialStore> = zbus_secret_service_keyring_store::Store::new()
            .map_err(|e| map_err(StoreKind::SecretService, e))?;
        Ok(KeyringStore {
            inner,
            kind: StoreKind::SecretService,
            namespace: namespace.to_string(),
        })
    }

    /// Wraps any keyring-core store (Secret Service, macOS Keychain, the mock store). `kind`
    /// is what listings report.
    pub fn from_keyring_core(
        inner: Arc<CredentialStore>,
        kind: StoreKind,
        namespace: &str,
    ) -> Result<KeyringStore> {
        validate_namespace(namespace)?;
        Ok(KeyringStore {
            inner,
            kind,
            namespace: namespace.to_string(),
        })
    }

    /// The namespace entries are created in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Checks that the store answers (a lookup of an entry that does not exist). Use it before
    /// choosing a store that may be present but locked or broken.
    pub fn probe(&self) -> Result<()> {
        let entry = self.entry("probe", "-")?;
        match entry.get_password() {
            Ok(_) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(map_err(self.kind, e)),
        }
    }

    fn entry(&self, scope_key: &str, name: &str) -> Result<Entry> {
        let built = if self.kind == StoreKind::Keyring {
            // keyutils names keys by a free-form description; make it readable in `keyctl show`.
            let description = format!("{}/{scope_key}/{name}", self.namespace);
            let mods = HashMap::from([("description", description.as_str())]);
            Entry::new_in_store_with_modifiers(&self.inner, &self.namespace, name, &mods)
        } else {
            Entry::new_in_store(&self.inner, &self.namespace, &format!("{scope_key}/{name}"))
        };
        built.map_err(|e| map_err(self.kind, e))
    }
}

impl SecretStore for KeyringStore {
    fn kind(&self) -> StoreKind {
        self.kind
    }

    fn describe(&self) -> String {
        match self.kind {
            StoreKind::Keyring => format!(
                "Linux kernel keyring, namespace `{}` (lost at reboot)",
                self.namespace
            ),
            StoreKind::SecretService => format!(
                "desktop Secret Service over D-Bus, service `{}`",
                self.namespace
            ),
            StoreKind::Keychain => format!("macOS Keychain, service `{}`", self.namespace),
            other => format!(
                "{other} store via keyring-core, namespace `{}`",
                self.namespace
            ),
        }
    }

    fn get(&self, scope: &Scope, name: &str) -> Result<Option<SecretString>> {
        match self.entry(&scope.key(), name)?.get_password() {
            Ok(v) => Ok(Some(SecretString::from(v))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(map_err(self.kind, e)),
        }
    }

    fn set(&self, scope: &Scope, name: &str, value: &SecretString) -> Result<()> {
        self.entry(&scope.key(), name)?
            .set_password(value.expose_secret())
            .map_err(|e| map_err(self.kind, e))?;
        tracing::debug!(store = %self.kind, %scope, name, "secret stored");
        Ok(())
    }

    fn delete(&self, scope: &Scope, name: &str) -> Result<bool> {
        match self.entry(&scope.key(), name)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(e) => Err(map_err(self.kind, e)),
        }
    }
}

fn hint(kind: StoreKind, locked: bool) -> &'static str {
    match (kind, locked) {
        (StoreKind::Keyring, true) => {
            "the kernel denied access to the user keyring; check that `keyctl show @u` works for \
             this user, or use SBX_SECRET_STORE=file"
        }
        (StoreKind::Keyring, false) => {
            "the kernel keyring failed; check `keyctl show @u` and the key quota \
             (/proc/sys/kernel/keys/maxbytes), or use SBX_SECRET_STORE=file"
        }
        (StoreKind::SecretService, true) => {
            "unlock your desktop keyring (GNOME Keyring, KWallet) and retry, or use \
             SBX_SECRET_STORE=keyring or file"
        }
        (StoreKind::SecretService, false) => {
            "no Secret Service answered on the session bus; start one or use \
             SBX_SECRET_STORE=keyring or file"
        }
        (StoreKind::Keychain, _) => "unlock the login keychain and retry",
        _ => "retry, or choose another store with SBX_SECRET_STORE",
    }
}

/// Converts a keyring-core error without ever carrying secret bytes: `BadEncoding` and
/// `BadDataFormat` hold the raw value, so only a description survives.
pub(crate) fn map_err(kind: StoreKind, e: keyring_core::Error) -> Error {
    use keyring_core::Error as K;
    match e {
        K::NoStorageAccess(source) => Error::StoreLocked {
            store: kind,
            hint: hint(kind, true),
            source: Some(source),
        },
        K::PlatformFailure(source) => Error::StoreUnavailable {
            store: kind,
            hint: hint(kind, false),
            source: Some(source),
        },
        K::NoDefaultStore => Error::StoreUnavailable {
            store: kind,
            hint: hint(kind, false),
            source: None,
        },
        K::BadEncoding(_) => Error::Corrupt {
            store: kind,
            what: "a stored value is not UTF-8".into(),
        },
        K::BadDataFormat(_, _) => Error::Corrupt {
            store: kind,
            what: "a stored value is malformed".into(),
        },
        K::BadStoreFormat(why) => Error::Corrupt {
            store: kind,
            what: crate::error::clip(&why),
        },
        K::Ambiguous(list) => Error::Corrupt {
            store: kind,
            what: format!("{} entries match one name", list.len()),
        },
        K::TooLong(attr, max) => Error::Corrupt {
            store: kind,
            what: format!("`{attr}` is longer than the store allows ({max})"),
        },
        K::Invalid(attr, why) => Error::Corrupt {
            store: kind,
            what: format!("the store rejected `{attr}`: {why}"),
        },
        K::NotSupportedByStore(why) => Error::StoreUnavailable {
            store: kind,
            hint: hint(kind, false),
            source: Some(why.into()),
        },
        K::NoEntry => Error::StoreUnavailable {
            store: kind,
            hint: hint(kind, false),
            source: None,
        },
        other => Error::StoreUnavailable {
            store: kind,
            hint: hint(kind, false),
            source: Some(other.to_string().into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_encoding_never_carries_the_bytes() {
        let canary = b"CANARY-keyring-bytes-0123456789".to_vec();
        let e = map_err(StoreKind::Keyring, keyring_core::Error::BadEncoding(canary));
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("CANARY"), "{shown}");
        let e = map_err(
            StoreKind::Keyring,
            keyring_core::Error::BadDataFormat(b"CANARY-2".to_vec(), "x".into()),
        );
        assert!(!format!("{e} {e:?}").contains("CANARY"));
    }

    #[test]
    fn namespaces_are_checked() {
        let mock = keyring_core::mock::Store::new().unwrap();
        assert!(KeyringStore::from_keyring_core(mock.clone(), StoreKind::Memory, "a/b").is_err());
        assert!(KeyringStore::from_keyring_core(mock, StoreKind::Memory, "sbx-test.1").is_ok());
    }
}
