//! Upstream side: resolve once, check every address, connect to the checked address, verify
//! TLS, and keep a small per-tunnel pool of HTTP/1.1 or HTTP/2 senders.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::config::ProxyConfig;
use super::io::ProxyBody;
use super::server::Shared;
use crate::error::Result;
use crate::policy::{Decision, Host, Reason};

/// Idle HTTP/1.1 senders kept per tunnel.
const MAX_IDLE_SENDERS: usize = 8;

/// Why an upstream exchange failed. Maps to 502 plus a log reason.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// TLS handshake or certificate verification failed.
    Tls(String),
    /// TCP connect or the HTTP exchange failed.
    Unreachable(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Tls(m) => write!(f, "upstream tls: {m}"),
            UpstreamError::Unreachable(m) => write!(f, "upstream unreachable: {m}"),
        }
    }
}

impl UpstreamError {
    pub(crate) fn reason(&self) -> Reason {
        match self {
            UpstreamError::Tls(_) => Reason::UpstreamTls,
            UpstreamError::Unreachable(_) => Reason::UpstreamUnreachable,
        }
    }
}

/// Builds the upstream TLS client configs (`h2` + `http/1.1`, and `http/1.1` only for
/// upgrades): system roots (falling back to the bundled Mozilla roots when the system has
/// none) unless turned off, plus configured extra roots.
pub(crate) fn client_configs(
    config: &ProxyConfig,
) -> Result<(Arc<ClientConfig>, Arc<ClientConfig>)> {
    let mut roots = RootCertStore::empty();
    if config.system_roots {
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
    }
    for root in &config.extra_roots {
        roots.add(root.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let base = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut both = base.clone();
    both.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut h1 = base;
    h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(both), Arc::new(h1)))
}

/// Resolves `host` once and checks every address. Returns the addresses to connect to, or the
/// denial. IP literals are checked as given; overrides are trusted (not classified) but may
/// never point at the proxy itself.
pub(crate) async fn resolve_checked(
    shared: &Shared,
    host: &Host,
    port: u16,
) -> std::result::Result<Vec<SocketAddr>, Decision> {
    let policy = shared.policy();
    let sandbox = &shared.sandbox;
    let addrs: Vec<SocketAddr> = if let Some(target) = shared.overrides.get(host) {
        vec![target.with_port(port)]
    } else if let Some(ip) = host.ip() {
        let sa = SocketAddr::new(ip, port);
        if let Some(denied) = policy.check_address(sandbox, ip, port) {
            return Err(denied);
        }
        vec![sa]
    } else {
        let name = host.name().unwrap_or_default();
        let answer = tokio::time::timeout(
            shared.limits.connect_timeout,
            shared.resolver.resolve(name, port),
        )
        .await;
        let ips = match answer {
            Ok(Ok(ips)) if !ips.is_empty() => ips,
            _ => return Err(Decision::deny(Reason::UpstreamUnreachable, None)),
        };
        // One bad address taints the answer: a name that resolves partly to internal space
        // is treated as an attack, not load balancing.
        for ip in &ips {
            if let Some(denied) = policy.check_address(sandbox, *ip, port) {
                return Err(denied);
            }
        }
        ips.into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    };
    if addrs.iter().any(|a| shared.is_self(*a)) {
        return Err(Decision::deny(Reason::ProxyLoop, None));
    }
    Ok(addrs)
}

/// Connects TCP to the first reachable checked address.
pub(crate) async fn connect_tcp(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> std::result::Result<TcpStream, UpstreamError> {
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connect timeout".into(),
        }
    }
    Err(UpstreamError::Unreachable(last))
}

enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

/// Upstream connections for one intercepted tunnel (or one cleartext request).
pub(crate) struct Upstream {
    host: Host,
    addrs: Vec<SocketAddr>,
    tls: Option<(Arc<ClientConfig>, Arc<ClientConfig>)>,
    timeout: Duration,
    idle: Mutex<Vec<Sender>>,
}

