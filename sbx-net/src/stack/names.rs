//! What the guest resolved: address to names (for the transparent path) and the synthetic
//! addresses that stand in for host-local answers the guest could not route to.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Addresses tracked at most; the oldest are evicted first.
const MAX_ADDRESSES: usize = 8192;
/// Names tracked per address at most.
const MAX_NAMES_PER_ADDRESS: usize = 32;
/// Synthetic addresses come from 198.18.0.0/15 (RFC 2544, never routed on the internet).
const SYNTHETIC_BASE: u32 = 0xc612_0000;
const SYNTHETIC_SIZE: u32 = 1 << 17;

/// Address-to-names table filled from the gateway's own DNS answers.
#[derive(Debug, Default)]
pub(crate) struct NameTable {
    by_ip: HashMap<IpAddr, Vec<(String, Instant)>>,
    /// Synthetic guest-visible address to the real (host-local) address.
    synthetic: HashMap<Ipv4Addr, IpAddr>,
    real_to_synthetic: HashMap<IpAddr, Ipv4Addr>,
}

impl NameTable {
    /// Ties `name` to `ip` until `now + keep`.
    pub(crate) fn record(&mut self, name: &str, ip: IpAddr, now: Instant, keep: Duration) {
        if self.by_ip.len() >= MAX_ADDRESSES && !self.by_ip.contains_key(&ip) {
            self.evict(now);
        }
        let until = now + keep;
        let names = self.by_ip.entry(ip).or_default();
        if let Some(e) = names.iter_mut().find(|(n, _)| n == name) {
            e.1 = e.1.max(until);
            return;
        }
        names.retain(|(_, t)| *t > now);
        if names.len() >= MAX_NAMES_PER_ADDRESS {
            // Drop the one expiring first.
            if let Some(i) = names
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(i, _)| i)
            {
                names.swap_remove(i);
            }
        }
        names.push((name.to_string(), until));
    }

    /// The unexpired names the guest resolved to `ip`.
    pub(crate) fn names(&self, ip: IpAddr, now: Instant) -> Vec<String> {
        self.by_ip
            .get(&ip)
            .map(|v| {
                v.iter()
                    .filter(|(_, t)| *t > now)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn evict(&mut self, now: Instant) {
        self.by_ip.retain(|_, v| {
            v.retain(|(_, t)| *t > now);
            !v.is_empty()
        });
        while self.by_ip.len() >= MAX_ADDRESSES {
            let oldest = self
                .by_ip
                .iter()
                .min_by_key(|(_, v)| v.iter().map(|(_, t)| *t).max())
                .map(|(ip, _)| *ip);
            match oldest {
                Some(ip) => {
                    self.by_ip.remove(&ip);
                }
                None => break,
            }
        }
    }

    /// The address the guest is given for `real`: itself when the guest can route to it
    /// through the gateway, else a synthetic stand-in (loopback and unspecified addresses,
    /// the guest's own network). `None` when the synthetic pool is exhausted.
    pub(crate) fn guest_address(
        &mut self,
        real: IpAddr,
        in_guest_net: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let v4 = match real {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => v6.to_ipv4_mapped()?,
        };
        let routable = !(v4.is_loopback()
            || v4.is_unspecified()
            || in_guest_net(v4)
            || v4.is_broadcast()
            || v4.is_multicast()
            || is_synthetic(v4));
        if routable && real.is_ipv4() {
            return Some(v4);
        }
        if let Some(s) = self.real_to_synthetic.get(&real) {
            return Some(*s);
        }
        let n = self.synthetic.len() as u32;
        if n >= SYNTHETIC_SIZE - 2 {
            return None;
        }
        let s = Ipv4Addr::from(SYNTHETIC_BASE + 1 + n);
        self.synthetic.insert(s, real);
        self.real_to_synthetic.insert(real, s);
        Some(s)
    }

    /// The real address behind a guest-visible one.
    pub(crate) fn real_address(&self, guest_visible: Ipv4Addr) -> IpAddr {
        self.synthetic
            .get(&guest_visible)
            .copied()
            .unwrap_or(IpAddr::V4(guest_visible))
    }
}

fn is_synthetic(ip: Ipv4Addr) -> bool {
    u32::from(ip) & !(SYNTHETIC_SIZE - 1) == SYNTHETIC_BASE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_expire_and_are_bounded() {
        let mut t = NameTable::default();
        let now = Instant::now();
        let ip: IpAddr = "93.184.216.34".parse().unwrap();
        t.record("a.example", ip, now, Duration::from_secs(10));
        t.record("b.example", ip, now, Duration::from_secs(1));
        let mut n = t.names(ip, now);
        n.sort();
        assert_eq!(n, ["a.example", "b.example"]);
        assert_eq!(t.names(ip, now + Duration::from_secs(5)), ["a.example"]);
        assert!(t.names(ip, now + Duration::from_secs(11)).is_empty());
        for i in 0..100 {
            t.record(&format!("n{i}"), ip, now, Duration::from_secs(60));
        }
        assert!(t.names(ip, now).len() <= MAX_NAMES_PER_ADDRESS);
    }

    #[test]
    fn host_local_answers_get_synthetic_addresses() {
        let mut t = NameTable::default();
        let net = |ip: Ipv4Addr| ip.octets()[..3] == [10, 77, 0];
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        assert_eq!(
            t.guest_address(public, net),
            Some("93.184.216.34".parse().unwrap())
        );
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let s = t.guest_address(lo, net).unwrap();
        assert!(is_synthetic(s));
        assert_eq!(t.guest_address(lo, net), Some(s), "stable");
        assert_eq!(t.real_address(s), lo);
        let inner = t.guest_address("10.77.0.1".parse().unwrap(), net).unwrap();
        assert_ne!(inner, s);
        assert_eq!(
            t.real_address("1.1.1.1".parse().unwrap()),
            "1.1.1.1".parse::<IpAddr>().unwrap()
        );
    }
}
