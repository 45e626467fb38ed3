//! Transparent interception: the guest connected to an address directly (no proxy settings).
//! The server name comes from the TLS SNI or the HTTP `Host` header, must be a name the guest
//! resolved to that address through the gateway DNS, and must be allowed by the policy; the
//! connection is then spliced to the address, uninspected (no TLS termination, no injection).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::guard::{H1Guard, HeadCheck};
use super::io::Prefixed;
use super::network::{check_direct, connect_and_splice, refuse};
use super::peek::{http_head, Peeked, Peeker, MAX_PEEK};
use super::server::{Proxy, Shared};
use crate::credentials::Scan;
use crate::log::{LogRecord, ProxyKind, RecordType};
use crate::policy::{canonical_ip, parse_authority, Decision, Host, Reason, Verdict};

/// Reads until the first bytes decide what the connection is. Returns the bytes read (to be
/// replayed upstream) and the decision.
async fn read_first<T: AsyncRead + Unpin>(io: &mut T) -> std::io::Result<(Vec<u8>, Peeked)> {
    let mut peeker = Peeker::new(MAX_PEEK);
    let mut chunk = [0u8; 4096];
    loop {
        let room = peeker.room().min(chunk.len());
        let n = io.read(&mut chunk[..room]).await?;
        if n == 0 {
            let why = "connection closed before a client hello or request head";
            return Ok((peeker.into_bytes(), Peeked::Invalid(why)));
        }
        if let Some(done) = peeker.push(&chunk[..n]) {
            return Ok((peeker.into_bytes(), done));
        }
    }
}

/// Where a transparent flow for `host` connects, mirroring the forward path: a trusted
/// override for the name is used when the guest connected to the override's address (which
/// is what the gateway DNS answered for it); any other address is checked like a direct
/// connection (deny rules, SSRF guard, the proxy's own listener).
fn target_for(shared: &Shared, host: &Host, dst: SocketAddr) -> Result<SocketAddr, Decision> {
    if let Some(target) = shared.overrides.get(host) {
        let target = target.with_port(dst.port());
        if canonical_ip(target.ip()) == canonical_ip(dst.ip()) {
            if shared.is_self(target) {
                return Err(Decision::deny(Reason::ProxyLoop, None));
            }
            return Ok(target);
        }
    }
    check_direct(shared, dst)?;
    Ok(dst)
}

/// Whether `host` is one of the names the guest resolved to this address.
fn resolved_to(names: &[String], host: &Host) -> bool {
    names
        .iter()
        .any(|n| Host::parse(n).is_ok_and(|parsed| &parsed == host))
}

impl Proxy {
    /// Serves a TCP connection the guest opened to `original_dst` directly (ports 443 and 80
    /// in the network stack). `names` are the names the guest resolved to this address
    /// through the gateway DNS ([`Proxy::resolve_for_guest`]); empty refuses everything.
    ///
    /// Reads up to 16 KiB, within [`Limits::handshake_timeout`](crate::Limits), until a
    /// complete TLS ClientHello (SNI) or HTTP/1 request head (`Host`; the port defaults to
    /// `original_dst`'s, and an explicit one must equal it). Blocked, with one record each:
    /// neither or malformed (`bad-request`), too slow (`limit-exceeded`), no server name
    /// (`no-server-name`), a name not among `names` (`dns-mismatch`), a name the policy
    /// denies on that port, a credential sentinel in a cleartext request head to a host the
    /// credential is not bound to (`credential-exfiltration`), and an address the SSRF guard
    /// refuses. Allowed: the bytes read are replayed to `original_dst` (or to the name's
    /// resolver override when the guest connected to the override's address) and both
    /// directions spliced. `bypass` rules make no difference here: nothing is terminated or
    /// injected. On cleartext connections every later request head (pipelined or
    /// keep-alive) passes the strict framing guard and must name the same host, be allowed
    /// and carry no misplaced sentinel; the first refusal closes the connection before the
    /// refused head is forwarded.
    ///
    /// One record of kind `transparent` per connection: type `network` for TLS (with `sni`),
    /// `http` with the first request's method and path for cleartext, byte counts when it
    /// ends (a later refusal turns it into a blocked record with that reason).
    pub async fn serve_transparent<I>(&self, io: I, original_dst: SocketAddr, names: &[String])
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = &self.shared;
        let dst = SocketAddr::new(canonical_ip(original_dst.ip()), original_dst.port());
        let mut rec = LogRecord::new(&shared.sandbox, RecordType::Network, ProxyKind::Transparent);
        rec.host = dst.ip().to_string();
        rec.port = dst.port();
        let Some(_guard) = shared.admit() else {
            return refuse(shared, rec, Reason::LimitExceeded, None);
        };
        shared
            .until_stopped(transparent(shared, io, dst, names, rec))
            .await;
    }
}

