//! Name resolution on behalf of the guest (the gateway DNS): the policy decides whether a name
//! may be looked up at all, so a denied name never reaches the resolver.

use std::io;
use std::net::IpAddr;

use super::server::Proxy;
use crate::log::{LogRecord, ProxyKind, RecordType};
use crate::policy::{Host, Reason, Verdict};

/// Most addresses returned for one name.
const MAX_ANSWERS: usize = 16;

/// DNS status codes carried in the `status` field of `dns` records.
const RCODE_NOERROR: u16 = 0;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;

/// The outcome of [`Proxy::resolve_for_guest`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestDns {
    /// The policy denies the name; it was not looked up (answer NXDOMAIN).
    Denied,
    /// The addresses (deduplicated, at most 16, both families; nothing filtered: the SSRF
    /// guard acts when the guest connects).
    Answer(Vec<IpAddr>),
    /// The name is malformed, does not exist or has no addresses (answer NXDOMAIN).
    NotFound,
    /// The lookup failed or timed out (answer SERVFAIL).
    Failed,
}

impl Proxy {
    /// Resolves `name` for the guest.
    ///
    /// The name is normalised like every host (case, trailing dot, IDNA); IP literals and
    /// malformed names are [`GuestDns::NotFound`]. The policy decides with
    /// [`Policy::allows_host_on_any_port`](crate::Policy::allows_host_on_any_port): a denied
    /// name is never passed to the resolver. Allowed names use the trusted overrides, then
    /// the configured [`Resolve`](crate::Resolve) (bounded by
    /// [`Limits::connect_timeout`](crate::Limits)).
    ///
    /// One `dns` record per call (kind `transparent`, port 53): host, decision, rule, reason,
    /// and the DNS response code in `status` (0 answer, 3 NXDOMAIN, 2 SERVFAIL).
    pub async fn resolve_for_guest(&self, name: &str) -> GuestDns {
        let shared = &self.shared;
        let mut rec = LogRecord::new(&shared.sandbox, RecordType::Dns, ProxyKind::Transparent);
        rec.port = 53;
        let host = match Host::parse(name) {
            Ok(host @ Host::Name(_)) => host,
            _ => {
                // Guest-controlled: keep log readers' terminals safe.
                rec.host = name
                    .chars()
                    .take(255)
                    .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                    .collect();
                rec.status = Some(RCODE_NXDOMAIN);
                shared.log.record(&rec);
                return GuestDns::NotFound;
            }
        };
        rec.host = host.to_string();
        let decision = shared
            .policy()
            .allows_host_on_any_port(&shared.sandbox, &host);
        rec.rule = decision.rule.clone();
        rec.reason = decision.reason;
        if !decision.is_allowed() {
            rec.status = Some(RCODE_NXDOMAIN);
            shared.log.record(&rec);
            return GuestDns::Denied;
        }
        rec.decision = Verdict::Allow;
        let result = if let Some(target) = shared.overrides.get(&host) {
            GuestDns::Answer(vec![target.with_port(0).ip()])
        } else {
            let lookup = shared.resolver.resolve(host.name().unwrap_or_default(), 0);
            match tokio::time::timeout(shared.limits.connect_timeout, lookup).await {
                Ok(Ok(ips)) if ips.is_empty() => GuestDns::NotFound,
                Ok(Ok(ips)) => {
                    let mut answer: Vec<IpAddr> = Vec::new();
                    for ip in ips {
                        if !answer.contains(&ip) && answer.len() < MAX_ANSWERS {
                            answer.push(ip);
                        }
                    }
                    GuestDns::Answer(answer)
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => GuestDns::NotFound,
                Ok(Err(e)) => {
                    tracing::debug!(%host, error = %e, "guest dns lookup failed");
                    GuestDns::Failed
                }
                Err(_) => {
                    tracing::debug!(%host, "guest dns lookup timed out");
                    GuestDns::Failed
                }
            }
        };
        rec.status = Some(match &result {
            GuestDns::Answer(_) => RCODE_NOERROR,
            GuestDns::Failed => {
                rec.decision = Verdict::Deny;
                rec.reason = Reason::UpstreamUnreachable;
                RCODE_SERVFAIL
            }
            _ => RCODE_NXDOMAIN,
        });
        shared.log.record(&rec);
        result
    }
}
