//! HTTP requests: inside intercepted tunnels (`forward`, TLS both legs, injection) and
//! absolute-form cleartext requests on the proxy port (never injected).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::io::{refusal, splice, CountingBody, LoggedBody, ProxyBody, RecordOnDrop};
use super::server::Shared;
use super::upstream::{resolve_checked, Upstream};
use crate::credentials::{Injected, Scan};
use crate::log::{LogRecord, ProxyKind, RecordType};
use crate::policy::{parse_authority, Host, Reason, Verdict};

/// One intercepted tunnel: its checked destination and its upstream connections.
pub(crate) struct TunnelCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) host: Host,
    pub(crate) port: u16,
    pub(crate) sni: Option<String>,
    pub(crate) upstream: Upstream,
}

/// Headers that describe one hop, not the message.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && (*name == "connection" || *name == "upgrade") {
            continue;
        }
        headers.remove(*name);
    }
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Checks that the request URI's authority (absolute-form or `:authority`) and the `Host`
/// header, where present, name exactly the destination the tunnel or URI established.
fn identity_ok(req: &Request<Incoming>, host: &Host, port: u16, default_port: u16) -> bool {
    let same = |s: &str| match parse_authority(s) {
        Ok((h, p)) => &h == host && p.unwrap_or(default_port) == port,
        Err(_) => false,
    };
    if let Some(a) = req.uri().authority() {
        if !same(a.as_str()) {
            return false;
        }
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => false,
        (Some(v), None) => v.to_str().is_ok_and(same),
        // HTTP/1.1 requires Host; HTTP/2 carries :authority instead.
        (None, _) => req.uri().authority().is_some(),
    }
}

fn authority_string(host: &Host, port: u16, default_port: u16) -> String {
    if port == default_port {
        host.to_authority_host()
    } else {
        format!("{}:{port}", host.to_authority_host())
    }
}

fn finish_refusal(
    shared: &Shared,
    mut rec: LogRecord,
    status: StatusCode,
    reason: Reason,
) -> Response<ProxyBody> {
    rec.decision = Verdict::Deny;
    rec.reason = reason;
    rec.status = Some(status.as_u16());
    shared.log.record(&rec);
    refusal(status, reason)
}

struct Target<'a> {
    host: &'a Host,
    port: u16,
    scheme: &'static str,
    default_port: u16,
}

/// Handles one request inside an intercepted tunnel.
pub(crate) async fn handle_intercepted(
    ctx: Arc<TunnelCtx>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let shared = &ctx.shared;
    let mut rec = LogRecord::new(&shared.sandbox, RecordType::Http, ProxyKind::Forward);
    rec.host = ctx.host.to_string();
    rec.port = ctx.port;
    rec.sni = ctx.sni.clone();
    if req.method() == http::Method::CONNECT {
        // No tunnels inside tunnels.
        rec.method = Some("CONNECT".into());
        return finish_refusal(shared, rec, StatusCode::BAD_REQUEST, Reason::BadRequest);
    }
    let target = Target {
        host: &ctx.host,
        port: ctx.port,
        scheme: "https",
        default_port: 443,
    };
    forward(shared, &ctx.upstream, target, req, rec).await
}

/// Handles a request on the proxy port that is not `CONNECT`: only absolute-form `http://`.
pub(crate) async fn handle_plain(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let mut rec = LogRecord::new(&shared.sandbox, RecordType::Http, ProxyKind::Forward);
    rec.method = Some(req.method().to_string());
    rec.path = req.uri().path_and_query().map(|p| p.to_string());
    if req.uri().scheme_str() != Some("http") {
        rec.host = req
            .uri()
            .authority()
            .map(|a| a.host().to_string())
            .unwrap_or_default();
        return finish_refusal(&shared, rec, StatusCode::BAD_REQUEST, Reason::BadRequest);
    }
    let parsed = req.uri().authority().map(|a| parse_authority(a.as_str()));
    let (host, port) = match parsed {
        Some(Ok((h, p))) => (h, p.unwrap_or(80)),
        _ => return finish_refusal(&shared, rec, StatusCode::BAD_REQUEST, Reason::BadRequest),
    };
    rec.host = host.to_string();
    rec.port = port;
    if !identity_ok(&req, &host, port, 80) {
        return finish_refusal(
            &shared,
            rec,
            StatusCode::MISDIRECTED_REQUEST,
            Reason::IdentityMismatch,
        );
    }
    let decision = shared.policy().evaluate(&shared.sandbox, &host, port);
    rec.rule = decision.rule.clone();
    if decision.bypass {
        rec.proxy = ProxyKind::ForwardBypass;
    }
    if !decision.is_allowed() {
        return finish_refusal(&shared, rec, StatusCode::FORBIDDEN, decision.reason);
    }
    let addrs = match resolve_checked(&shared, &host, port).await {
        Ok(a) => a,
        Err(denied) => {
            let status = if denied.reason == Reason::UpstreamUnreachable {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::FORBIDDEN
            };
            return finish_refusal(&shared, rec, status, denied.reason);
        }
    };
    let upstream = Upstream::new(host.clone(), addrs, None, shared.limits.connect_timeout);
    let target = Target {
        host: &host,
        port,
        scheme: "http",
        default_port: 80,
    };
    forward(&shared, &upstream, target, req, rec).await
}

