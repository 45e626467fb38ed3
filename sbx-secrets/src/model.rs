//! Scopes, names and the (non-secret) description of each stored secret.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::{clip, echo_name, Error, Result};
use crate::sentinel::Placeholder;
use crate::services::Service;
use crate::store::StoreKind;

/// Where a secret applies: every sandbox, or one. A sandbox secret overrides a global one of
/// the same name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// All sandboxes (`-g`).
    Global,
    /// One sandbox, by name.
    Sandbox(SandboxName),
}

impl Scope {
    /// A sandbox scope from a user-supplied name.
    pub fn sandbox(name: &str) -> Result<Scope> {
        Ok(Scope::Sandbox(SandboxName::new(name)?))
    }

    /// The key stores use for the scope: `g` or `s:<name>`. Sandbox names cannot contain `:`
    /// or `/`, so keys of different scopes never collide.
    pub(crate) fn key(&self) -> String {
        match self {
            Scope::Global => "g".into(),
            Scope::Sandbox(n) => format!("s:{}", n.as_str()),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Sandbox(n) => f.write_str(n.as_str()),
        }
    }
}

/// A sandbox name: letters, digits, `-`, `.`, `+`; 1 to 63 characters, starting with a letter
/// or digit. Whether the sandbox exists is the caller's business.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxName(String);

impl SandboxName {
    /// Validates a sandbox name.
    pub fn new(name: &str) -> Result<SandboxName> {
        let ok = (1..=63).contains(&name.len())
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b));
        if !ok {
            return Err(Error::InvalidSandbox {
                name: echo_name(name),
            });
        }
        Ok(SandboxName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SandboxName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        SandboxName::new(&s)
    }
}

impl From<SandboxName> for String {
    fn from(n: SandboxName) -> String {
        n.0
    }
}

/// Validates a secret name: lowercase letters, digits, `-`, `_`, `.`; 1 to 64 characters,
/// starting with a letter. These are also valid credential names for sbx-net.
pub fn validate_name(name: &str) -> Result<()> {
    let why = if name.is_empty() || name.len() > 64 {
        Some("use 1 to 64 characters")
    } else if !name.as_bytes()[0].is_ascii_lowercase() {
        Some("start with a lowercase letter")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        Some("use lowercase letters, digits, `-`, `_`, `.`")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::InvalidName {
            name: echo_name(name),
            why,
        }),
        None => Ok(()),
    }
}

/// Variables sbx itself sets in a sandbox, or that would break it if replaced by a
/// placeholder.
const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "SHELL",
    "TERM",
    "PWD",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
];

/// Validates the name of an environment variable a sandbox sees: `[A-Za-z_][A-Za-z0-9_]*`, at
/// most 128 characters, not one sbx sets itself (`PATH`, proxies, CA bundles, `LD_*`).
pub fn validate_env(var: &str) -> Result<()> {
    let err = |why| {
        Err(Error::InvalidEnv {
            var: echo_name(var),
            why,
        })
    };
    let first_ok = var
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || var.len() > 128 || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return err("use letters, digits and `_`, not starting with a digit");
    }
    let upper = var.to_ascii_uppercase();
    if RESERVED_ENV.contains(&upper.as_str()) || upper.starts_with("LD_") {
        return err("sbx sets this variable itself");
    }
    Ok(())
}

/// Normalizes and validates a host a custom secret is bound to: a DNS name, `*.name` (strict
/// subdomains, at least two labels after the star), an IPv4 address or a bracketed IPv6 address,
/// each with an optional `:port`. Refuses `*`, `**`, ranges, schemes and paths: a secret bound to
/// everything could be sent anywhere. Returns the lowercase form.
pub fn normalize_host(host: &str) -> Result<String> {
    let err = |why| {
        Err(Error::InvalidHost {
            host: clip(host),
            why,
        })
    };
    let h = host.trim().to_ascii_lowercase();
    if h.is_empty() {
        return err("empty");
    }
    if h == "*" || h == "**" || h.contains("/") || h.contains("://") {
        return err("bind to host names or single addresses, not wildcards, ranges, URLs");
    }
    // Split off a port; IPv6 literals carry brackets.
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return err("unclosed `[`");
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return err("not an IPv6 address");
        }
        match after {
            "" => (format!("[{addr}]"), None),
            p => match p.strip_prefix(':') {
                Some(p) => (format!("[{addr}]"), Some(p.to_string())),
                None => return err("junk after `]`"),
            },
        }
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n.to_string(), Some(p.to_string())),
            Some(_) => return err("put IPv6 addresses in brackets"),
            None => (h.clone(), None),
        }
    };
    if let Some(p) = &port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return err("port must be 1 to 65535"),
        }
    }
    if !name.starts_with('[') && name.parse::<IpAddr>().is_err() {
        let (wild, dns) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name.as_str()),
        };
        if dns.len() > 253 || dns.contains('*') {
            return err("`*` only as a whole first label (`*.example.com`)");
        }
        let labels: Vec<&str> = dns.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !labels.iter().all(label_ok) {
            return err("not a valid host name");
        }
        if wild && labels.len() < 2 {
            return err("`*.` needs at least two labels after it (e.g. `*.example.com`)");
        }
    }
    Ok(match port {
        Some(p) => format!("{name}:{p}"),
        None => name,
    })
}