impl Upstream {
    pub(crate) fn new(
        host: Host,
        addrs: Vec<SocketAddr>,
        tls: Option<(Arc<ClientConfig>, Arc<ClientConfig>)>,
        timeout: Duration,
    ) -> Upstream {
        Upstream {
            host,
            addrs,
            tls,
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Whether requests go to the upstream over TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    async fn connect(&self, upgrades: bool) -> std::result::Result<Sender, UpstreamError> {
        let tcp = connect_tcp(&self.addrs, self.timeout).await?;
        let Some((both, h1_only)) = &self.tls else {
            return h1_handshake(TokioIo::new(tcp), upgrades).await;
        };
        let config = if upgrades { h1_only } else { both };
        let name: ServerName<'static> = match &self.host {
            Host::Name(n) => ServerName::try_from(n.clone())
                .map_err(|_| UpstreamError::Tls("invalid server name".into()))?,
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let tls = tokio::time::timeout(
            self.timeout,
            TlsConnector::from(config.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| UpstreamError::Tls("handshake timeout".into()))?
        .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            Ok(Sender::H2(send))
        } else {
            h1_handshake(io, upgrades).await
        }
    }

    /// Sends a request, reusing an idle connection when one is ready.
    pub(crate) async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> std::result::Result<Response<Incoming>, UpstreamError> {
        let mut req = req;
        let mut reused = self.take_ready();
        loop {
            let from_pool = reused.is_some();
            let mut sender = match reused.take() {
                Some(s) => s,
                None => self.connect(false).await?,
            };
            let result = match &mut sender {
                Sender::H1(s) => s.try_send_request(for_h1(req)).await,
                Sender::H2(s) => s.try_send_request(for_h2(req)).await,
            };
            match result {
                Ok(resp) => {
                    self.put_back(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // A pooled connection the upstream closed while idle: the request was
                    // not sent, so it is safe to try once more on a fresh connection.
                    Some(unsent) if from_pool => req = unsent,
                    _ => return Err(UpstreamError::Unreachable(e.into_error().to_string())),
                },
            }
        }
    }

    /// Sends an upgrade request (WebSocket) over a dedicated HTTP/1.1 connection.
    pub(crate) async fn send_upgrade(
        &self,
        req: Request<ProxyBody>,
    ) -> std::result::Result<Response<Incoming>, UpstreamError> {
        let Sender::H1(mut s) = self.connect(true).await? else {
            return Err(UpstreamError::Unreachable("upgrade needs http/1.1".into()));
        };
        s.send_request(for_h1(req))
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))
    }

    fn take_ready(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|s| match s {
            Sender::H1(h) => !h.is_closed(),
            Sender::H2(h) => !h.is_closed(),
        });
        let pos = idle.iter().position(|s| match s {
            Sender::H1(h) => h.is_ready(),
            Sender::H2(_) => true,
        })?;
        match &idle[pos] {
            // HTTP/2 multiplexes: hand out a clone and keep the connection listed.
            Sender::H2(h) => Some(Sender::H2(h.clone())),
            Sender::H1(_) => Some(idle.swap_remove(pos)),
        }
    }

    fn put_back(&self, sender: Sender) {
        if let Ok(mut idle) = self.idle.lock() {
            match sender {
                Sender::H2(_) => {
                    if !idle.iter().any(|s| matches!(s, Sender::H2(_))) {
                        idle.push(sender);
                    }
                }
                Sender::H1(_) if idle.len() < MAX_IDLE_SENDERS => idle.push(sender),
                Sender::H1(_) => {}
            }
        }
    }
}

async fn h1_handshake<T>(
    io: TokioIo<T>,
    upgrades: bool,
) -> std::result::Result<Sender, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let res = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "upstream h1 connection ended");
        }
    });
    Ok(Sender::H1(send))
}

/// HTTP/2: the authority travels in the URI (`:authority`), not in `Host`.
fn for_h2(mut req: Request<ProxyBody>) -> Request<ProxyBody> {
    *req.version_mut() = http::Version::HTTP_2;
    req.headers_mut().remove(http::header::HOST);
    req
}

/// HTTP/1.1 to an origin server: origin-form request target, `Host` header kept.
fn for_h1(mut req: Request<ProxyBody>) -> Request<ProxyBody> {
    *req.version_mut() = http::Version::HTTP_11;
    let origin = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if let Ok(uri) = origin.parse() {
        *req.uri_mut() = uri;
    }
    req
}
