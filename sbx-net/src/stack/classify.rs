//! First look at every guest frame, before smoltcp sees it: what goes to the stack, what
//! opens a flow, what is dropped and logged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use super::config::StackConfig;
use super::handler::{DropReason, Dropped, DroppedProtocol};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Hand to smoltcp as is (ARP for the gateway, TCP segments, DNS to the gateway).
    Stack,
    /// A TCP SYN opening a connection: make sure a socket listens, then hand to smoltcp.
    Syn {
        /// The guest's end.
        src: SocketAddrV4,
        /// Where the guest connects to.
        dst: SocketAddrV4,
    },
    /// Dropped without a record (malformed, not addressed to us, link-local chatter).
    Drop,
    /// Dropped and recorded as a blocked network attempt.
    Block(Dropped),
}

/// Classifies one Ethernet frame from the guest. Never panics on any input.
pub(crate) fn classify(frame: &[u8], cfg: &StackConfig) -> Action {
    let Some(header) = frame.get(..14) else {
        return Action::Drop;
    };
    let dst_mac = &header[0..6];
    let to_us = dst_mac == cfg.gateway_mac;
    let group = dst_mac[0] & 1 == 1; // broadcast or multicast
    if !to_us && !group {
        return Action::Drop;
    }
    let ethertype = u16::from_be_bytes([header[12], header[13]]);
    let payload = &frame[14..];
    match ethertype {
        ETHERTYPE_ARP => classify_arp(payload, cfg),
        ETHERTYPE_IPV4 => classify_ipv4(payload, cfg, group),
        ETHERTYPE_IPV6 => classify_ipv6(payload),
        other => block(
            DroppedProtocol::Ethernet(other),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        ),
    }
}

fn classify_arp(p: &[u8], cfg: &StackConfig) -> Action {
    // Ethernet/IPv4 ARP only; requests must ask for the gateway (so the stack never claims
    // other addresses of the guest network), replies are the guest answering the stack.
    if p.len() < 28 || p[0..6] != [0, 1, 8, 0, 6, 4] {
        return Action::Drop;
    }
    let op = u16::from_be_bytes([p[6], p[7]]);
    let target = Ipv4Addr::new(p[24], p[25], p[26], p[27]);
    match op {
        1 if target == cfg.gateway => Action::Stack,
        2 => Action::Stack,
        _ => Action::Drop,
    }
}