/// What a stored secret is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SecretKind {
    /// A built-in service (its hosts, header and placeholder come from [`Service`]).
    Service,
    /// A custom secret bound to hosts the user named.
    Custom {
        /// Hosts it may be sent to (normalized, see [`normalize_host`]).
        hosts: Vec<String>,
        /// The environment variable that carries the placeholder in the sandbox.
        env: String,
        /// The placeholder pattern.
        placeholder: Placeholder,
    },
}

/// The public description of one stored secret. Never holds the value; safe to print.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SecretEntry {
    /// Where it applies.
    pub scope: Scope,
    /// The service or custom name (e.g. `github`).
    pub name: String,
    /// What it is for.
    pub kind: SecretKind,
    /// The store that holds the value.
    pub store: StoreKind,
    /// Seconds since the Unix epoch of the last `set`.
    pub updated: u64,
}

impl SecretEntry {
    /// The hosts the secret may be sent to.
    pub fn hosts(&self) -> Vec<String> {
        match &self.kind {
            SecretKind::Service => Service::get(&self.name)
                .map(|s| s.hosts.iter().map(|h| h.to_string()).collect())
                .unwrap_or_default(),
            SecretKind::Custom { hosts, .. } => hosts.clone(),
        }
    }

    /// The environment variables that carry the placeholder in a sandbox.
    pub fn env(&self) -> Vec<String> {
        match &self.kind {
            SecretKind::Service => Service::get(&self.name)
                .map(|s| s.env.iter().map(|h| h.to_string()).collect())
                .unwrap_or_default(),
            SecretKind::Custom { env, .. } => vec![env.clone()],
        }
    }

    /// The placeholder pattern sentinels are made from.
    pub fn placeholder(&self) -> Placeholder {
        match &self.kind {
            SecretKind::Service => Service::get(&self.name)
                .map(|s| s.placeholder())
                .unwrap_or_default(),
            SecretKind::Custom { placeholder, .. } => placeholder.clone(),
        }
    }

    /// `service` or `custom`, for listings.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            SecretKind::Service => "service",
            SecretKind::Custom { .. } => "custom",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names() {
        for ok in ["a", "copilot-my-project", "x.y+z", "A1"] {
            assert!(SandboxName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a:b", "a b", &"a".repeat(64), "é"] {
            assert!(SandboxName::new(bad).is_err(), "{bad}");
        }
        let s = Scope::sandbox("global").unwrap();
        assert_ne!(s.key(), Scope::Global.key());
    }

    #[test]
    fn names_and_env() {
        assert!(validate_name("my-api_1.x").is_ok());
        for bad in ["", "1a", "A", "a b", "a/b", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_env("MY_KEY").is_ok());
        assert!(validate_env("_x1").is_ok());
        for bad in ["", "1A", "A-B", "PATH", "ld_preload", "HTTPS_PROXY", "A=B"] {
            assert!(validate_env(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("API.Example.com").unwrap(),
            "api.example.com"
        );
        assert_eq!(
            normalize_host("*.example.com:8443").unwrap(),
            "*.example.com:8443"
        );
        assert_eq!(normalize_host("10.1.2.3:443").unwrap(), "10.1.2.3:443");
        assert_eq!(normalize_host("[::1]:8080").unwrap(), "[::1]:8080");
        assert_eq!(normalize_host("localhost").unwrap(), "localhost");
        for bad in [
            "",
            "*",
            "**",
            "*.com",
            "a.*.com",
            "https://x.com",
            "x.com/path",
            "10.0.0.0/8",
            "x.com:0",
            "x.com:99999",
            "::1",
            "-a.com",
            "a..com",
            "[zz]",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad}");
        }
    }
}
