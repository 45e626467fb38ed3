//! Credentials: sentinels the sandbox sees, secrets only the proxy sees.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, PROXY_AUTHORIZATION};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};
use crate::policy::{Host, Pattern, Resource};

/// Where the proxy gets real secret values. sbx-cli adapts its keychain store to this; tests
/// and the example use [`StaticCredentials`].
///
/// The proxy calls it once per injected request, on the `forward` path only, for a request to
/// a host the credential is bound to that carries the credential's sentinel.
pub trait CredentialProvider: Send + Sync + 'static {
    /// The secret for a credential name, or `None` if the store has none.
    fn secret(&self, name: &str) -> Option<SecretString>;
}

/// An in-memory [`CredentialProvider`]. `Debug` shows names only.
#[derive(Default, Clone)]
pub struct StaticCredentials {
    values: HashMap<String, SecretString>,
}

impl StaticCredentials {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a secret.
    pub fn insert(&mut self, name: impl Into<String>, secret: SecretString) {
        self.values.insert(name.into(), secret);
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CredentialProvider for StaticCredentials {
    fn secret(&self, name: &str) -> Option<SecretString> {
        self.values.get(name).cloned()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const MIN_SENTINEL_LEN: usize = 16;

fn random_alnum(n: usize) -> String {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        if rng.fill(&mut buf).is_err() {
            continue;
        }
        for &b in &buf {
            // 248 = 4 * 62: rejection sampling keeps the distribution uniform.
            if b < 248 && out.len() < n {
                out.push(ALNUM[(b % 62) as usize] as char);
            }
        }
    }
    out
}

/// The placeholder a sandbox sees instead of a secret. Not secret itself: it is printed,
/// logged and written into sandbox environments.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sentinel(String);

impl Sentinel {
    /// A sentinel shaped like a GitHub OAuth token: `gho_` + 36 alphanumerics.
    pub fn github() -> Sentinel {
        Sentinel(format!("gho_{}", random_alnum(36)))
    }

    /// A sentinel from a template where `{rand}` becomes 32 random alphanumerics
    /// (e.g. `sk-{rand}`).
    pub fn from_template(template: &str) -> Result<Sentinel> {
        if !template.contains("{rand}") {
            return Err(Error::InvalidCredential {
                name: template.chars().take(40).collect(),
                why: "sentinel template needs {rand}",
            });
        }
        Sentinel::new(template.replace("{rand}", &random_alnum(32)))
    }

    /// A sentinel with the same shape as a real secret: the secret's type prefix (up to the
    /// last `_` or `-` in its first 16 characters, e.g. `gho_`, `sk-ant-api03-`) followed by
    /// random alphanumerics up to the secret's length (at least 32). Only the prefix and the
    /// length of the secret are carried over.
    pub fn format_preserving(secret: &SecretString) -> Sentinel {
        let value = secret.expose_secret();
        let head: String = value.chars().take(16).collect();
        let prefix = match head.rfind(['_', '-']) {
            Some(i)
                if head[..=i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                head[..=i].to_string()
            }
            _ => String::new(),
        };
        let body = value
            .chars()
            .count()
            .saturating_sub(prefix.chars().count())
            .max(32);
        Sentinel(format!("{prefix}{}", random_alnum(body)))
    }

    /// A sentinel with a fixed value (e.g. one persisted for a sandbox). At least 16 printable
    /// ASCII characters, no whitespace.
    pub fn new(value: impl Into<String>) -> Result<Sentinel> {
        let value = value.into();
        if value.len() < MIN_SENTINEL_LEN || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidCredential {
                name: String::new(),
                why: "a sentinel needs at least 16 printable ascii characters",
            });
        }
        Ok(Sentinel(value))
    }

    /// The sentinel text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sentinel({})", self.0)
    }
}

