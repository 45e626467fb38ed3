//! Host-side secrets for sbx: API tokens stay on the host, sandboxes see sentinels.
//!
//! Users store a token once (`echo "$TOKEN" | sbx secret set -g github`). A sandbox never
//! receives it: it gets a [`Sentinel`] shaped like the real token (`gho_` + 36 alphanumerics
//! for GitHub) in the environment variables the service's clients read, and the egress proxy
//! swaps the sentinel for the value only in requests to the hosts the secret is bound to.
//!
//! # Pieces
//! - [`SecretStore`]: where values live. [`KeyringStore`] (the Linux kernel keyring via
//!   keyutils, or any keyring-core store such as the desktop Secret Service or the macOS
//!   Keychain), [`FileStore`] (one encrypted file), [`MemoryStore`].
//! - [`Catalog`]: which secrets exist, their scope, hosts, env var, placeholder and the store
//!   holding the value. Never holds values.
//! - [`Secrets`]: the two together with validation, scope override (a sandbox's secret beats
//!   a global one of the same name), masked listings and [`Binding`]s (fresh sentinels).
//! - [`SERVICES`]: built-in services (`github`, `copilot`, `anthropic`, `openai`, `google`,
//!   `mistral`, `groq`, `xai`, `aws`) with their hosts, header format and token shape.
//!
//! # Seam with the proxy
//! sbx-net defines its own `CredentialProvider` (name -> `SecretString`) and does not depend on
//! this crate; [`SandboxSecrets`] has exactly that shape, so the composing binary adapts it in
//! a few lines:
//!
//! ```text
//! struct Provider(sbx_secrets::SandboxSecrets);
//! impl sbx_net::CredentialProvider for Provider {
//!     fn secret(&self, name: &str) -> Option<SecretString> { self.0.secret(name) }
//! }
//! ```
//! and turns each [`Binding`] into an `sbx_net::Credential` with `Sentinel::new(sentinel)`
//! and the binding's hosts.
//!
//! # Which store holds what
//! | store | where | lifetime | locked when |
//! |---|---|---|---|
//! | `keyring` | Linux kernel keyring: session keyring, linked into the user's persistent keyring | until reboot (or the persistent keyring's expiry, 3 days idle by default) | never for the owning user |
//! | `file` | one file, XChaCha20-Poly1305 with an Argon2id key from a passphrase | until removed | the passphrase is not given |
//! | `secret-service` / `keychain` | desktop keychain through keyring-core (caller supplies the store) | until removed | the desktop keyring is locked |
//! | `memory` | process memory | until the process exits | never |
//!
//! Stores are chosen explicitly; this crate never uses keyring-core's process-wide default
//! store (keyring 4's default registers only the D-Bus Secret Service, which fails on a
//! headless host).
//!
//! # Threat model
//! - Values are [`secrecy::SecretString`] end to end; `Debug` of every type here shows names
//!   and never values; errors never carry values (keyring-core errors that hold raw bytes are
//!   reduced to a description); logs name secrets, never values. Listings show at most the
//!   first and last 4 characters of tokens of 24+ characters ([`mask`]).
//! - The kernel keyring protects values from other users but not from processes of the same
//!   user (or root). The file store protects values at rest (backups, disk theft) behind the
//!   passphrase; while unlocked, the key is in process memory (and in the kernel keyring if
//!   the caller caches it there). The file is written atomically, mode 0600, and its header
//!   (salt, KDF cost) is authenticated.
//! - Sentinels are not secret. They are random per sandbox and per secret, so a sentinel
//!   leaked from one sandbox identifies it and is useless elsewhere; the proxy (sbx-net)
//!   blocks a sentinel going to a host it is not bound to.
//! - Out of scope: a compromised host user account; SigV4-signed AWS credentials (only
//!   Bedrock API keys, which are bearer tokens).
//!
//! # Example
//! ```
//! use secrecy::SecretString;
//! use sbx_secrets::{SandboxName, Scope, Secrets};
//!
//! let secrets = Secrets::in_memory();
//! let token = SecretString::from("ghp_0123456789abcdefghijklmnopqrstuvwxyz");
//! secrets.set_service(&Scope::Global, "github", &token, false)?;
//!
//! let sandbox = SandboxName::new("copilot-my-project")?;
//! let bindings = secrets.bindings(&sandbox)?;
//! assert!(bindings[0].sentinel.as_str().starts_with("gho_"));
//! assert_eq!(bindings[0].env, ["GH_TOKEN", "GITHUB_TOKEN"]);
//! assert!(secrets.resolve(&sandbox, "github")?.is_some());
//! # Ok::<(), sbx_secrets::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod atomic;
mod catalog;
mod error;
mod model;
mod secrets;
mod sentinel;
mod services;
mod store;
mod token;

pub use catalog::Catalog;
pub use error::{Error, Result};
pub use model::{
    normalize_host, validate_env, validate_name, SandboxName, Scope, SecretEntry, SecretKind,
};
pub use secrets::{kinds_in, Binding, CustomSecret, Listed, Masked, SandboxSecrets, Secrets};
pub use sentinel::{random_alnum, Placeholder, Sentinel, MIN_SENTINEL_LEN};
pub use services::{HeaderFormat, Service, SERVICES};
pub use store::{
    FileKey, FileStore, FileStoreConfig, KdfParams, KeyringStore, MemoryStore, SecretStore,
    StoreKind, UnknownStoreKind, Unlock,
};
pub use token::{mask, token_from_input, validate_token, MASK_MIN_LEN, MAX_TOKEN_LEN};

pub use secrecy;
