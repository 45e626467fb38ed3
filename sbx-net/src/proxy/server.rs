//! The listener, shared state, connection limits and the outer (proxy-port) service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::config::{Limits, ProxyConfig, Resolve, SocketAddrOrIp};
use super::guard::{close_unless_switched, starts_passthrough, H1Guard};
use super::io::{idle_expired, Activity, CountingIo, ProxyBody};
use super::network::BlockedLimiter;
use super::upstream::client_configs;
use super::{forward, tunnel};
use crate::ca::CertificateAuthority;
use crate::credentials::Credentials;
use crate::error::Result;
use crate::log::PolicyLog;
use crate::policy::{canonical_ip, Host, Policy};

/// State shared by every connection of one proxy.
pub(crate) struct Shared {
    pub(crate) sandbox: String,
    policy: RwLock<Arc<Policy>>,
    pub(crate) ca: Arc<CertificateAuthority>,
    pub(crate) creds: Credentials,
    pub(crate) log: Arc<dyn PolicyLog>,
    pub(crate) resolver: Arc<dyn Resolve>,
    pub(crate) overrides: HashMap<Host, SocketAddrOrIp>,
    pub(crate) limits: Limits,
    pub(crate) tls_client: (Arc<ClientConfig>, Arc<ClientConfig>),
    /// The listener's address; `None` for a proxy fed by [`Proxy::serve_connection`] and
    /// friends only.
    pub(crate) local: Option<SocketAddr>,
    pub(crate) server_configs: Mutex<HashMap<Host, Arc<ServerConfig>>>,
    active: AtomicUsize,
    slots: Arc<Semaphore>,
    pub(crate) blocked: BlockedLimiter,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn new(config: ProxyConfig, local: Option<SocketAddr>) -> Result<Shared> {
        let tls_client = client_configs(&config)?;
        Ok(Shared {
            sandbox: config.sandbox,
            policy: RwLock::new(Arc::new(config.policy)),
            ca: config.ca,
            creds: Credentials::new(config.credentials, config.provider),
            log: config.log,
            resolver: config.resolver,
            overrides: config.overrides,
            slots: Arc::new(Semaphore::new(config.limits.max_connections)),
            limits: config.limits,
            tls_client,
            local,
            server_configs: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            blocked: BlockedLimiter::default(),
            stop: watch::channel(false).0,
        })
    }

    /// The current policy (a cheap `Arc` clone; swaps are atomic).
    pub(crate) fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Spawns a connection task that ends when the proxy is dropped.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = task => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }

    /// Runs `fut` until it finishes or the proxy is dropped.
    pub(crate) async fn until_stopped<F: std::future::Future<Output = ()>>(&self, fut: F) {
        let mut stop = self.stop.subscribe();
        tokio::select! {
            _ = fut => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    /// Whether connecting to `addr` would reach this proxy's own listener.
    pub(crate) fn is_self(&self, addr: SocketAddr) -> bool {
        let Some(local) = self.local else {
            return false;
        };
        if addr.port() != local.port() {
            return false;
        }
        let ip = canonical_ip(addr.ip());
        let local = canonical_ip(local.ip());
        ip == local || ip.is_unspecified() || (local.is_unspecified() && ip.is_loopback())
    }

    /// Takes a connection slot, or `None` when [`Limits::max_connections`] are being served.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Arc<ConnGuard>> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.active.fetch_add(1, Ordering::Relaxed);
        Some(Arc::new(ConnGuard {
            _permit: permit,
            shared: self.clone(),
        }))
    }
}

/// Holds a connection slot (and counts it) until every task serving the connection is done.
pub(crate) struct ConnGuard {
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running egress proxy.
///
/// The proxy runs on the caller's tokio runtime. Dropping it stops accepting and closes every
/// connection and tunnel it was serving.
pub struct Proxy {
    pub(super) shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("listener", &self.shared.local)
            .field("sandbox", &self.shared.sandbox)
            .field("active_connections", &self.active_connections())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy without a listener: connections are handed to it with
    /// [`Proxy::serve_connection`], [`Proxy::serve_transparent`] and [`Proxy::serve_network`]
    /// (the userspace network stack does this), and guest DNS goes through
    /// [`Proxy::resolve_for_guest`]. Building it needs no runtime; serving does (the
    /// caller's).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use sbx_net::*;
    ///
    /// # async fn run() -> sbx_net::Result<()> {
    /// let ca = Arc::new(CertificateAuthority::generate()?);
    /// let mut policy = Policy::new(Preset::DenyAll);
    /// policy.allow(&Scope::Global, "example.com")?;
    /// let proxy = Arc::new(Proxy::new(ProxyConfig::new(ca).with_policy(policy))?);
    /// // The network stack answers the guest's DNS query...
    /// if let GuestDns::Answer(ips) = proxy.resolve_for_guest("example.com").await {
    ///     // ...and later hands over the guest's direct connection to one of the addresses.
    ///     let (guest_side, proxy_side) = tokio::io::duplex(64 * 1024);
    ///     let dst = std::net::SocketAddr::new(ips[0], 443);
    ///     let names = vec!["example.com".to_string()];
    ///     tokio::spawn(async move { proxy.serve_transparent(proxy_side, dst, &names).await });
    ///     drop(guest_side);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn new(config: ProxyConfig) -> Result<Proxy> {
        Ok(Proxy {
            shared: Arc::new(Shared::new(config, None)?),
            accept: None,
        })
    }

