//! Domain patterns as kits write them: `api.example.com`, `*.example.org`, `github.com:443`,
//! `**`, `192.0.2.7:8443`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A validated, normalised domain pattern.
///
/// Matching semantics (applied by the network policy, not here): `example.com` matches only
/// that name, `*.example.com` matches subdomains at any depth but not the apex, `**` matches
/// everything, and a `:port` suffix restricts the rule to that port. Names are lowercased and a
/// trailing dot is removed; non-ASCII names must be written in their `xn--` form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainPattern {
    host: Host,
    port: Option<u16>,
}

/// What a pattern names, before the optional port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Host {
    /// `**`: every destination.
    Any,
    /// `example.com`: exactly this name.
    Exact(String),
    /// `*.example.com`: any subdomain of the name (stored without the `*.`).
    Subdomains(String),
    /// `192.0.2.7`: exactly this IPv4 address.
    Ipv4(Ipv4Addr),
}

/// Why a string is not a domain pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainError(pub(crate) &'static str);

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DomainError {}

impl DomainPattern {
    /// Parses a pattern. See the type docs for the accepted forms.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DomainError("empty domain"));
        }
        if s.contains("://") {
            return Err(DomainError(
                "a URL is not a domain; drop the scheme and write host[:port]",
            ));
        }
        if s.contains('/') {
            return Err(DomainError(
                "a path is not allowed; write host[:port] (rules apply to whole hosts)",
            ));
        }
        if s.contains('@') {
            return Err(DomainError("userinfo (`user@`) is not allowed"));
        }
        if s.starts_with('[') || s.matches(':').count() > 1 {
            return Err(DomainError(
                "IPv6 addresses are not supported in kits (sandboxes have no IPv6 egress)",
            ));
        }
        if !s.is_ascii() {
            return Err(DomainError(
                "non-ASCII name; write the punycode form (xn--...)",
            ));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (s, None),
        };
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        let host = if host == "**" {
            Host::Any
        } else if let Some(rest) = host.strip_prefix("*.") {
            if rest.contains('*') {
                return Err(DomainError(
                    "a wildcard may only be a leading `*.` (or `**` for everything)",
                ));
            }
            if rest.parse::<Ipv4Addr>().is_ok() {
                return Err(DomainError("a wildcard cannot apply to an IP address"));
            }
            check_name(rest)?;
            if !rest.contains('.') {
                return Err(DomainError(
                    "a wildcard needs a parent domain with at least two labels, e.g. `*.example.com`",
                ));
            }
            Host::Subdomains(rest.to_owned())
        } else if host.contains('*') {
            return Err(DomainError(
                "a wildcard may only be a leading `*.` (or `**` for everything)",
            ));
        } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
            Host::Ipv4(ip)
        } else {
            check_name(host)?;
            Host::Exact(host.to_owned())
        };
        Ok(DomainPattern { host, port })
    }

    /// What the pattern names.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port, when the pattern is restricted to one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether the pattern matches every destination (`**`).
    pub fn is_any(&self) -> bool {
        self.host == Host::Any
    }
}

/// A pattern hiding in a URL-ish string (`https://host/path` gives `host`), for hints.
pub(crate) fn salvage(input: &str) -> Option<DomainPattern> {
    let s = input.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split(['/', '?', '#']).next()?;
    let s = s.rsplit_once('@').map_or(s, |(_, host)| host);
    if s == input.trim() {
        return None;
    }
    DomainPattern::parse(s).ok()
}

fn parse_port(p: &str) -> Result<u16, DomainError> {
    const BAD: DomainError = DomainError("invalid port; expected a number from 1 to 65535");
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(BAD),
        Ok(n) => Ok(n),
    }
}

fn check_name(name: &str) -> Result<(), DomainError> {
    if name.is_empty() {
        return Err(DomainError("empty host name"));
    }
    if name.len() > 253 {
        return Err(DomainError("host name longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(DomainError(
                "empty label (two dots in a row, or a leading dot)",
            ));
        }
        if label.len() > 63 {
            return Err(DomainError("a label is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DomainError(
                "invalid character; host names use letters, digits, `-` and `.`",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(DomainError("a label may not start or end with `-`"));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(DomainError("not a valid IPv4 address or host name"));
    }
    Ok(())
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Any => f.write_str("**")?,
            Host::Exact(n) => f.write_str(n)?,
            Host::Subdomains(n) => write!(f, "*.{n}")?,
            Host::Ipv4(ip) => write!(f, "{ip}")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl FromStr for DomainPattern {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DomainPattern::parse(s)
    }
}

impl Serialize for DomainPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for DomainPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DomainPattern".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A host name (`api.example.com`), its subdomains (`*.example.org`), \
                everything (`**`) or an IPv4 address, optionally with `:port`.",
            "pattern": DOMAIN_REGEX,
            "examples": ["api.example.com", "*.example.org", "github.com:443"]
        })
    }
}

/// A loose editor-side check; [`DomainPattern::parse`] is the authority.
pub(crate) const DOMAIN_REGEX: &str =
    r"^(\*\*|(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?)(:[0-9]{1,5})?$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises() {
        for (input, shown) in [
            ("api.example.com", "api.example.com"),
            ("API.Example.COM.", "api.example.com"),
            ("*.example.org", "*.example.org"),
            ("github.com:443", "github.com:443"),
            ("**", "**"),
            ("**:22", "**:22"),
            ("192.0.2.7:8443", "192.0.2.7:8443"),
            ("localhost", "localhost"),
            ("_dmarc.example.com", "_dmarc.example.com"),
        ] {
            assert_eq!(
                DomainPattern::parse(input).unwrap().to_string(),
                shown,
                "{input}"
            );
        }
    }

    #[test]
    fn salvages_urls_for_hints() {
        let d = salvage("https://files.pythonhosted.org/packages").unwrap();
        assert_eq!(d.to_string(), "files.pythonhosted.org");
        assert_eq!(
            salvage("http://u:p@x.example.com:8080/")
                .unwrap()
                .to_string(),
            "x.example.com:8080"
        );
        assert_eq!(salvage("example.com"), None);
        assert_eq!(salvage("https://"), None);
    }

    #[test]
    fn rejects_with_reasons() {
        for (input, why) in [
            ("", "empty"),
            ("https://example.com", "URL"),
            ("example.com/path", "path"),
            ("example.com:0", "port"),
            ("example.com:99999", "port"),
            ("example.com:http", "port"),
            ("foo.*.com", "leading"),
            ("*example.com", "leading"),
            ("*", "leading"),
            ("*.com", "two labels"),
            ("a..b", "empty label"),
            ("-a.com", "start or end"),
            ("a b.com", "invalid character"),
            ("bücher.de", "punycode"),
            ("[::1]:443", "IPv6"),
            ("1.2.3.999", "IPv4"),
            ("*.10.0.0.1", "IP address"),
            ("user@example.com", "userinfo"),
        ] {
            let err = DomainPattern::parse(input).unwrap_err();
            assert!(err.0.contains(why), "{input}: {err}");
        }
    }
}
