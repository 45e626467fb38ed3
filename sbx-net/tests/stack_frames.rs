//! The network stack on hand-made frames over a datagram socketpair (no namespace, no root):
//! ARP for the gateway, the gateway DNS (allowed, denied, malformed), drops that are logged,
//! a reset for a closed gateway port and a SYN-ACK for any other destination.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sbx_net::{
    BoxFuture, DnsQuery, DnsRcode, DropReason, Dropped, DroppedProtocol, FlowHandler, FlowStream,
    GuestAnswer, NetStack, StackConfig,
};

const GW_MAC: [u8; 6] = [0x02, 0x5b, 0x78, 0, 0, 1];
const GUEST_MAC: [u8; 6] = [0x02, 0x5b, 0x78, 0, 0, 2];
const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

#[derive(Default)]
struct Fake {
    asked: Mutex<Vec<String>>,
    dropped: Mutex<Vec<Dropped>>,
}

impl FlowHandler for Fake {
    fn serve_connection(&self, _: FlowStream, _: SocketAddr) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn serve_transparent(&self, _: FlowStream, _: SocketAddr, _: Vec<String>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn serve_network(&self, _: FlowStream, _: SocketAddr) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn resolve_for_guest(&self, name: String) -> BoxFuture<'_, GuestAnswer> {
        self.asked.lock().unwrap().push(name.clone());
        Box::pin(async move {
            match name.as_str() {
                "allowed.test" => GuestAnswer::Answer(vec!["93.184.216.34".parse().unwrap()]),
                "local.test" => GuestAnswer::Answer(vec!["127.0.0.1".parse().unwrap()]),
                "broken.test" => GuestAnswer::Failed,
                _ => GuestAnswer::Denied,
            }
        })
    }
    fn log_blocked_network(&self, dropped: &Dropped) {
        self.dropped.lock().unwrap().push(*dropped);
    }
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(proto: u8, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    let mut l4 = l4.to_vec();
    // Transport checksum over the pseudo header.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&GUEST.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let off = if proto == 6 { 16 } else { 6 };
    let mut all = pseudo;
    all.extend_from_slice(&l4);
    let c = checksum(&all, 0);
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&GUEST.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&l4);
    eth(0x0800, GW_MAC, &ip)
}

fn eth(ethertype: u16, dst: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    q
}

struct Wire {
    sock: tokio::net::UnixDatagram,
}

impl Wire {
    async fn send(&self, f: &[u8]) {
        self.sock.send(f).await.unwrap();
    }

    /// The next frame matching `want`, answering the stack's ARP requests for the guest.
    async fn expect(&self, what: &str, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), self.sock.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap();
            let f = &buf[..n];
            if f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 1] {
                // who-has 10.77.0.2: answer as the guest.
                let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
                arp.extend_from_slice(&GUEST_MAC);
                arp.extend_from_slice(&GUEST.octets());
                arp.extend_from_slice(&GW_MAC);
                arp.extend_from_slice(&GW.octets());
                if f[38..42] == GUEST.octets() {
                    self.send(&eth(0x0806, GW_MAC, &arp)).await;
                }
                continue;
            }
            if want(f) {
                return f.to_vec();
            }
        }
    }

    /// Sends a DNS query and returns the UDP payload of the answer.
    async fn dns(&self, id: u16, query: &[u8]) -> Vec<u8> {
        self.send(&ipv4(17, GW, &udp(40000 + id, 53, query))).await;
        let f = self
            .expect("a dns answer", |f| {
                f.len() > 44
                    && f[23] == 17
                    && f[34..36] == 53u16.to_be_bytes()
                    && f[42..44] == id.to_be_bytes()
            })
            .await;
        f[42..].to_vec()
    }
}

