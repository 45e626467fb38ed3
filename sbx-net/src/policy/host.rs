//! Destination hosts and their normalisation.
//!
//! Every host the proxy sees (CONNECT authority, absolute URI, SNI, `Host`, `:authority`) and
//! every host named in a rule goes through [`Host::parse`], so that two spellings of the same
//! destination compare equal: case, a trailing dot, Unicode vs punycode, and the many ways URL
//! parsers accept an IPv4 address (`0x7f000001`, `2130706433`, `0177.1`, `[::ffff:127.0.0.1]`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};

/// Longest host name accepted (RFC 1035 limit, in presentation form).
const MAX_NAME_LEN: usize = 253;
/// Longest label accepted.
const MAX_LABEL_LEN: usize = 63;

/// A normalised destination host: a lowercase ASCII (punycode) name or an IP address.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are stored as the IPv4 address they carry, so a
/// rule or a refusal written for `127.0.0.1` also covers `[::ffff:127.0.0.1]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A DNS name: lowercase, punycode, no trailing dot.
    Name(String),
    /// An IP address literal.
    Ip(IpAddr),
}

impl Host {
    /// Parses and normalises a host as it appears in a URI authority or a rule.
    ///
    /// Accepts bracketed or bare IPv6, every IPv4 spelling a WHATWG URL parser accepts (so the
    /// proxy sees the address a client library would connect to), and Unicode names (converted
    /// to punycode). Rejects userinfo, percent-encoding, zone ids, wildcards and anything that is
    /// not a valid host name.
    pub fn parse(input: &str) -> Result<Host> {
        let bad = |why| Error::InvalidHost {
            host: truncate(input),
            why,
        };
        if input.is_empty() {
            return Err(bad("empty"));
        }
        if input.contains('@') {
            return Err(bad("userinfo is not allowed"));
        }
        if input.contains('%') {
            return Err(bad("percent-encoding and zone ids are not allowed"));
        }
        if input.contains('*') {
            return Err(bad("wildcards are not allowed here"));
        }
        if let Some(inner) = input.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| bad("unterminated ipv6 literal"))?;
            let v6: Ipv6Addr = inner.parse().map_err(|_| bad("invalid ipv6 literal"))?;
            return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
        }
        if input.contains(':') {
            let v6: Ipv6Addr = input.parse().map_err(|_| bad("invalid ipv6 literal"))?;
            return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
        }
        let lower = input.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        if trimmed.is_empty() {
            return Err(bad("empty"));
        }
        if ends_in_number(trimmed) {
            let v4 = parse_whatwg_ipv4(trimmed).ok_or_else(|| bad("invalid ipv4 address"))?;
            return Ok(Host::Ip(IpAddr::V4(v4)));
        }
        let ascii =
            idna::domain_to_ascii(trimmed).map_err(|_| bad("invalid international name"))?;
        let ascii = ascii.strip_suffix('.').unwrap_or(&ascii).to_string();
        validate_name(&ascii).map_err(bad)?;
        // IDNA mapping can turn full-width digits and dots into an address-shaped name.
        if ends_in_number(&ascii) {
            let v4 = parse_whatwg_ipv4(&ascii).ok_or_else(|| bad("invalid ipv4 address"))?;
            return Ok(Host::Ip(IpAddr::V4(v4)));
        }
        Ok(Host::Name(ascii))
    }

    /// The IP address, if this host is an address literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }

    /// The name, if this host is a DNS name.
    pub fn name(&self) -> Option<&str> {
        match self {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }

    /// The host as it goes into a URI authority (IPv6 in brackets).
    pub fn to_authority_host(&self) -> String {
        match self {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl std::str::FromStr for Host {
    type Err = Error;
    fn from_str(s: &str) -> Result<Host> {
        Host::parse(s)
    }
}

/// Splits `host[:port]` / `[v6][:port]` (a URI authority without userinfo).
///
/// Returns the normalised host and the port if one was given.
pub fn parse_authority(input: &str) -> Result<(Host, Option<u16>)> {
    let bad = |why| Error::InvalidHost {
        host: truncate(input),
        why,
    };
    if input.contains('@') {
        return Err(bad("userinfo is not allowed"));
    }
    let (host, port) = if let Some(rest) = input.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| bad("unterminated ipv6 literal"))?;
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("junk after ipv6 literal"))?,
            ),
        };
        (&input[..end + 2], port)
    } else {
        match input.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (input, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).ok_or_else(|| bad("invalid port"))?),
    };
    Ok((Host::parse(host)?, port))
}

