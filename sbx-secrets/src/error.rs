//! The crate's error type. No variant ever carries a secret value: store errors that could
//! (keyring-core's `BadEncoding`/`BadDataFormat` hold the raw bytes) are reduced to a
//! description before they become an [`Error`].

use crate::store::StoreKind;

/// Errors of sbx-secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is empty.
    #[error("the token is empty")]
    EmptyToken,
    /// The token has a newline or another control character.
    #[error("the token contains a newline or control character")]
    TokenControlChar,
    /// The token is not ASCII (HTTP header values cannot carry it).
    #[error("the token contains non-ASCII characters")]
    TokenNotAscii,
    /// The token starts or ends with a space.
    #[error("the token starts or ends with whitespace")]
    TokenWhitespace,
    /// The token is longer than any store accepts.
    #[error("the token is longer than {max} bytes")]
    TokenTooLong {
        /// The limit.
        max: usize,
    },
    /// `set` named a service that is not built in.
    #[error("unknown service `{name}` (built-in: {known}); use `set-custom` for other APIs")]
    UnknownService {
        /// What the user typed (truncated).
        name: String,
        /// The built-in names.
        known: String,
    },
    /// A custom secret would shadow a built-in service.
    #[error("`{0}` is a built-in service; use `set` for it or pick another name")]
    ReservedName(String),
    /// A secret name is malformed.
    #[error("invalid secret name `{name}`: {why}")]
    InvalidName {
        /// The name (truncated).
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A sandbox name is malformed.
    #[error("invalid sandbox name `{name}`: use letters, digits, `-`, `.`, `+` (at most 63)")]
    InvalidSandbox {
        /// The name (truncated).
        name: String,
    },
    /// A host binding is malformed or too broad.
    #[error("invalid host `{host}`: {why}")]
    InvalidHost {
        /// The host (truncated).
        host: String,
        /// What is wrong.
        why: &'static str,
    },
    /// An environment variable name is malformed or reserved.
    #[error("invalid environment variable `{var}`: {why}")]
    InvalidEnv {
        /// The variable (truncated).
        var: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A placeholder pattern is malformed.
    #[error("invalid placeholder `{pattern}`: {why}")]
    InvalidPlaceholder {
        /// The pattern (truncated).
        pattern: String,
        /// What is wrong.
        why: &'static str,
    },
    /// No secret of that name in that scope.
    #[error("no secret `{name}` in scope {scope}")]
    NotFound {
        /// The secret name.
        name: String,
        /// The scope, as shown to users.
        scope: String,
    },
    /// The secret exists and the caller did not ask to overwrite it.
    #[error("secret `{name}` already exists in scope {scope}")]
    Exists {
        /// The secret name.
        name: String,
        /// The scope, as shown to users.
        scope: String,
    },
    /// The store refused access (locked keychain, wrong passphrase, permission).
    #[error("the {store} store is locked or refused access: {hint}")]
    StoreLocked {
        /// Which store.
        store: StoreKind,
        /// What the user can do.
        hint: &'static str,
        /// The platform's reason, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The store cannot be reached or failed.
    #[error("the {store} store is unavailable: {hint}")]
    StoreUnavailable {
        /// Which store.
        store: StoreKind,
        /// What the user can do.
        hint: &'static str,
        /// The platform's reason, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The store holds data this crate cannot read (the data itself is never included).
    #[error("the {store} store holds unreadable data: {what}")]
    Corrupt {
        /// Which store.
        store: StoreKind,
        /// What was wrong, without the data.
        what: String,
    },
    /// A secret lives in a store this process did not open.
    #[error("secret `{name}` is held by the {store} store, which is not open (select it with SBX_SECRET_STORE={store})")]
    StoreNotOpen {
        /// The secret name.
        name: String,
        /// The store that holds it.
        store: StoreKind,
    },
    /// An I/O error on a file of the file store or the catalog.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The first 40 characters of user input, for error messages.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// User input where a name was expected, for error messages. A token pasted in the wrong
/// place (`sbx secret set -g ghp_...`) must not be echoed: inputs longer than 20 characters
/// show only their first 4, like [`mask`](crate::mask).
pub(crate) fn echo_name(s: &str) -> String {
    if s.chars().count() <= 20 {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(4).collect::<String>())
    }
}
