//! `CONNECT` tunnels: policy and address checks, then either an uninspected splice
//! (`forward-bypass`) or TLS termination with a minted leaf (`forward`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::LazyConfigAcceptor;

use super::forward::{self, TunnelCtx};
use super::guard::{close_unless_switched, starts_passthrough, H1Guard};
use super::io::{empty, idle_expired, refusal, splice, Activity, CountingIo, ProxyBody};
use super::server::{ConnGuard, Shared, TunnelSlot};
use super::upstream::{connect_tcp, resolve_checked, Upstream};
use crate::log::{LogRecord, ProxyKind, RecordType};
use crate::policy::{parse_authority, Decision, Host, Reason, Verdict};

/// Per-host TLS server configs kept before the cache is flushed.
const SERVER_CONFIG_CACHE_MAX: usize = 1024;
/// Largest ClientHello the bypass path buffers to read SNI.
const MAX_HELLO: usize = 16 * 1024;

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn status_for(reason: Reason) -> StatusCode {
    match reason {
        Reason::UpstreamUnreachable | Reason::UpstreamTls => StatusCode::BAD_GATEWAY,
        Reason::BadRequest => StatusCode::BAD_REQUEST,
        Reason::IdentityMismatch => StatusCode::MISDIRECTED_REQUEST,
        _ => StatusCode::FORBIDDEN,
    }
}

fn refuse(shared: &Shared, mut rec: LogRecord, decision: &Decision) -> Response<ProxyBody> {
    let status = status_for(decision.reason);
    rec.decision = Verdict::Deny;
    rec.reason = decision.reason;
    rec.rule = decision.rule.clone();
    rec.status = Some(status.as_u16());
    shared.log.record(&rec);
    refusal(status, decision.reason)
}

/// Handles a `CONNECT` on the proxy port.
pub(crate) async fn handle_connect(
    shared: Arc<Shared>,
    guard: Arc<ConnGuard>,
    slot: TunnelSlot,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let mut rec = LogRecord::new(&shared.sandbox, RecordType::Network, ProxyKind::Forward);
    rec.method = Some("CONNECT".into());
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    let parsed = authority.as_deref().map(parse_authority);
    let (host, port) = match parsed {
        Some(Ok((host, Some(port)))) => (host, port),
        _ => {
            rec.host = authority.unwrap_or_default().chars().take(255).collect();
            return refuse(&shared, rec, &Decision::deny(Reason::BadRequest, None));
        }
    };
    rec.host = host.to_string();
    rec.port = port;
    let decision = shared.policy().evaluate(&shared.sandbox, &host, port);
    if decision.bypass {
        rec.proxy = ProxyKind::ForwardBypass;
    }
    if !decision.is_allowed() {
        return refuse(&shared, rec, &decision);
    }
    let addrs = match resolve_checked(&shared, &host, port).await {
        Ok(a) => a,
        Err(denied) => {
            let mut denied = denied;
            denied.rule = denied.rule.or(decision.rule.clone());
            return refuse(&shared, rec, &denied);
        }
    };
    rec.rule = decision.rule.clone();
    rec.reason = decision.reason;
    rec.decision = Verdict::Allow;
    rec.status = Some(200);
    let on_upgrade = hyper::upgrade::on(req);
    // Run by the connection's task once hyper hands the connection over (after the 200).
    let tunnel = Box::pin(async move {
        let _guard = guard;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "connect upgrade failed");
                return;
            }
        };
        let io = TokioIo::new(upgraded);
        if decision.bypass {
            bypass(shared, io, host, addrs, rec).await;
        } else {
            intercept(shared, io, host, port, addrs, rec).await;
        }
    });
    if let Ok(mut slot) = slot.lock() {
        *slot = Some(tunnel);
    }
    Response::new(empty())
}

/// Reads the ClientHello (if the tunnel starts with TLS) to learn the SNI without
/// terminating. Returns the bytes read and the SNI.
async fn peek_sni<T: AsyncRead + Unpin>(
    io: &mut T,
) -> std::io::Result<(Vec<u8>, Option<String>, bool)> {
    let mut buf = Vec::new();
    let mut acceptor = Acceptor::default();
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok((buf, None, false));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[0] != 0x16 {
            // Not TLS: nothing to peek at.
            return Ok((buf, None, false));
        }
        let mut slice = &chunk[..n];
        while !slice.is_empty() {
            if acceptor.read_tls(&mut slice).is_err() {
                return Ok((buf, None, true));
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_string);
                return Ok((buf, sni, true));
            }
            Ok(None) if buf.len() < MAX_HELLO => continue,
            _ => return Ok((buf, None, true)),
        }
    }
}

