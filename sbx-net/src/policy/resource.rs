//! Rule resources: what a rule allows or denies.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::host::{canonical_ip, parse_port, Host};
use crate::error::{Error, Result};

/// What a resource names, before the optional port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Pattern {
    /// `**`: every destination.
    Any,
    /// `example.com`: exactly this name, no subdomains.
    Exact(String),
    /// `*.example.com`: any subdomain (at any depth) of the name, not the name itself.
    Subdomains(String),
    /// `192.0.2.1`, `::1`: exactly this address.
    Ip(IpAddr),
    /// `10.0.0.0/8`: any address in the range.
    Net(IpNet),
}

/// A rule resource: `example.com`, `*.example.com`, `**`, `host:port`, `IP`, `IP:port`, CIDR.
///
/// Resources are parsed and normalised when a rule is added (case, trailing dot, IDNA to
/// punycode, IPv4 spellings), so malformed input fails early with a clear error instead of
/// silently never matching.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    pattern: Pattern,
    port: Option<u16>,
}

impl Resource {
    /// Parses a resource. See the type docs for the accepted forms.
    pub fn parse(input: &str) -> Result<Resource> {
        let bad = |why| Error::InvalidResource {
            resource: input.chars().take(120).collect(),
            why,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.contains("://") {
            return Err(bad("a scheme is not allowed; give host[:port]"));
        }
        if s.contains('@') {
            return Err(bad("userinfo is not allowed"));
        }
        if s.contains('%') {
            return Err(bad("percent-encoding and zone ids are not allowed"));
        }
        if s.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"?#\\,;\"'<>".contains(&b))
        {
            return Err(bad("invalid character"));
        }
        let (host, port) = split_port(s).map_err(bad)?;
        let port = match port {
            None => None,
            Some(p) => Some(parse_port(p).ok_or_else(|| bad("invalid port (1-65535)"))?),
        };
        let pattern = if host == "**" {
            Pattern::Any
        } else if host.contains('/') {
            let net: IpNet = host.parse().map_err(|_| bad("invalid cidr range"))?;
            let net = match net {
                IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                    Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96)
                        .map_err(|_| bad("invalid cidr range"))?,
                    None => net,
                },
                other => other,
            };
            Pattern::Net(net.trunc())
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(bad("a wildcard may only be a leading `*.`"));
            }
            match Host::parse(suffix).map_err(|_| bad("invalid host name after `*.`"))? {
                Host::Name(n) => Pattern::Subdomains(n),
                Host::Ip(_) => return Err(bad("a wildcard cannot apply to an ip address")),
            }
        } else if host.contains('*') {
            return Err(bad(
                "a wildcard may only be a leading `*.` (or `**` for everything)",
            ));
        } else {
            match Host::parse(host).map_err(|_| bad("invalid host name or address"))? {
                Host::Name(n) => Pattern::Exact(n),
                Host::Ip(ip) => Pattern::Ip(ip),
            }
        };
        Ok(Resource { pattern, port })
    }

    /// A resource matching everything (`**`).
    pub fn any() -> Resource {
        Resource {
            pattern: Pattern::Any,
            port: None,
        }
    }

    /// What the resource names.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// The port, if the resource is restricted to one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether a destination (as requested: name or IP literal) matches this resource.
    pub fn matches(&self, host: &Host, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        self.matches_host(host)
    }

    /// Whether the host part of this resource matches `host`, whatever the port.
    pub fn matches_host(&self, host: &Host) -> bool {
        match (&self.pattern, host) {
            (Pattern::Any, _) => true,
            (Pattern::Exact(n), Host::Name(h)) => n == h,
            (Pattern::Subdomains(n), Host::Name(h)) => {
                h.len() > n.len() + 1 && h.ends_with(n.as_str()) && {
                    let cut = h.len() - n.len();
                    h.as_bytes()[cut - 1] == b'.'
                }
            }
            (Pattern::Ip(a), Host::Ip(ip)) => *a == canonical_ip(*ip),
            (Pattern::Net(net), Host::Ip(ip)) => net.contains(&canonical_ip(*ip)),
            _ => false,
        }
    }

    /// Whether this resource explicitly names an address (an `IP` or CIDR resource that
    /// contains it). `**` and host names never name an address: reaching a private or loopback
    /// address takes a rule written for it.
    pub fn names_address(&self, ip: IpAddr, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let ip = canonical_ip(ip);
        match &self.pattern {
            Pattern::Ip(a) => *a == ip,
            Pattern::Net(net) => net.contains(&ip),
            _ => false,
        }
    }
}