/// A credential binding: a name (looked up in the [`CredentialProvider`]), its sentinel, and
/// the hosts it may be sent to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Credential {
    /// Name in the provider (e.g. `github`).
    pub name: String,
    /// What the sandbox sees.
    pub sentinel: Sentinel,
    /// Hosts the secret may go to: exact names, `*.name` or IPs (ports optional).
    pub hosts: Vec<Resource>,
}

impl Credential {
    /// A credential bound to `hosts` (each parsed like a rule resource; `**` is refused: a
    /// secret bound to everything could be sent anywhere).
    pub fn new(name: impl Into<String>, sentinel: Sentinel, hosts: &[&str]) -> Result<Credential> {
        let name = name.into();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(Error::InvalidCredential {
                name: name.chars().take(40).collect(),
                why: "names are letters, digits, `-`, `_`, `.`",
            });
        }
        if hosts.is_empty() {
            return Err(Error::InvalidCredential {
                name,
                why: "bind it to at least one host",
            });
        }
        let mut parsed = Vec::new();
        for h in hosts {
            let r = Resource::parse(h)?;
            if matches!(r.pattern(), Pattern::Any | Pattern::Net(_)) {
                return Err(Error::InvalidCredential {
                    name,
                    why: "bind to host names or single addresses, not `**` or ranges",
                });
            }
            parsed.push(r);
        }
        Ok(Credential {
            name,
            sentinel,
            hosts: parsed,
        })
    }

    /// Whether the credential may be sent to `host:port`.
    pub fn is_bound_to(&self, host: &Host, port: u16) -> bool {
        self.hosts.iter().any(|r| r.matches(host, port))
    }
}

/// The credentials a proxy injects and the provider of their values.
#[derive(Clone)]
pub(crate) struct Credentials {
    list: Arc<Vec<Credential>>,
    provider: Option<Arc<dyn CredentialProvider>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|c| &c.name))
            .finish()
    }
}

/// What a scan of a request found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// No sentinel anywhere.
    Clean,
    /// Sentinels of these credentials (indices), all bound to the destination.
    Bound(Vec<usize>),
    /// A sentinel of this credential goes to a host it is not bound to.
    Exfiltration(String),
}

/// Outcome of injecting into headers.
#[derive(Debug)]
#[allow(dead_code)] // Used by the proxy module.
pub(crate) enum Injected {
    /// Names of the credentials injected (may be empty when sentinels were only in the URI).
    Names(Vec<String>),
    /// The provider had no value for this credential.
    Unavailable(String),
}

impl Credentials {
    pub(crate) fn new(
        list: Vec<Credential>,
        provider: Option<Arc<dyn CredentialProvider>>,
    ) -> Self {
        Credentials {
            list: Arc::new(list),
            provider,
        }
    }

    /// Looks for every credential's sentinel in the headers (also inside Basic credentials)
    /// and the request target.
    pub(crate) fn scan(&self, target: &str, headers: &HeaderMap, host: &Host, port: u16) -> Scan {
        let mut found = Vec::new();
        for (i, cred) in self.list.iter().enumerate() {
            let s = cred.sentinel.as_str();
            let present = target.contains(s)
                || headers.iter().any(|(name, v)| {
                    let raw = v.as_bytes();
                    contains(raw, s.as_bytes())
                        || (is_auth_header(name) && basic_contains(raw, s.as_bytes()))
                });
            if present {
                if !cred.is_bound_to(host, port) {
                    return Scan::Exfiltration(cred.name.clone());
                }
                found.push(i);
            }
        }
        if found.is_empty() {
            Scan::Clean
        } else {
            Scan::Bound(found)
        }
    }

