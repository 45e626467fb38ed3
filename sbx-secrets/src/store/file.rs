//! A persistent store in one encrypted file, for headless hosts where the kernel keyring's
//! forgetting at reboot is not acceptable.
//!
//! Format (JSON): `{"format":"sbx-secrets-file/1","kdf":{...},"nonce":B64,"ciphertext":B64}`.
//! The plaintext (a JSON map of values) is sealed with XChaCha20-Poly1305 under a 256-bit key
//! derived from the user's passphrase with Argon2id (salt and cost in the header, which is
//! authenticated as associated data). Every write uses a fresh random 192-bit nonce and
//! replaces the file atomically (mode 0600). No plaintext ever reaches the disk; decrypted
//! buffers are zeroized after use.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use secrecy::zeroize::{Zeroize, Zeroizing};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

use super::{SecretStore, StoreKind};
use crate::atomic;
use crate::error::{Error, Result};
use crate::model::Scope;

const FORMAT: &str = "sbx-secrets-file/1";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// OWASP's Argon2id minimum: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

impl KdfParams {
    /// Custom costs (tests use small ones; files record theirs).
    pub fn new(m_kib: u32, t: u32, p: u32) -> KdfParams {
        KdfParams { m_kib, t, p }
    }
}

/// A 256-bit file key. `Debug` never shows it.
pub struct FileKey(SecretBox<[u8; 32]>);

impl FileKey {
    /// Derives the key from a passphrase.
    fn derive(passphrase: &SecretString, salt: &[u8], params: KdfParams) -> Result<FileKey> {
        let argon = argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
            .map_err(|_| corrupt("the key derivation parameters are out of range"))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon);
        let mut key = SecretBox::new(Box::new([0u8; 32]));
        argon
            .hash_password_into(
                passphrase.expose_secret().as_bytes(),
                salt,
                secrecy::ExposeSecretMut::expose_secret_mut(&mut key),
            )
            .map_err(|_| corrupt("key derivation failed"))?;
        Ok(FileKey(key))
    }

    /// The key in base64, e.g. to cache it in the kernel keyring after an interactive unlock.
    pub fn to_base64(&self) -> SecretString {
        SecretString::from(B64.encode(self.0.expose_secret()))
    }

    /// A key from [`FileKey::to_base64`].
    pub fn from_base64(text: &SecretString) -> Option<FileKey> {
        let bytes = Zeroizing::new(B64.decode(text.expose_secret()).ok()?);
        let arr: [u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(FileKey(SecretBox::new(Box::new(arr))))
    }
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

/// How to unlock a [`FileStore`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Unlock {
    /// A passphrase; the key is derived with Argon2id.
    Passphrase(SecretString),
    /// A key obtained earlier from [`FileStore::key`] (e.g. cached in the kernel keyring).
    Key(FileKey),
}

/// Where the file is and how a new one is made.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FileStoreConfig {
    /// The file.
    pub path: PathBuf,
    /// Argon2id costs for a new file (existing files keep theirs).
    pub kdf: KdfParams,
}

impl FileStoreConfig {
    /// A config for `path` with default costs.
    pub fn new(path: impl Into<PathBuf>) -> FileStoreConfig {
        FileStoreConfig {
            path: path.into(),
            kdf: KdfParams::default(),
        }
    }

