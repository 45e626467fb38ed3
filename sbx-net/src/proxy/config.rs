//! Proxy configuration: policy, CA, credentials, log, resolution and limits.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::ca::CertificateAuthority;
use crate::credentials::{Credential, CredentialProvider};
use crate::error::{Error, Result};
use crate::log::{NoLog, PolicyLog};
use crate::policy::{Host, Policy, Preset};

/// A boxed future returned by [`Resolve::resolve`].
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// DNS resolution for destinations without an override (and for the guest's own queries,
/// [`Proxy::resolve_for_guest`](crate::Proxy::resolve_for_guest), where an error of kind
/// [`io::ErrorKind::NotFound`] means "no such name"). Answers are untrusted: every address
/// is classified and checked against the policy, and the proxy connects only to an address it
/// checked, resolving once per request or tunnel.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves a (normalised, punycode) host name.
    fn resolve<'a>(&'a self, name: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, name: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move {
            match tokio::net::lookup_host((name, port)).await {
                Ok(addrs) => Ok(addrs.map(|sa| sa.ip()).collect()),
                Err(e) if is_no_such_name(&e) => Err(io::Error::new(io::ErrorKind::NotFound, e)),
                Err(e) => Err(e),
            }
        })
    }
}

/// Whether a `getaddrinfo` error means the name has no addresses (`EAI_NONAME`,
/// `EAI_NODATA`) rather than a failed lookup; std reports both only through the message.
fn is_no_such_name(e: &io::Error) -> bool {
    let msg = e.to_string();
    msg.contains("Name or service not known")
        || msg.contains("No address associated with hostname")
        || msg.contains("nodename nor servname provided")
}

/// Limits that keep a slow or hostile client from exhausting the proxy.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Client connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Largest request head (request line plus headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Time allowed to receive a request head.
    pub header_timeout: Duration,
    /// Time allowed for a TLS handshake (either leg) or the first tunnel bytes.
    pub handshake_timeout: Duration,
    /// A tunnel or connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed to resolve and connect to an upstream.
    pub connect_timeout: Duration,
    /// HTTP/2 streams per client connection.
    pub max_h2_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_h2_streams: 100,
        }
    }
}

/// Everything a [`Proxy`](crate::Proxy) needs. Build with [`ProxyConfig::new`] and the
/// `with_*` methods.
#[non_exhaustive]
pub struct ProxyConfig {
    /// Sandbox name used for per-sandbox rules and in log records.
    pub sandbox: String,
    /// The starting policy (swap it later with [`Proxy::set_policy`](crate::Proxy::set_policy)).
    pub policy: Policy,
    /// The CA that signs leaves for intercepted hosts.
    pub ca: Arc<CertificateAuthority>,
    /// Credentials to inject.
    pub credentials: Vec<Credential>,
    /// Where secret values come from.
    pub provider: Option<Arc<dyn CredentialProvider>>,
    /// Where policy-log records go.
    pub log: Arc<dyn PolicyLog>,
    /// Resolver for names without an override.
    pub resolver: Arc<dyn Resolve>,
    /// Trusted `host -> address` overrides (like curl's `--resolve`); a port, when given,
    /// replaces the requested port.
    pub overrides: HashMap<Host, SocketAddrOrIp>,
    /// Trust the system's root certificates for upstream TLS.
    pub system_roots: bool,
    /// Extra roots trusted for upstream TLS.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Limits and timeouts.
    pub limits: Limits,
}

/// An override target: an address, optionally with a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketAddrOrIp {
    /// Connect to this address on the requested port.
    Ip(IpAddr),
    /// Connect to this address and port.
    Socket(SocketAddr),
}

impl SocketAddrOrIp {
    pub(crate) fn with_port(self, port: u16) -> SocketAddr {
        match self {
            SocketAddrOrIp::Ip(ip) => SocketAddr::new(ip, port),
            SocketAddrOrIp::Socket(sa) => sa,
        }
    }
}

impl std::str::FromStr for SocketAddrOrIp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(SocketAddrOrIp::Socket(sa));
        }
        let trimmed = s.trim_start_matches('[').trim_end_matches(']');
        trimmed
            .parse::<IpAddr>()
            .map(SocketAddrOrIp::Ip)
            .map_err(|_| Error::InvalidHost {
                host: s.chars().take(80).collect(),
                why: "override target must be an ip or ip:port",
            })
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("sandbox", &self.sandbox)
            .field("policy", &self.policy)
            .field("credentials", &self.credentials)
            .field("overrides", &self.overrides)
            .field("system_roots", &self.system_roots)
            .field("extra_roots", &self.extra_roots.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// A config with the `deny-all` preset, no credentials, no log, the system resolver and
    /// system roots.
    pub fn new(ca: Arc<CertificateAuthority>) -> ProxyConfig {
        ProxyConfig {
            sandbox: "default".into(),
            policy: Policy::new(Preset::DenyAll),
            ca,
            credentials: Vec::new(),
            provider: None,
            log: Arc::new(NoLog),
            resolver: Arc::new(SystemResolver),
            overrides: HashMap::new(),
            system_roots: true,
            extra_roots: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// Sets the sandbox name.
    pub fn with_sandbox(mut self, name: impl Into<String>) -> Self {
        self.sandbox = name.into();
        self
    }

    /// Sets the policy.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Adds a credential to inject.
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credentials.push(credential);
        self
    }

    /// Sets the credential provider.
    pub fn with_provider(mut self, provider: Arc<dyn CredentialProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Sets the policy log.
    pub fn with_log(mut self, log: Arc<dyn PolicyLog>) -> Self {
        self.log = log;
        self
    }

    /// Sets the resolver for names without an override.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Points `host` at `target` (trusted configuration: the address is not classified).
    pub fn with_override(mut self, host: &str, target: SocketAddrOrIp) -> Result<Self> {
        self.overrides.insert(Host::parse(host)?, target);
        Ok(self)
    }

    /// Whether to trust the system roots for upstream TLS (default: yes).
    pub fn with_system_roots(mut self, yes: bool) -> Self {
        self.system_roots = yes;
        self
    }

    /// Trusts an extra root certificate for upstream TLS.
    pub fn with_upstream_root(mut self, root: CertificateDer<'static>) -> Self {
        self.extra_roots.push(root);
        self
    }

    /// Trusts every certificate in a PEM blob as an upstream root.
    pub fn with_upstream_roots_pem(mut self, pem: &[u8]) -> Result<Self> {
        use rustls_pki_types::pem::PemObject;
        let before = self.extra_roots.len();
        for cert in CertificateDer::pem_slice_iter(pem) {
            self.extra_roots
                .push(cert.map_err(|_| Error::InvalidPem("unreadable certificate"))?);
        }
        if self.extra_roots.len() == before {
            return Err(Error::InvalidPem("no certificate"));
        }
        Ok(self)
    }

    /// Sets limits and timeouts.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}