/// The server config for `host` (leaf, ALPN `h2` + `http/1.1`), cached per host so repeat
/// tunnels reuse it and its TLS session cache.
fn server_config(shared: &Shared, host: &Host) -> crate::error::Result<Arc<ServerConfig>> {
    if let Some(hit) = shared
        .server_configs
        .lock()
        .ok()
        .and_then(|c| c.get(host).cloned())
    {
        return Ok(hit);
    }
    let leaf = shared.ca.leaf_for(host)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedCert(leaf)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let config = Arc::new(config);
    if let Ok(mut cache) = shared.server_configs.lock() {
        if cache.len() >= SERVER_CONFIG_CACHE_MAX {
            cache.clear();
        }
        cache.insert(host.clone(), config.clone());
    }
    Ok(config)
}

fn sni_matches(sni: &str, host: &Host) -> bool {
    Host::parse(sni).is_ok_and(|h| &h == host)
}

async fn bypass<T>(
    shared: Arc<Shared>,
    mut io: T,
    host: Host,
    addrs: Vec<SocketAddr>,
    mut rec: LogRecord,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let peeked = tokio::time::timeout(shared.limits.handshake_timeout, peek_sni(&mut io)).await;
    let (first, sni) = match peeked {
        Ok(Ok((first, sni, _))) => (first, sni),
        _ => {
            rec.reason = Reason::LimitExceeded;
            rec.decision = Verdict::Deny;
            shared.log.record(&rec);
            return;
        }
    };
    rec.sni = sni.clone();
    if let Some(sni) = &sni {
        if !sni_matches(sni, &host) {
            rec.decision = Verdict::Deny;
            rec.reason = Reason::IdentityMismatch;
            rec.status = Some(403);
            shared.log.record(&rec);
            return;
        }
    }
    let mut upstream = match connect_tcp(&addrs, shared.limits.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "bypass upstream connect failed");
            rec.decision = Verdict::Deny;
            rec.reason = Reason::UpstreamUnreachable;
            rec.status = Some(502);
            shared.log.record(&rec);
            return;
        }
    };
    if upstream.write_all(&first).await.is_err() {
        rec.reason = Reason::UpstreamUnreachable;
        shared.log.record(&rec);
        return;
    }
    let (up, down) = splice(io, upstream, shared.limits.idle_timeout).await;
    rec.bytes_up = up + first.len() as u64;
    rec.bytes_down = down;
    shared.log.record(&rec);
}

async fn intercept<T>(
    shared: Arc<Shared>,
    io: T,
    host: Host,
    port: u16,
    addrs: Vec<SocketAddr>,
    mut rec: LogRecord,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits.clone();
    let lazy = LazyConfigAcceptor::new(Acceptor::default(), io);
    let start = match tokio::time::timeout(limits.handshake_timeout, lazy).await {
        Ok(Ok(start)) => start,
        _ => {
            tracing::debug!(%host, "client tls hello failed or timed out");
            return;
        }
    };
    let sni = start.client_hello().server_name().map(str::to_string);
    if let Some(sni) = &sni {
        if !sni_matches(sni, &host) {
            rec.sni = Some(sni.clone());
            rec.decision = Verdict::Deny;
            rec.reason = Reason::IdentityMismatch;
            rec.status = Some(403);
            shared.log.record(&rec);
            return;
        }
    }
    let config = match server_config(&shared, &host) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, %host, "tls server config failed");
            return;
        }
    };
    let tls = match tokio::time::timeout(limits.handshake_timeout, start.into_stream(config)).await
    {
        Ok(Ok(tls)) => tls,
        _ => {
            tracing::info!(%host, "client tls handshake failed");
            rec.sni = sni;
            rec.decision = Verdict::Deny;
            rec.reason = Reason::ClientTls;
            shared.log.record(&rec);
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let upstream = Upstream::new(
        host.clone(),
        addrs,
        Some(shared.tls_client.clone()),
        limits.connect_timeout,
    );
    let ctx = Arc::new(TunnelCtx {
        shared: shared.clone(),
        host,
        port,
        sni,
        upstream,
    });
    let activity = Activity::new();
    let service = service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        async move {
            // Only the HTTP/1 leg has a framing guard (and `Connection` is not HTTP/2).
            let h1_passthrough = !h2 && starts_passthrough(&req);
            let connect = req.method() == http::Method::CONNECT;
            let mut resp = forward::handle_intercepted(ctx, req).await;
            close_unless_switched(h1_passthrough, connect, &mut resp);
            Ok::<_, Infallible>(resp)
        }
    });
    let served = async {
        if h2 {
            let io = TokioIo::new(CountingIo::new(tls, activity.clone()));
            let mut b = http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_h2_streams)
                .max_header_list_size(limits.max_header_bytes as u32);
            b.serve_connection(io, service).await
        } else {
            let io = TokioIo::new(CountingIo::new(
                H1Guard::new(tls, limits.max_header_bytes),
                activity.clone(),
            ));
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192));
            b.serve_connection(io, service).with_upgrades().await
        }
    };
    tokio::select! {
        res = served => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "intercepted connection ended");
            }
        }
        _ = idle_expired(&activity, limits.idle_timeout) => {
            tracing::debug!("intercepted connection idle timeout");
        }
    }
}