/// Parses a decimal port in 1..=65535 (no sign, no leading junk).
pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// Maps IPv4-mapped IPv6 addresses to the IPv4 address they carry.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn validate_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name too long");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("label too long");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err("invalid character in name");
        }
    }
    Ok(())
}

/// WHATWG "ends in a number": the last label is all digits or a `0x` hex number.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or("");
    if last.is_empty() {
        return false;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    matches!(hex, Some(h) if h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The WHATWG IPv4 parser: 1 to 4 parts, each decimal, `0x` hex or leading-`0` octal; the last
/// part fills the remaining bytes.
fn parse_whatwg_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for part in &parts {
        nums.push(parse_ipv4_number(part)?);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - init.len() as u32);
    if rest_bits < 64 && *last >= (1u64 << rest_bits) {
        return None;
    }
    let mut value = *last;
    for (i, n) in init.iter().enumerate() {
        value += n << (8 * (3 - i as u32));
    }
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(h) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (h, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn names_are_lowercased_and_lose_the_trailing_dot() {
        assert_eq!(
            Host::parse("Api.GitHub.COM.").unwrap(),
            Host::Name("api.github.com".into())
        );
    }

    #[test]
    fn unicode_names_become_punycode() {
        assert_eq!(
            Host::parse("bücher.example").unwrap(),
            Host::Name("xn--bcher-kva.example".into())
        );
        // Cyrillic "а" look-alike of apple.com is a different name.
        assert_ne!(
            Host::parse("аpple.com").unwrap(),
            Host::parse("apple.com").unwrap()
        );
        assert!(Host::parse("аpple.com")
            .unwrap()
            .to_string()
            .starts_with("xn--"));
    }

    #[test]
    fn obfuscated_ipv4_forms_normalise() {
        for s in [
            "127.0.0.1",
            "0x7f000001",
            "0X7F000001",
            "2130706433",
            "0177.0.0.1",
            "127.1",
            "127.0.1",
            "0x7f.1",
            "127.0.0.1.",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(Host::parse(s).unwrap(), ip("127.0.0.1"), "{s}");
        }
    }

    #[test]
    fn fullwidth_digits_become_an_address() {
        assert_eq!(Host::parse("１２７.０.０.１").unwrap(), ip("127.0.0.1"));
    }

    #[test]
    fn invalid_hosts_are_rejected() {
        for s in [
            "",
            ".",
            "user@example.com",
            "exa%6dple.com",
            "*.example.com",
            "a..b",
            "256.0.0.1",
            "1.2.3.4.5",
            "0x1g.1",
            "[::1",
            "[fe80::1%eth0]",
            "exa mple.com",
            "ex/ample.com",
        ] {
            assert!(Host::parse(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn authorities_split_host_and_port() {
        assert_eq!(
            parse_authority("Example.com:443").unwrap(),
            (Host::Name("example.com".into()), Some(443))
        );
        assert_eq!(
            parse_authority("[::1]:8080").unwrap(),
            (ip("::1"), Some(8080))
        );
        assert_eq!(parse_authority("[::1]").unwrap(), (ip("::1"), None));
        assert!(parse_authority("example.com:0").is_err());
        assert!(parse_authority("example.com:65536").is_err());
        assert!(parse_authority("example.com:+80").is_err());
        assert!(parse_authority("a@example.com:80").is_err());
    }
}