    /// Binds `addr` and starts serving on the current tokio runtime.
    pub async fn bind(addr: SocketAddr, config: ProxyConfig) -> Result<Proxy> {
        let listener = TcpListener::bind(addr).await?;
        Self::serve(listener, config)
    }

    /// Serves on an already bound listener: [`Proxy::new`] plus an accept loop that hands
    /// every accepted connection to [`Proxy::serve_connection`]'s code path.
    pub fn serve(listener: TcpListener, config: ProxyConfig) -> Result<Proxy> {
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, Some(local))?);
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::info!(%local, sandbox = %shared.sandbox, "egress proxy listening");
        Ok(Proxy {
            shared,
            accept: Some(accept),
        })
    }

    /// The address the proxy listens on.
    ///
    /// A proxy made with [`Proxy::new`] has no listener: this returns `0.0.0.0:0` for it
    /// (see [`Proxy::listener_addr`] to tell the cases apart).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared
            .local
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The listener's address, or `None` for a proxy made with [`Proxy::new`].
    pub fn listener_addr(&self) -> Option<SocketAddr> {
        self.shared.local
    }

    /// Serves one client connection speaking the explicit-proxy protocol (`CONNECT`,
    /// absolute-form `http://`, `forward` / `forward-bypass`, injection), exactly as if `io`
    /// had been accepted from the proxy's listener; `peer` is only used in diagnostics.
    ///
    /// Returns when the connection (and a `CONNECT` tunnel on it) is done, or at once when
    /// [`Limits::max_connections`](crate::Limits) connections are being served. The future
    /// runs on the caller's task; intercepted tunnels spawn helper tasks (upstream
    /// connection drivers) on the current runtime.
    pub async fn serve_connection<I>(&self, io: I, peer: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(guard) = self.shared.admit() else {
            tracing::warn!(%peer, "connection limit reached; closing");
            return;
        };
        let shared = self.shared.clone();
        self.shared
            .until_stopped(serve_client(shared, guard, io))
            .await;
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> &str {
        self.shared.ca.cert_pem()
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.shared.policy()
    }

    /// Replaces the policy atomically; new requests and tunnels see it at once (requests
    /// inside open intercepted tunnels are re-checked per request).
    pub fn set_policy(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.shared.policy.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }

    /// Replaces the policy from JSON. On any error the running policy is kept (never fails
    /// open).
    pub fn update_policy_json(&self, json: &str) -> Result<()> {
        let policy = Policy::from_json(json)?;
        self.set_policy(policy);
        Ok(())
    }

    /// Client connections (including tunnels) currently being served.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
        // Ends every connection and tunnel task of this proxy.
        self.shared.stop.send_replace(true);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(guard) = shared.admit() else {
            tracing::warn!(%peer, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        shared.spawn(serve_client(shared.clone(), guard, stream));
    }
}

/// The `CONNECT` tunnel of a connection, started once hyper hands the connection over.
pub(crate) type TunnelSlot = Arc<Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>>;

async fn serve_client<I>(shared: Arc<Shared>, guard: Arc<ConnGuard>, stream: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tunnel: TunnelSlot = Arc::default();
    let activity = Activity::new();
    let io = CountingIo::new(
        H1Guard::new(stream, shared.limits.max_header_bytes),
        activity.clone(),
    );
    let svc_shared = shared.clone();
    let svc_guard = guard.clone();
    let svc_tunnel = tunnel.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = svc_shared.clone();
        let guard = svc_guard.clone();
        let tunnel = svc_tunnel.clone();
        async move {
            let passthrough = starts_passthrough(&req);
            let connect = req.method() == Method::CONNECT;
            let mut resp = handle_outer(shared, guard, tunnel, req).await;
            close_unless_switched(passthrough, connect, &mut resp);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout)
        .max_buf_size(shared.limits.max_header_bytes.max(8192));
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "client connection ended");
            }
        }
        _ = idle_expired(&activity, shared.limits.idle_timeout) => {
            tracing::debug!("client connection idle timeout");
            return;
        }
    }
    // A switched CONNECT: hyper has handed the connection to the tunnel.
    let started = tunnel.lock().ok().and_then(|mut t| t.take());
    if let Some(tunnel) = started {
        tunnel.await;
    }
}

async fn handle_outer(
    shared: Arc<Shared>,
    guard: Arc<ConnGuard>,
    tunnel: TunnelSlot,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        tunnel::handle_connect(shared, guard, tunnel, req).await
    } else {
        forward::handle_plain(shared, req).await
    }
}