    /// Replaces the sentinels of `found` credentials in header values with their secrets and
    /// marks the touched values sensitive. Only called on the `forward` (TLS) path.
    pub(crate) fn inject(&self, found: &[usize], headers: &mut HeaderMap) -> Injected {
        let mut names = Vec::new();
        for &i in found {
            let cred = &self.list[i];
            let Some(secret) = self.provider.as_ref().and_then(|p| p.secret(&cred.name)) else {
                return Injected::Unavailable(cred.name.clone());
            };
            let sentinel = cred.sentinel.as_str();
            let mut touched = false;
            for (name, value) in headers.iter_mut() {
                let auth = is_auth_header(name);
                if let Some(new) = replace_in_value(value, sentinel, secret.expose_secret(), auth) {
                    *value = new;
                    touched = true;
                }
            }
            if touched {
                names.push(cred.name.clone());
            }
        }
        Injected::Names(names)
    }

    /// Replaces secrets that an upstream echoed in response headers with their sentinels, so
    /// a reflecting server cannot hand the secret to the sandbox.
    pub(crate) fn scrub_response(&self, names: &[String], headers: &mut HeaderMap) {
        for cred in self.list.iter().filter(|c| names.contains(&c.name)) {
            let Some(secret) = self.provider.as_ref().and_then(|p| p.secret(&cred.name)) else {
                continue;
            };
            for (name, value) in headers.iter_mut() {
                let auth = is_auth_header(name);
                if let Some(new) =
                    replace_in_value(value, secret.expose_secret(), cred.sentinel.as_str(), auth)
                {
                    *value = new;
                }
            }
        }
    }
}

