//! Flows the userspace network stack hands over by address: `network` TCP flows decided by
//! `IP` / `IP:port` / CIDR rules, and records of what the stack drops itself (rate-limited).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::io::splice;
use super::server::{Proxy, Shared};
use super::upstream::connect_tcp;
use crate::log::{LogRecord, ProxyKind, RecordType};
use crate::policy::{canonical_ip, Decision, Host, Reason, Verdict};

/// A blocked flow is recorded at most once per this window per (protocol, address).
const BLOCKED_WINDOW: Duration = Duration::from_secs(1);
/// Distinct (protocol, address) keys tracked; beyond this, repeats inside the window are
/// dropped without being counted.
const BLOCKED_KEYS: usize = 4096;

/// The transport of a flow the network stack dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlowProtocol {
    /// TCP (e.g. to a gateway port nobody serves).
    Tcp,
    /// UDP other than gateway DNS.
    Udp,
    /// ICMP or ICMPv6.
    Icmp,
    /// Any IPv6 packet (the stack is IPv4-only).
    Ipv6,
    /// Another IP protocol, by number.
    Other(u8),
}

impl fmt::Display for FlowProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowProtocol::Tcp => f.write_str("tcp"),
            FlowProtocol::Udp => f.write_str("udp"),
            FlowProtocol::Icmp => f.write_str("icmp"),
            FlowProtocol::Ipv6 => f.write_str("ipv6"),
            FlowProtocol::Other(n) => write!(f, "ip-proto-{n}"),
        }
    }
}

/// A flow (or packet) the network stack refused on its own, for
/// [`Proxy::log_blocked_network`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockedFlow {
    /// The transport.
    pub protocol: FlowProtocol,
    /// Where the guest tried to go.
    pub dst: IpAddr,
    /// The destination port, for protocols that have one.
    pub port: Option<u16>,
    /// Why it was dropped (typically [`Reason::ProtocolNotAllowed`]).
    pub reason: Reason,
}

impl BlockedFlow {
    /// Describes a dropped flow.
    pub fn new(protocol: FlowProtocol, dst: IpAddr, port: Option<u16>, reason: Reason) -> Self {
        BlockedFlow {
            protocol,
            dst,
            port,
            reason,
        }
    }
}

struct Slot {
    last: Instant,
    suppressed: u64,
}

/// At most one blocked-flow record per (protocol, address) per [`BLOCKED_WINDOW`]; repeats
/// are counted into the next record for the key.
#[derive(Default)]
pub(crate) struct BlockedLimiter {
    slots: Mutex<HashMap<(FlowProtocol, IpAddr), Slot>>,
}

impl BlockedLimiter {
    /// `Some(n)` when a record should be written now, standing for `n` flows.
    fn admit(&self, key: (FlowProtocol, IpAddr), now: Instant) -> Option<u64> {
        let mut slots = self.slots.lock().ok()?;
        if let Some(slot) = slots.get_mut(&key) {
            if now.duration_since(slot.last) < BLOCKED_WINDOW {
                slot.suppressed += 1;
                return None;
            }
            let count = slot.suppressed + 1;
            slot.last = now;
            slot.suppressed = 0;
            return Some(count);
        }
        if slots.len() >= BLOCKED_KEYS {
            slots.retain(|_, s| now.duration_since(s.last) < BLOCKED_WINDOW);
            if slots.len() >= BLOCKED_KEYS {
                return None;
            }
        }
        slots.insert(
            key,
            Slot {
                last: now,
                suppressed: 0,
            },
        );
        Some(1)
    }
}

/// Writes a blocked record.
pub(crate) fn refuse(shared: &Shared, mut rec: LogRecord, reason: Reason, rule: Option<String>) {
    rec.decision = Verdict::Deny;
    rec.reason = reason;
    rec.rule = rule;
    shared.log.record(&rec);
}

/// Connects to `target`, sends `first`, splices, and returns the allowed record with the
/// byte counts once the flow ends (for the caller to write), or `None` when the connection
/// failed (the refusal is already recorded).
pub(crate) async fn connect_and_splice<I>(
    shared: &Shared,
    mut io: I,
    target: SocketAddr,
    first: &[u8],
    mut rec: LogRecord,
    decision: &Decision,
) -> Option<LogRecord>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let rule = decision.rule.clone();
    let mut upstream = match connect_tcp(&[target], shared.limits.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, %target, "upstream connect failed");
            refuse(shared, rec, Reason::UpstreamUnreachable, rule);
            return None;
        }
    };
    if !first.is_empty() && upstream.write_all(first).await.is_err() {
        refuse(shared, rec, Reason::UpstreamUnreachable, rule);
        return None;
    }
    rec.rule = rule;
    rec.decision = Verdict::Allow;
    rec.reason = decision.reason;
    let (up, down) = splice(&mut io, upstream, shared.limits.idle_timeout).await;
    let _ = io.shutdown().await;
    rec.bytes_up = up + first.len() as u64;
    rec.bytes_down = down;
    Some(rec)
}