fn classify_ipv4(p: &[u8], cfg: &StackConfig, group: bool) -> Action {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return Action::Drop;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < 20 || total < ihl || total > p.len() {
        return Action::Drop;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let proto = p[9];
    if src != cfg.guest {
        // DHCP discovery (0.0.0.0) and spoofed sources alike: nothing to answer.
        return Action::Drop;
    }
    if group || dst.is_multicast() || dst.is_broadcast() || is_subnet_broadcast(dst, cfg) {
        return Action::Drop;
    }
    let frag = u16::from_be_bytes([p[6], p[7]]);
    let body = &p[ihl..total];
    let port = |b: &[u8]| -> u16 {
        if b.len() >= 4 {
            u16::from_be_bytes([b[2], b[3]])
        } else {
            0
        }
    };
    let dst_sa = |port| SocketAddr::new(IpAddr::V4(dst), port);
    if frag & 0x3fff != 0 {
        return block(
            protocol_of(proto),
            dst_sa(if frag & 0x1fff == 0 { port(body) } else { 0 }),
        );
    }
    match proto {
        PROTO_TCP => {
            if body.len() < 20 {
                return Action::Drop;
            }
            let flags = body[13];
            let (syn, ack, rst, fin) = (
                flags & 0x02 != 0,
                flags & 0x10 != 0,
                flags & 0x04 != 0,
                flags & 0x01 != 0,
            );
            if syn && !ack && !rst && !fin {
                let sport = u16::from_be_bytes([body[0], body[1]]);
                Action::Syn {
                    src: SocketAddrV4::new(src, sport),
                    dst: SocketAddrV4::new(dst, port(body)),
                }
            } else {
                Action::Stack
            }
        }
        PROTO_UDP => {
            if dst == cfg.gateway && port(body) == cfg.dns_port {
                Action::Stack
            } else {
                block(DroppedProtocol::Udp, dst_sa(port(body)))
            }
        }
        other => block(protocol_of(other), dst_sa(0)),
    }
}

fn is_subnet_broadcast(ip: Ipv4Addr, cfg: &StackConfig) -> bool {
    let host_bits = 32 - u32::from(cfg.prefix_len.min(32));
    if host_bits == 0 || !cfg.in_subnet(ip) {
        return false;
    }
    let host_mask = if host_bits == 32 {
        u32::MAX
    } else {
        (1u32 << host_bits) - 1
    };
    u32::from(ip) & host_mask == host_mask
}

fn protocol_of(proto: u8) -> DroppedProtocol {
    match proto {
        PROTO_TCP => DroppedProtocol::Tcp,
        PROTO_UDP => DroppedProtocol::Udp,
        PROTO_ICMP => DroppedProtocol::Icmp,
        n => DroppedProtocol::Ip(n),
    }
}

fn block(protocol: DroppedProtocol, dst: SocketAddr) -> Action {
    Action::Block(Dropped {
        protocol,
        dst,
        reason: DropReason::NotCarried,
    })
}

fn classify_ipv6(p: &[u8]) -> Action {
    if p.len() < 40 {
        return Action::Drop;
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&p[24..40]);
    let dst = Ipv6Addr::from(dst);
    // Neighbour discovery, router solicitations and MLD reports all go to link-local
    // multicast groups: link chatter, not egress.
    if dst.segments()[0] & 0xff0f == 0xff02 {
        return Action::Drop;
    }
    let next = p[6];
    let port = match next {
        PROTO_TCP | PROTO_UDP if p.len() >= 44 => u16::from_be_bytes([p[42], p[43]]),
        _ => 0,
    };
    block(
        DroppedProtocol::Ipv6,
        SocketAddr::new(IpAddr::V6(dst), port),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ipv4_frame(cfg: &StackConfig, proto: u8, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&cfg.gateway_mac);
        f.extend_from_slice(&cfg.guest_mac);
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = (20 + l4.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&cfg.guest.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(l4);
        f
    }

    fn tcp(dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        t
    }

    #[test]
    fn sorts_frames() {
        let cfg = StackConfig::default();
        let ext = Ipv4Addr::new(93, 184, 216, 34);
        assert_eq!(
            classify(&ipv4_frame(&cfg, PROTO_TCP, ext, &tcp(443, 0x02)), &cfg),
            Action::Syn {
                src: SocketAddrV4::new(cfg.guest, 40000),
                dst: SocketAddrV4::new(ext, 443)
            }
        );
        assert_eq!(
            classify(&ipv4_frame(&cfg, PROTO_TCP, ext, &tcp(443, 0x12)), &cfg),
            Action::Stack
        );
        let mut udp = vec![0u8; 8];
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(
            classify(&ipv4_frame(&cfg, PROTO_UDP, cfg.gateway, &udp), &cfg),
            Action::Stack
        );
        assert!(matches!(
            classify(&ipv4_frame(&cfg, PROTO_UDP, ext, &udp), &cfg),
            Action::Block(Dropped { protocol: DroppedProtocol::Udp, dst, .. }) if dst.port() == 53
        ));
        assert!(matches!(
            classify(&ipv4_frame(&cfg, PROTO_ICMP, ext, &[8, 0, 0, 0]), &cfg),
            Action::Block(Dropped {
                protocol: DroppedProtocol::Icmp,
                ..
            })
        ));
        let mut spoofed = ipv4_frame(&cfg, PROTO_TCP, ext, &tcp(443, 0x02));
        spoofed[14 + 15] = 99;
        assert_eq!(classify(&spoofed, &cfg), Action::Drop);
        let mut v6 = ipv4_frame(&cfg, PROTO_UDP, ext, &udp);
        v6[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        v6.resize(14 + 48, 0);
        v6[14 + 24] = 0x20;
        assert!(matches!(
            classify(&v6, &cfg),
            Action::Block(Dropped {
                protocol: DroppedProtocol::Ipv6,
                ..
            })
        ));
        v6[14 + 24] = 0xff;
        v6[14 + 25] = 0x02;
        assert_eq!(classify(&v6, &cfg), Action::Drop, "link-local multicast");
    }

    #[test]
    fn never_panics_on_short_or_odd_frames() {
        let cfg = StackConfig::default();
        let full = ipv4_frame(&cfg, PROTO_TCP, cfg.gateway, &tcp(22, 0x02));
        for cut in 0..full.len() {
            let _ = classify(&full[..cut], &cfg);
        }
        let mut x: u32 = 9;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut f = full.clone();
            let i = 14 + (x as usize) % (f.len() - 14);
            f[i] = (x >> 8) as u8;
            let _ = classify(&f, &cfg);
        }
    }
}