#[tokio::test]
async fn frames_in_frames_out() {
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    let fake = Arc::new(Fake::default());
    let stack = NetStack::spawn(StackConfig::default(), OwnedFd::from(ours), fake.clone()).unwrap();
    let wire = Wire {
        sock: tokio::net::UnixDatagram::from_std(theirs).unwrap(),
    };

    // ARP for the gateway is answered with the gateway's MAC.
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&GUEST.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&GW.octets());
    wire.send(&eth(0x0806, [0xff; 6], &arp)).await;
    let reply = wire
        .expect("an arp reply", |f| {
            f[12..14] == [8, 6] && f[20..22] == [0, 2]
        })
        .await;
    assert_eq!(reply[22..28], GW_MAC);

    // DNS: allowed names get A records, host-local answers a synthetic address, denied names
    // NXDOMAIN, failures SERVFAIL, AAAA nothing, malformed queries FORMERR.
    let a = wire.dns(1, &dns_query(1, "Allowed.Test", 1)).await;
    assert_eq!(a[3] & 0x0f, 0);
    assert_eq!(a[6..8], [0, 1]);
    assert_eq!(a[a.len() - 4..], [93, 184, 216, 34]);
    let l = wire.dns(2, &dns_query(2, "local.test", 1)).await;
    assert_eq!(
        l[l.len() - 4..l.len() - 2],
        [198, 18],
        "synthetic 198.18/15 address"
    );
    let d = wire.dns(3, &dns_query(3, "evil.test", 1)).await;
    assert_eq!(d[3] & 0x0f, DnsRcode::NxDomain as u8);
    let s = wire.dns(4, &dns_query(4, "broken.test", 1)).await;
    assert_eq!(s[3] & 0x0f, DnsRcode::ServFail as u8);
    let six = wire.dns(5, &dns_query(5, "allowed.test", 28)).await;
    assert_eq!((six[3] & 0x0f, six[6..8].to_vec()), (0, vec![0, 0]));
    let mut bad = dns_query(6, "x.test", 1);
    bad[12] = 0xc0;
    let f = wire.dns(6, &bad).await;
    assert_eq!(f[3] & 0x0f, DnsRcode::FormErr as u8);
    let asked = fake.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        ["allowed.test", "local.test", "evil.test", "broken.test"]
    );
    assert!(DnsQuery::parse(&a).is_err(), "answers are not queries");

    // UDP elsewhere and ICMP are dropped and logged.
    wire.send(&ipv4(17, Ipv4Addr::new(8, 8, 8, 8), &udp(1234, 53, b"x")))
        .await;
    wire.send(&ipv4(
        1,
        Ipv4Addr::new(1, 1, 1, 1),
        &[8, 0, 0, 0, 0, 0, 0, 0],
    ))
    .await;
    // A closed gateway port gets a reset; any other destination a SYN-ACK.
    wire.send(&ipv4(6, GW, &syn(50000, 22))).await;
    let rst = wire
        .expect("a reset", |f| {
            f.len() >= 54 && f[23] == 6 && f[34..36] == 22u16.to_be_bytes()
        })
        .await;
    assert_ne!(rst[47] & 0x04, 0, "RST");
    let dst = Ipv4Addr::new(93, 184, 216, 34);
    wire.send(&ipv4(6, dst, &syn(50001, 443))).await;
    let synack = wire
        .expect("a syn-ack", |f| {
            f.len() >= 54 && f[23] == 6 && f[26..30] == dst.octets()
        })
        .await;
    assert_eq!(synack[47] & 0x12, 0x12, "SYN+ACK from {dst}");
    // Garbage never stops the stack.
    for n in [0usize, 1, 13, 14, 20, 60] {
        wire.send(&vec![0xa5; n]).await;
    }
    let again = wire.dns(7, &dns_query(7, "allowed.test", 1)).await;
    assert_eq!(again[6..8], [0, 1]);

    let dropped = fake.dropped.lock().unwrap().clone();
    let has = |p: DroppedProtocol, r: DropReason, ip: &str, port: u16| {
        dropped.iter().any(|d| {
            d.protocol == p && d.reason == r && d.dst == SocketAddr::new(ip.parse().unwrap(), port)
        })
    };
    assert!(
        has(DroppedProtocol::Udp, DropReason::NotCarried, "8.8.8.8", 53),
        "{dropped:?}"
    );
    assert!(
        has(DroppedProtocol::Icmp, DropReason::NotCarried, "1.1.1.1", 0),
        "{dropped:?}"
    );
    assert!(
        has(
            DroppedProtocol::Tcp,
            DropReason::ClosedGatewayPort,
            "10.77.0.1",
            22
        ),
        "{dropped:?}"
    );
    let st = stack.stats();
    assert!(
        st.frames_in >= 14 && st.flows_refused == 1 && st.flows_active == 1,
        "{st:?}"
    );
}

/// Stable smoke run of what the `dns_query` fuzz target checks: mutated and truncated queries
/// never panic, accepted names are normalised, answers echo the id and stay under 512 bytes.
#[test]
fn dns_parser_survives_mutated_queries() {
    let seeds = [
        dns_query(1, "www.example.org", 1),
        dns_query(2, "a.b", 28),
        dns_query(3, &vec!["x".repeat(63); 4].join("."), 1),
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut accepted = 0;
    for i in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut p = seeds[i % seeds.len()].clone();
        for k in 0..(x % 4) {
            let at = ((x >> (8 * k + 8)) as usize) % p.len();
            p[at] = (x >> (8 * k + 3)) as u8;
        }
        p.truncate(((x >> 40) as usize) % (p.len() + 2));
        match DnsQuery::parse(&p) {
            Ok(q) => {
                accepted += 1;
                assert!(q
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)));
                let r = q.response(DnsRcode::NoError, &[Ipv4Addr::LOCALHOST; 64], 60);
                assert!(r.len() <= 512);
                assert_eq!(r[..2], p[..2]);
            }
            Err(sbx_net::DnsError::Reply(rc)) => {
                let r = DnsQuery::error_response(&p, rc).unwrap();
                assert_eq!(r[..2], p[..2]);
            }
            Err(_) => {}
        }
    }
    assert!(
        accepted > 1000,
        "the mutations keep some queries valid: {accepted}"
    );
}

/// The microVM case: a `SOCK_SEQPACKET` pair, one frame per read and write; the stack stops
/// when the VMM's end closes.
#[tokio::test]
async fn seqpacket_frames_and_end_of_file() {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let stack = NetStack::spawn(StackConfig::default(), ours, Arc::new(Fake::default())).unwrap();
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&GUEST.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&GW.octets());
    let frame = eth(0x0806, [0xff; 6], &arp);
    let reply = tokio::task::spawn_blocking(move || {
        nix::unistd::write(&theirs, &frame).unwrap();
        let mut buf = [0u8; 2048];
        let n = nix::unistd::read(&theirs, &mut buf).unwrap();
        (buf[..n].to_vec(), theirs)
    });
    let (reply, theirs) = tokio::time::timeout(Duration::from_secs(5), reply)
        .await
        .expect("an arp reply")
        .unwrap();
    assert_eq!(reply.len(), 42, "one frame per read");
    assert_eq!(reply[22..28], GW_MAC);
    drop(theirs);
    for _ in 0..100 {
        if stack.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the stack did not stop at end of file");
}