/// Checks an address the guest connects to directly: deny rules naming it, the SSRF guard
/// (non-public addresses need an `IP`/CIDR rule) and the proxy's own listener.
pub(crate) fn check_direct(shared: &Shared, dst: SocketAddr) -> Result<(), Decision> {
    if let Some(denied) = shared
        .policy()
        .check_address(&shared.sandbox, dst.ip(), dst.port())
    {
        return Err(denied);
    }
    if shared.is_self(dst) {
        return Err(Decision::deny(Reason::ProxyLoop, None));
    }
    Ok(())
}

impl Proxy {
    /// Serves a TCP connection the guest opened to `original_dst` on a port that is neither
    /// the explicit proxy nor intercepted transparently.
    ///
    /// The decision is the policy's for the address as a host (`IP`, `IP:port` and CIDR
    /// rules; `**` and the `allow-all` preset also match addresses, as for a `CONNECT` to an
    /// IP literal), then the SSRF guard: loopback, private, link-local, metadata and other
    /// non-public addresses need a rule naming the address or a range containing it, even
    /// under `allow-all`. Allowed flows are spliced; one `network` record (kind `network`)
    /// with byte counts is written when the flow ends, or a blocked one at once.
    pub async fn serve_network<I>(&self, io: I, original_dst: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = &self.shared;
        let ip = canonical_ip(original_dst.ip());
        let dst = SocketAddr::new(ip, original_dst.port());
        let mut rec = LogRecord::new(&shared.sandbox, RecordType::Network, ProxyKind::Network);
        rec.host = ip.to_string();
        rec.port = dst.port();
        rec.protocol = Some("tcp".into());
        let Some(_guard) = shared.admit() else {
            return refuse(shared, rec, Reason::LimitExceeded, None);
        };
        let decision = shared
            .policy()
            .evaluate(&shared.sandbox, &Host::Ip(ip), dst.port());
        if !decision.is_allowed() {
            return refuse(shared, rec, decision.reason, decision.rule);
        }
        if let Err(denied) = check_direct(shared, dst) {
            return refuse(shared, rec, denied.reason, denied.rule.or(decision.rule));
        }
        shared
            .until_stopped(async {
                if let Some(rec) = connect_and_splice(shared, io, dst, &[], rec, &decision).await {
                    shared.log.record(&rec);
                }
            })
            .await;
    }

    /// Records a flow the network stack dropped itself (UDP other than DNS, ICMP, IPv6, TCP
    /// to gateway ports): one blocked `network` record, kind `network`, with
    /// [`LogRecord::protocol`](crate::LogRecord) set.
    ///
    /// Cheap enough to call for every dropped packet: per (protocol, address) at most one
    /// record per second is written, and its `count` says how many drops it stands for
    /// (repeats since the previous record for that key, this one included; repeats after
    /// the last record of a burst are not reported).
    pub fn log_blocked_network(&self, what: BlockedFlow) {
        let shared = &self.shared;
        let ip = canonical_ip(what.dst);
        let Some(count) = shared.blocked.admit((what.protocol, ip), Instant::now()) else {
            return;
        };
        let mut rec = LogRecord::new(&shared.sandbox, RecordType::Network, ProxyKind::Network);
        rec.host = ip.to_string();
        rec.port = what.port.unwrap_or(0);
        rec.protocol = Some(what.protocol.to_string());
        rec.count = (count > 1).then_some(count);
        refuse(shared, rec, what.reason, None);
    }
}

/// Keeps the type in the public surface tidy: the limiter lives in `Shared`.
impl fmt::Debug for BlockedLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockedLimiter").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_repeats_into_the_next_record() {
        let l = BlockedLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.admit((FlowProtocol::Udp, ip), t0), Some(1));
        for i in 1..=5 {
            assert_eq!(
                l.admit((FlowProtocol::Udp, ip), t0 + Duration::from_millis(i)),
                None
            );
        }
        // Another protocol or address is its own key.
        assert_eq!(l.admit((FlowProtocol::Icmp, ip), t0), Some(1));
        assert_eq!(
            l.admit((FlowProtocol::Udp, ip), t0 + BLOCKED_WINDOW),
            Some(6)
        );
        assert_eq!(
            l.admit((FlowProtocol::Udp, ip), t0 + BLOCKED_WINDOW * 3),
            Some(1)
        );
    }

    #[test]
    fn limiter_stays_bounded() {
        let l = BlockedLimiter::default();
        let t0 = Instant::now();
        for i in 0..(BLOCKED_KEYS as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            let admitted = l.admit((FlowProtocol::Tcp, ip), t0);
            assert_eq!(admitted.is_some(), (i as usize) < BLOCKED_KEYS, "{i}");
        }
        // Old keys are pruned once the window has passed.
        let later = t0 + BLOCKED_WINDOW;
        assert_eq!(
            l.admit((FlowProtocol::Tcp, "192.0.2.1".parse().unwrap()), later),
            Some(1)
        );
        assert!(l.slots.lock().unwrap().len() <= BLOCKED_KEYS);
    }
}