async fn transparent<I>(
    shared: &Arc<Shared>,
    mut io: I,
    dst: SocketAddr,
    names: &[String],
    mut rec: LogRecord,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let first = tokio::time::timeout(shared.limits.handshake_timeout, read_first(&mut io)).await;
    let (first, peeked) = match first {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "transparent connection read failed");
            return refuse(shared, rec, Reason::BadRequest, None);
        }
        Err(_) => return refuse(shared, rec, Reason::LimitExceeded, None),
    };
    let (name, head) = match peeked {
        Peeked::Invalid(why) => {
            tracing::info!(why, %dst, "transparent connection is neither tls nor http");
            return refuse(shared, rec, Reason::BadRequest, None);
        }
        Peeked::Tls { sni } => {
            rec.sni = sni.clone();
            (sni, None)
        }
        Peeked::Http(head) => {
            rec.kind = RecordType::Http;
            rec.method = Some(head.method.clone());
            rec.path = Some(head.path.clone());
            (head.host.clone(), Some(head))
        }
    };
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return refuse(shared, rec, Reason::NoServerName, None);
    };
    let host = if head.is_some() {
        match parse_authority(&name) {
            Ok((host, port)) if port.is_none_or(|p| p == dst.port()) => Ok(host),
            Ok((host, _)) => Err((Some(host), Reason::IdentityMismatch)),
            Err(_) => Err((None, Reason::BadRequest)),
        }
    } else {
        Host::parse(&name).map_err(|_| (None, Reason::BadRequest))
    };
    let host = match host {
        Ok(host) => host,
        Err((host, reason)) => {
            rec.host = match host {
                Some(h) => h.to_string(),
                None => name.chars().take(255).collect(),
            };
            return refuse(shared, rec, reason, None);
        }
    };
    rec.host = host.to_string();
    if host.name().is_none() || !resolved_to(names, &host) {
        return refuse(shared, rec, Reason::DnsMismatch, None);
    }
    let decision = shared.policy().evaluate(&shared.sandbox, &host, dst.port());
    if !decision.is_allowed() {
        return refuse(shared, rec, decision.reason, decision.rule);
    }
    if let Some(head) = &head {
        let scan = shared
            .creds
            .scan(&head.path, &head.headers, &host, dst.port());
        if let Scan::Exfiltration(credential) = scan {
            tracing::warn!(%host, %credential, "sentinel sent to an unbound host; blocked");
            rec.credentials = vec![credential];
            return refuse(shared, rec, Reason::CredentialExfiltration, decision.rule);
        }
    }
    let target = match target_for(shared, &host, dst) {
        Ok(t) => t,
        Err(denied) => {
            return refuse(shared, rec, denied.reason, denied.rule.or(decision.rule));
        }
    };
    if head.is_none() {
        if let Some(rec) = connect_and_splice(shared, io, target, &first, rec, &decision).await {
            shared.log.record(&rec);
        }
        return;
    }
    // Cleartext: every request on the connection (pipelined in the peeked bytes or sent later
    // on the keep-alive connection) must name the same host and pass the same checks; the
    // first refusal ends the connection before the refused head is forwarded.
    let refused: Arc<Mutex<Option<Reason>>> = Arc::default();
    let check = head_check(shared.clone(), host, dst.port(), refused.clone());
    let framing = Arc::new(AtomicBool::new(false));
    let io = H1Guard::strict(
        Prefixed::new(first, io),
        shared.limits.max_header_bytes,
        check,
        framing.clone(),
    );
    if let Some(mut rec) = connect_and_splice(shared, io, target, &[], rec, &decision).await {
        let reason = refused.lock().ok().and_then(|mut r| r.take());
        if let Some(reason) = reason.or(framing
            .load(Ordering::Relaxed)
            .then_some(Reason::BadRequest))
        {
            rec.decision = Verdict::Deny;
            rec.reason = reason;
        }
        shared.log.record(&rec);
    }
}

/// The per-request check on a transparent cleartext connection.
fn head_check(
    shared: Arc<Shared>,
    host: Host,
    port: u16,
    refused: Arc<Mutex<Option<Reason>>>,
) -> HeadCheck {
    Box::new(move |req| {
        let verdict = check_head(&shared, &host, port, req);
        if let Err(reason) = verdict {
            tracing::info!(%host, %reason, "request on a transparent connection refused");
            if let Ok(mut r) = refused.lock() {
                *r = Some(reason);
            }
            return Err(reason.as_str());
        }
        Ok(())
    })
}

fn check_head(
    shared: &Shared,
    host: &Host,
    port: u16,
    req: &httparse::Request<'_, '_>,
) -> Result<(), Reason> {
    let Peeked::Http(head) = http_head(req) else {
        return Err(Reason::BadRequest);
    };
    let Some(name) = head.host else {
        return Err(Reason::NoServerName);
    };
    match parse_authority(&name) {
        Ok((h, p)) if &h == host && p.is_none_or(|p| p == port) => {}
        Ok(_) => return Err(Reason::IdentityMismatch),
        Err(_) => return Err(Reason::BadRequest),
    }
    let decision = shared.policy().evaluate(&shared.sandbox, host, port);
    if !decision.is_allowed() {
        return Err(decision.reason);
    }
    match shared.creds.scan(&head.path, &head.headers, host, port) {
        Scan::Exfiltration(_) => Err(Reason::CredentialExfiltration),
        Scan::Bound(_) | Scan::Clean => Ok(()),
    }
}