    /// Sets the Argon2id costs used when the file is created.
    pub fn kdf(mut self, kdf: KdfParams) -> FileStoreConfig {
        self.kdf = kdf;
        self
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct KdfHeader {
    alg: String,
    salt: String,
    #[serde(flatten)]
    params: KdfParams,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    kdf: KdfHeader,
    nonce: String,
    ciphertext: String,
}

/// The plaintext: `"<scope key>/<name>" -> value`.
#[derive(Default, Serialize, Deserialize)]
struct Plain {
    values: BTreeMap<String, String>,
}

impl Drop for Plain {
    fn drop(&mut self) {
        for v in self.values.values_mut() {
            v.zeroize();
        }
    }
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt {
        store: StoreKind::File,
        what: what.into(),
    }
}

impl KdfHeader {
    fn aad(&self) -> Vec<u8> {
        format!(
            "{FORMAT}|{}|{}|{}|{}|{}",
            self.alg, self.salt, self.params.m_kib, self.params.t, self.params.p
        )
        .into_bytes()
    }
}

/// The encrypted-file store. Every operation re-reads the file under an advisory lock, so
/// several processes can use it at once.
pub struct FileStore {
    path: PathBuf,
    kdf: KdfHeader,
    key: FileKey,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// An id for the key of the file at `path` (derived from its salt, not secret), or `None`
    /// if there is no file yet. Lets a caller look up a cached key before unlocking.
    pub fn key_id_of(path: &Path) -> Result<Option<String>> {
        let Some(raw) = atomic::read(path)? else {
            return Ok(None);
        };
        let env = parse_envelope(&raw)?;
        Ok(Some(key_id(&env.kdf)))
    }

    /// Opens (or prepares to create) the file and checks the key against it. A wrong
    /// passphrase is [`Error::StoreLocked`].
    pub fn open(config: FileStoreConfig, unlock: Unlock) -> Result<FileStore> {
        let existing = atomic::read(&config.path)?;
        let kdf = match &existing {
            Some(raw) => parse_envelope(raw)?.kdf,
            None => {
                let mut salt = [0u8; SALT_LEN];
                getrandom::fill(&mut salt).map_err(|_| Error::Random)?;
                KdfHeader {
                    alg: "argon2id".into(),
                    salt: B64.encode(salt),
                    params: config.kdf,
                }
            }
        };
        let key = match unlock {
            Unlock::Key(k) => k,
            Unlock::Passphrase(p) => {
                if p.expose_secret().is_empty() {
                    return Err(Error::StoreLocked {
                        store: StoreKind::File,
                        hint: "the passphrase is empty",
                        source: None,
                    });
                }
                let salt = B64
                    .decode(&kdf.salt)
                    .map_err(|_| corrupt("the salt is not base64"))?;
                FileKey::derive(&p, &salt, kdf.params)?
            }
        };
        let store = FileStore {
            path: config.path,
            kdf,
            key,
        };
        if let Some(raw) = existing {
            store.decrypt(&raw)?;
        }
        tracing::debug!(path = %store.path.display(), "file store unlocked");
        Ok(store)
    }

    /// The unlocked key, to cache it (see [`FileKey::to_base64`]).
    pub fn key(&self) -> FileKey {
        FileKey(SecretBox::new(Box::new(*self.key.0.expose_secret())))
    }

    /// The id of this file's key (see [`FileStore::key_id_of`]).
    pub fn key_id(&self) -> String {
        key_id(&self.kdf)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(self.key.0.expose_secret()).expect("32-byte key")
    }

    fn decrypt(&self, raw: &[u8]) -> Result<Plain> {
        let env = parse_envelope(raw)?;
        if env.kdf != self.kdf {
            return Err(corrupt("the file was replaced by one with another key"));
        }
        let nonce = B64
            .decode(&env.nonce)
            .map_err(|_| corrupt("the nonce is not base64"))?;
        let nonce = XNonce::try_from(nonce.as_slice())
            .map_err(|_| corrupt("the nonce has the wrong size"))?;
        let ct = B64
            .decode(&env.ciphertext)
            .map_err(|_| corrupt("the ciphertext is not base64"))?;
        let aad = self.kdf.aad();
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(
                    &nonce,
                    chacha20poly1305::aead::Payload {
                        msg: &ct,
                        aad: &aad,
                    },
                )
                .map_err(|_| Error::StoreLocked {
                    store: StoreKind::File,
                    hint: "wrong passphrase, or the file was modified (it cannot be decrypted)",
                    source: None,
                })?,
        );
        serde_json::from_slice(&plain).map_err(|_| corrupt("the decrypted content is malformed"))
    }

    fn load(&self) -> Result<Plain> {
        match atomic::read(&self.path)? {
            Some(raw) => self.decrypt(&raw),
            None => Ok(Plain::default()),
        }
    }

    fn save(&self, plain: &Plain) -> Result<()> {
        let json = Zeroizing::new(serde_json::to_vec(plain).expect("a string map serializes"));
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| Error::Random)?;
        let aad = self.kdf.aad();
        let ct = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                chacha20poly1305::aead::Payload {
                    msg: &json,
                    aad: &aad,
                },
            )
            .map_err(|_| corrupt("encryption failed"))?;
        let env = Envelope {
            format: FORMAT.into(),
            kdf: self.kdf.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ct),
        };
        let mut out = serde_json::to_vec_pretty(&env).expect("the envelope serializes");
        out.push(b'\n');
        atomic::write(&self.path, &out)
    }

    fn slot(scope: &Scope, name: &str) -> String {
        format!("{}/{name}", scope.key())
    }
}