fn split_port(s: &str) -> std::result::Result<(&str, Option<&str>), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unterminated ipv6 literal")?;
        let host = &rest[..end];
        match &rest[end + 1..] {
            "" => Ok((host, None)),
            after => Ok((
                host,
                Some(after.strip_prefix(':').ok_or("junk after ipv6 literal")?),
            )),
        }
    } else if s.matches(':').count() > 1 {
        Ok((s, None))
    } else {
        match s.split_once(':') {
            Some((h, p)) => Ok((h, Some(p))),
            None => Ok((s, None)),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = matches!(self.pattern, Pattern::Ip(IpAddr::V6(_)));
        match (&self.pattern, self.port) {
            (Pattern::Ip(ip), Some(_)) if v6 => write!(f, "[{ip}]")?,
            (Pattern::Any, _) => f.write_str("**")?,
            (Pattern::Exact(n), _) => f.write_str(n)?,
            (Pattern::Subdomains(n), _) => write!(f, "*.{n}")?,
            (Pattern::Ip(ip), _) => write!(f, "{ip}")?,
            (Pattern::Net(net), _) => write!(f, "{net}")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl FromStr for Resource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Resource> {
        Resource::parse(s)
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Resource::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Resource {
        Resource::parse(s).unwrap()
    }
    fn h(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    #[test]
    fn exact_names_do_not_match_subdomains() {
        let res = r("example.com");
        assert!(res.matches(&h("example.com"), 443));
        assert!(res.matches(&h("EXAMPLE.com."), 80));
        assert!(!res.matches(&h("api.example.com"), 443));
        assert!(!res.matches(&h("badexample.com"), 443));
    }

    #[test]
    fn wildcards_match_subdomains_not_the_apex() {
        let res = r("*.example.com");
        assert!(res.matches(&h("api.example.com"), 443));
        assert!(res.matches(&h("a.b.example.com"), 443));
        assert!(!res.matches(&h("example.com"), 443));
        assert!(!res.matches(&h("badexample.com"), 443));
        assert!(!res.matches(&h("example.com.evil.net"), 443));
    }

    #[test]
    fn ports_restrict_matches() {
        let res = r("example.com:443");
        assert!(res.matches(&h("example.com"), 443));
        assert!(!res.matches(&h("example.com"), 8443));
        assert!(r("**:22").matches(&h("x.y"), 22));
        assert!(!r("**:22").matches(&h("x.y"), 23));
    }

    #[test]
    fn ip_and_cidr_resources() {
        assert!(r("10.0.0.0/8").matches(&h("10.2.3.4"), 1));
        assert!(!r("10.0.0.0/8").matches(&h("11.0.0.1"), 1));
        assert!(r("127.0.0.1:8080").names_address("127.0.0.1".parse().unwrap(), 8080));
        assert!(!r("127.0.0.1:8080").names_address("127.0.0.1".parse().unwrap(), 8081));
        assert!(r("0x7f000001").names_address("::ffff:127.0.0.1".parse().unwrap(), 1));
        assert!(r("[::1]:443").matches(&h("[::1]"), 443));
        assert!(r("::1").matches(&h("[::1]"), 443));
        assert!(!r("**").names_address("127.0.0.1".parse().unwrap(), 1));
        assert!(!r("example.com").matches(&h("10.0.0.1"), 1));
        assert_eq!(r("10.1.2.3/8").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn normalisation_in_rules() {
        assert_eq!(r("Example.COM.").to_string(), "example.com");
        assert_eq!(r("*.Bücher.example").to_string(), "*.xn--bcher-kva.example");
        assert_eq!(r("2130706433:80").to_string(), "127.0.0.1:80");
        assert_eq!(r("[::ffff:127.0.0.1]").to_string(), "127.0.0.1");
        assert_eq!(r("[::1]:443").to_string(), "[::1]:443");
    }

    #[test]
    fn malformed_resources_are_rejected_when_added() {
        for s in [
            "",
            "*",
            "ex*ample.com",
            "*.*.example.com",
            "api.*.example.com",
            "example.*",
            "*example.com",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:http",
            "example.com:-1",
            "user@example.com",
            "user:pass@example.com",
            "exa%6dple.com",
            "https://example.com",
            "example.com/path",
            "10.0.0.0/33",
            "*.10.0.0.1",
            "a b.com",
            "[::1",
            "[::1]x",
            "example.com:80:80",
        ] {
            let err = Resource::parse(s).expect_err(s);
            assert!(
                err.to_string().starts_with("invalid resource"),
                "{s}: {err}"
            );
        }
    }

    #[test]
    fn serde_round_trips_and_rejects_bad_input() {
        let res = r("*.example.com:443");
        let json = serde_json::to_string(&res).unwrap();
        assert_eq!(json, "\"*.example.com:443\"");
        assert_eq!(serde_json::from_str::<Resource>(&json).unwrap(), res);
        assert!(serde_json::from_str::<Resource>("\"a.*.b\"").is_err());
    }
}
