//! Classification of destination addresses for the SSRF guard.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::host::canonical_ip;

/// What kind of address a destination is. Only [`AddressClass::Public`] is reachable without
/// a rule that names the address or its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AddressClass {
    /// Globally routable unicast.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16` (except the metadata address), `fe80::/10`.
    LinkLocal,
    /// Cloud metadata endpoints: `169.254.169.254`, `169.254.170.2`, `fd00:ec2::254`.
    Metadata,
    /// RFC 1918 `10/8`, `172.16/12`, `192.168/16`, and IPv6 unique-local `fc00::/7`.
    Private,
    /// Carrier-grade NAT `100.64.0.0/10`.
    Cgnat,
    /// Multicast and broadcast.
    Multicast,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// IPv6 forms that embed an IPv4 address (IPv4-compatible, NAT64 `64:ff9b::/96` and
    /// `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`).
    Ipv4Embedded,
    /// Other special-purpose ranges (documentation, benchmarking, `240/4`, `198.18/15`, ...).
    Reserved,
}

impl AddressClass {
    /// True for addresses that may be reached without a rule naming them.
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }
}

/// Classifies an address; IPv4-mapped IPv6 is classified as the IPv4 address it carries.
pub fn classify(ip: IpAddr) -> AddressClass {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(169, 254, 170, 2) {
        return AddressClass::Metadata;
    }
    if o[0] == 0 {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if ip.is_link_local() {
        return AddressClass::LinkLocal;
    }
    if ip.is_private() {
        return AddressClass::Private;
    }
    if o[0] == 100 && (o[1] & 0xc0) == 64 {
        return AddressClass::Cgnat;
    }
    if ip.is_multicast() || ip.is_broadcast() {
        return AddressClass::Multicast;
    }
    let reserved = ip.is_documentation()
        || o[0] >= 240
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99);
    if reserved {
        return AddressClass::Reserved;
    }
    AddressClass::Public
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip
        == "fd00:ec2::254"
            .parse::<Ipv6Addr>()
            .unwrap_or(Ipv6Addr::UNSPECIFIED)
    {
        return AddressClass::Metadata;
    }
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if ip.is_multicast() {
        return AddressClass::Multicast;
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return AddressClass::LinkLocal;
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return AddressClass::Private;
    }
    // IPv4-compatible ::a.b.c.d (deprecated, but some stacks still route it).
    if s[..6].iter().all(|&x| x == 0) {
        return AddressClass::Ipv4Embedded;
    }
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && (s[2] == 1 || s[2..6].iter().all(|&x| x == 0));
    if nat64 || s[0] == 0x2002 || (s[0] == 0x2001 && s[1] == 0) {
        return AddressClass::Ipv4Embedded;
    }
    if s[0] == 0x2001 && s[1] == 0xdb8 {
        return AddressClass::Reserved;
    }
    // Only 2000::/3 is global unicast.
    if (s[0] & 0xe000) != 0x2000 {
        return AddressClass::Reserved;
    }
    AddressClass::Public
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifies_the_dangerous_ranges() {
        assert_eq!(c("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("127.255.1.2"), AddressClass::Loopback);
        assert_eq!(c("::1"), AddressClass::Loopback);
        assert_eq!(c("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("169.254.169.254"), AddressClass::Metadata);
        assert_eq!(c("fd00:ec2::254"), AddressClass::Metadata);
        assert_eq!(c("169.254.1.1"), AddressClass::LinkLocal);
        assert_eq!(c("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(c("10.1.2.3"), AddressClass::Private);
        assert_eq!(c("172.16.0.1"), AddressClass::Private);
        assert_eq!(c("192.168.1.1"), AddressClass::Private);
        assert_eq!(c("fd12::1"), AddressClass::Private);
        assert_eq!(c("100.64.0.1"), AddressClass::Cgnat);
        assert_eq!(c("224.0.0.1"), AddressClass::Multicast);
        assert_eq!(c("255.255.255.255"), AddressClass::Multicast);
        assert_eq!(c("ff02::1"), AddressClass::Multicast);
        assert_eq!(c("0.0.0.0"), AddressClass::Unspecified);
        assert_eq!(c("::"), AddressClass::Unspecified);
        assert_eq!(c("::127.0.0.1"), AddressClass::Ipv4Embedded);
        assert_eq!(c("64:ff9b::7f00:1"), AddressClass::Ipv4Embedded);
        assert_eq!(c("2002:7f00:1::"), AddressClass::Ipv4Embedded);
        assert_eq!(c("2001:0:4136:e378::1"), AddressClass::Ipv4Embedded);
        assert_eq!(c("192.0.2.1"), AddressClass::Reserved);
    }

    #[test]
    fn public_addresses_are_public() {
        assert_eq!(c("93.184.216.34"), AddressClass::Public);
        assert_eq!(c("100.128.0.1"), AddressClass::Public);
        assert_eq!(c("2606:4700::1111"), AddressClass::Public);
    }
}