fn key_id(kdf: &KdfHeader) -> String {
    kdf.salt
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect()
}

fn parse_envelope(raw: &[u8]) -> Result<Envelope> {
    let env: Envelope =
        serde_json::from_slice(raw).map_err(|_| corrupt("the file is not an sbx secrets file"))?;
    if env.format != FORMAT {
        return Err(corrupt("unsupported file format version"));
    }
    if env.kdf.alg != "argon2id" {
        return Err(corrupt("unsupported key derivation"));
    }
    Ok(env)
}

impl SecretStore for FileStore {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn describe(&self) -> String {
        format!(
            "encrypted file {} (XChaCha20-Poly1305, Argon2id passphrase key)",
            self.path.display()
        )
    }

    fn get(&self, scope: &Scope, name: &str) -> Result<Option<SecretString>> {
        let plain = self.load()?;
        Ok(plain
            .values
            .get(&Self::slot(scope, name))
            .map(|v| SecretString::from(v.clone())))
    }

    fn set(&self, scope: &Scope, name: &str, value: &SecretString) -> Result<()> {
        let _lock = atomic::lock(&self.path)?;
        let mut plain = self.load()?;
        if let Some(mut old) = plain
            .values
            .insert(Self::slot(scope, name), value.expose_secret().to_string())
        {
            old.zeroize();
        }
        self.save(&plain)
    }

    fn delete(&self, scope: &Scope, name: &str) -> Result<bool> {
        let _lock = atomic::lock(&self.path)?;
        let mut plain = self.load()?;
        match plain.values.remove(&Self::slot(scope, name)) {
            Some(mut old) => {
                old.zeroize();
                self.save(&plain)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams::new(64, 1, 1)
    }

    #[test]
    fn key_round_trips_through_base64() {
        let k = FileKey::derive(&SecretString::from("pw"), b"saltsaltsaltsalt", cheap()).unwrap();
        let b = k.to_base64();
        let k2 = FileKey::from_base64(&b).unwrap();
        assert_eq!(k.0.expose_secret(), k2.0.expose_secret());
        assert_eq!(format!("{k:?}"), "FileKey(..)");
        assert!(FileKey::from_base64(&SecretString::from("AAAA")).is_none());
    }

    #[test]
    fn tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.enc");
        let cfg = FileStoreConfig::new(&path).kdf(cheap());
        let s = FileStore::open(cfg.clone(), Unlock::Passphrase("pw".to_string().into())).unwrap();
        s.set(&Scope::Global, "x", &SecretString::from("value-123"))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // Raising the KDF cost in the header breaks the associated data.
        let tampered = text.replace("\"t\": 1", "\"t\": 2");
        assert_ne!(text, tampered);
        std::fs::write(&path, tampered).unwrap();
        let e = FileStore::open(cfg, Unlock::Passphrase("pw".to_string().into())).unwrap_err();
        assert!(matches!(e, Error::StoreLocked { .. }), "{e:?}");
    }
}