async fn forward(
    shared: &Arc<Shared>,
    upstream: &Upstream,
    target: Target<'_>,
    mut req: Request<Incoming>,
    mut rec: LogRecord,
) -> Response<ProxyBody> {
    rec.method = Some(req.method().to_string());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    rec.path = Some(path.clone());
    if !identity_ok(&req, target.host, target.port, target.default_port) {
        return finish_refusal(
            shared,
            rec,
            StatusCode::MISDIRECTED_REQUEST,
            Reason::IdentityMismatch,
        );
    }
    // Re-checked per request so a policy change reaches open tunnels at once.
    let decision = shared
        .policy()
        .evaluate(&shared.sandbox, target.host, target.port);
    rec.rule = decision.rule.clone();
    if !decision.is_allowed() {
        return finish_refusal(shared, rec, StatusCode::FORBIDDEN, decision.reason);
    }
    rec.decision = Verdict::Allow;
    rec.reason = decision.reason;

    let scan = shared
        .creds
        .scan(&path, req.headers(), target.host, target.port);
    let found = match scan {
        Scan::Exfiltration(name) => {
            tracing::warn!(host = %target.host, credential = %name, "sentinel sent to an unbound host; blocked");
            rec.credentials = vec![name];
            return finish_refusal(
                shared,
                rec,
                StatusCode::FORBIDDEN,
                Reason::CredentialExfiltration,
            );
        }
        Scan::Bound(found) => found,
        Scan::Clean => Vec::new(),
    };

    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let authority = authority_string(target.host, target.port, target.default_port);
    // Injection only on the TLS-intercepted path, never for cleartext or bypass.
    if !found.is_empty() && upstream.is_tls() && !decision.bypass {
        match shared.creds.inject(&found, &mut parts.headers) {
            Injected::Names(names) => rec.credentials = names,
            Injected::Unavailable(name) => {
                tracing::warn!(credential = %name, "credential has no value; not forwarding");
                rec.credentials = vec![name];
                return finish_refusal(
                    shared,
                    rec,
                    StatusCode::BAD_GATEWAY,
                    Reason::CredentialUnavailable,
                );
            }
        }
    }
    let uri = format!("{}://{}{}", target.scheme, authority, path);
    parts.uri = match uri.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return finish_refusal(shared, rec, StatusCode::BAD_REQUEST, Reason::BadRequest),
    };
    if let Ok(v) = HeaderValue::from_str(&authority) {
        parts.headers.insert(HOST, v);
    }
    let record = RecordOnDrop::new(rec, shared.log.clone());
    let body = CountingBody::new(body, record.up.clone()).boxed();
    let up_req = Request::from_parts(parts, body);

    let result = if upgrade {
        upstream.send_upgrade(up_req).await
    } else {
        upstream.send(up_req).await
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            let status = StatusCode::BAD_GATEWAY;
            record.update(|r| {
                r.decision = Verdict::Deny;
                r.reason = e.reason();
                r.status = Some(status.as_u16());
            });
            tracing::info!(host = %target.host, error = %e, "upstream failed");
            return refusal(status, e.reason());
        }
    };
    let status = resp.status();
    record.update(|r| r.status = Some(status.as_u16()));
    let injected: Vec<String> = {
        let mut names = Vec::new();
        record.update(|r| names = r.credentials.clone());
        names
    };
    if !injected.is_empty() {
        shared.creds.scrub_response(&injected, resp.headers_mut());
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let idle = shared.limits.idle_timeout;
            let record = record.clone();
            shared.spawn(async move {
                if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                    let (up, down) = splice(TokioIo::new(c), TokioIo::new(u), idle).await;
                    record
                        .up
                        .fetch_add(up, std::sync::atomic::Ordering::Relaxed);
                    record
                        .down
                        .fetch_add(down, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, super::io::empty());
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let body = LoggedBody::new(body.map_err(Into::into).boxed(), record);
    Response::from_parts(parts, body.boxed())
}