fn is_auth_header(name: &http::HeaderName) -> bool {
    name == AUTHORIZATION || name == PROXY_AUTHORIZATION
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn basic_payload(raw: &[u8]) -> Option<&[u8]> {
    let s = std::str::from_utf8(raw).ok()?;
    let (scheme, rest) = s.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then(|| rest.trim().as_bytes())
}

fn basic_contains(raw: &[u8], needle: &[u8]) -> bool {
    let Some(payload) = basic_payload(raw) else {
        return false;
    };
    let Ok(mut decoded) = B64.decode(payload) else {
        return false;
    };
    let found = contains(&decoded, needle);
    decoded.zeroize();
    found
}

/// Returns a new value with `from` replaced by `to`, or `None` if `from` is absent. Inside
/// `Authorization: Basic`, the decoded `user:password` is searched too. Intermediate copies
/// are zeroized.
fn replace_in_value(value: &HeaderValue, from: &str, to: &str, auth: bool) -> Option<HeaderValue> {
    let raw = value.as_bytes();
    if contains(raw, from.as_bytes()) {
        let mut text = String::from_utf8(raw.to_vec()).ok()?;
        let mut replaced = text.replace(from, to);
        text.zeroize();
        let out = HeaderValue::from_str(&replaced).ok();
        replaced.zeroize();
        return out.map(sensitive);
    }
    if !auth {
        return None;
    }
    let payload = basic_payload(raw)?;
    let mut decoded = String::from_utf8(B64.decode(payload).ok()?).ok()?;
    if !decoded.contains(from) {
        decoded.zeroize();
        return None;
    }
    let mut replaced = decoded.replace(from, to);
    decoded.zeroize();
    let mut encoded = format!("Basic {}", B64.encode(replaced.as_bytes()));
    replaced.zeroize();
    let out = HeaderValue::from_str(&encoded).ok();
    encoded.zeroize();
    out.map(sensitive)
}

fn sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ghp_realsecretvalue0123456789abcdefghij";

    fn creds() -> (Credentials, Sentinel) {
        let sentinel = Sentinel::github();
        let cred = Credential::new(
            "github",
            sentinel.clone(),
            &["api.github.com", "*.github.com"],
        )
        .unwrap();
        let mut store = StaticCredentials::new();
        store.insert("github", SecretString::from(SECRET));
        (
            Credentials::new(vec![cred], Some(Arc::new(store))),
            sentinel,
        )
    }

    fn h(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    #[test]
    fn github_sentinels_look_like_tokens() {
        let s = Sentinel::github();
        assert!(s.as_str().starts_with("gho_"));
        assert_eq!(s.as_str().len(), 40);
        assert!(s.as_str()[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(Sentinel::github(), s);
    }

    #[test]
    fn format_preserving_keeps_prefix_and_length_only() {
        let secret = SecretString::from("sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCD");
        let s = Sentinel::format_preserving(&secret);
        assert!(s.as_str().starts_with("sk-ant-api03-"));
        assert_eq!(s.as_str().len(), secret.expose_secret().len());
        assert!(!s.as_str().contains("abcdefghij"));
        let t = Sentinel::from_template("sk-{rand}").unwrap();
        assert!(t.as_str().starts_with("sk-") && t.as_str().len() == 35);
        assert!(Sentinel::new("short").is_err());
    }

    #[test]
    fn binding_rejects_everything_wildcards() {
        assert!(Credential::new("x", Sentinel::github(), &["**"]).is_err());
        assert!(Credential::new("x", Sentinel::github(), &["10.0.0.0/8"]).is_err());
        assert!(Credential::new("x", Sentinel::github(), &[]).is_err());
        assert!(Credential::new("bad name", Sentinel::github(), &["a.com"]).is_err());
    }

    #[test]
    fn scan_and_inject_bearer_and_basic() {
        let (c, s) = creds();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {s}").parse().unwrap());
        let basic = B64.encode(format!("x-access-token:{s}"));
        headers.insert("x-basic", "none".parse().unwrap());
        headers.append(
            PROXY_AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        let found = match c.scan("/user", &headers, &h("api.github.com"), 443) {
            Scan::Bound(f) => f,
            other => panic!("{other:?}"),
        };
        let Injected::Names(names) = c.inject(&found, &mut headers) else {
            panic!()
        };
        assert_eq!(names, vec!["github".to_string()]);
        let auth = headers.get(AUTHORIZATION).unwrap();
        assert_eq!(auth.to_str().unwrap(), format!("Bearer {SECRET}"));
        assert!(auth.is_sensitive());
        let pa = headers.get(PROXY_AUTHORIZATION).unwrap().to_str().unwrap();
        let decoded = B64.decode(pa.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(decoded, format!("x-access-token:{SECRET}").as_bytes());
    }

    #[test]
    fn sentinel_to_unbound_host_is_exfiltration() {
        let (c, s) = creds();
        let mut headers = HeaderMap::new();
        headers.insert("x-token", s.as_str().parse().unwrap());
        assert_eq!(
            c.scan("/", &headers, &h("evil.example"), 443),
            Scan::Exfiltration("github".into())
        );
        assert_eq!(
            c.scan(
                &format!("/?t={s}"),
                &HeaderMap::new(),
                &h("github.com.evil.example"),
                443
            ),
            Scan::Exfiltration("github".into())
        );
        let basic = B64.encode(format!("u:{s}"));
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("basic {basic}").parse().unwrap());
        assert!(matches!(
            c.scan("/", &headers, &h("evil.example"), 443),
            Scan::Exfiltration(_)
        ));
    }

    #[test]
    fn real_tokens_are_left_alone() {
        let (c, _) = creds();
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            "Bearer gho_clientsownrealtoken000000000000000000"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            c.scan("/", &headers, &h("api.github.com"), 443),
            Scan::Clean
        );
    }

    #[test]
    fn response_scrub_puts_the_sentinel_back() {
        let (c, s) = creds();
        let mut headers = HeaderMap::new();
        headers.insert("x-echo", format!("token {SECRET}").parse().unwrap());
        c.scrub_response(&["github".into()], &mut headers);
        assert_eq!(
            headers.get("x-echo").unwrap().to_str().unwrap(),
            format!("token {s}")
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let (c, _) = creds();
        let mut store = StaticCredentials::new();
        store.insert("github", SecretString::from(SECRET));
        assert!(!format!("{c:?} {store:?}").contains(SECRET));
    }
}
