//! Shared helpers for sbx-net integration tests: a test PKI, local upstream servers (TLS with
//! HTTP/1.1 and HTTP/2, and cleartext), a proxy launcher and clients that speak through it.
//! Everything listens on 127.0.0.1 only.
#![allow(dead_code, clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sbx_net::{CertificateAuthority, MemoryLog, Policy, Proxy, ProxyConfig, SocketAddrOrIp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA for upstream servers (distinct from the proxy's interception CA).
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    pub ca_der: CertificateDer<'static>,
    pub ca_pem: String,
}

pub type CertChain = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

fn sans(names: &[&str]) -> Vec<SanType> {
    names
        .iter()
        .map(|n| match n.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).to_string().try_into().unwrap()),
        })
        .collect()
}

impl TestPki {
    pub fn new() -> TestPki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sbx-net test upstream CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestPki {
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` signed by this CA; `expired` makes it valid only in the past.
    pub fn leaf(&self, names: &[&str], expired: bool) -> CertChain {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans(names);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (vec![cert.der().clone(), self.ca_der.clone()], key_der(&key))
    }

    /// A self-signed leaf (not chained to any trusted root).
    pub fn self_signed(names: &[&str]) -> CertChain {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans(names);
        let cert = params.self_signed(&key).unwrap();
        (vec![cert.der().clone()], key_der(&key))
    }
}

/// What an upstream saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub authority: Option<String>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted (even those whose TLS handshake failed).
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

async fn answer(mut req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<Full<Bytes>> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    if req.headers().contains_key("upgrade") {
        // Echo server on the upgraded connection (a stand-in for a WebSocket peer).
        let on_upgrade = hyper::upgrade::on(&mut req);
        seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            path: path.clone(),
            version: req.version(),
            headers: req.headers().clone(),
            authority: None,
        });
        tokio::spawn(async move {
            if let Ok(up) = on_upgrade.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        resp.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        return resp;
    }
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        version: req.version(),
        headers: req.headers().clone(),
        authority: req.uri().authority().map(|a| a.to_string()),
    });
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(format!(
        "upstream saw {path} with {} body bytes",
        body.len()
    ))));
    if let Some(target) = path.strip_prefix("/redirect?to=") {
        *resp.status_mut() = StatusCode::FOUND;
        resp.headers_mut()
            .insert("location", target.parse().unwrap());
    }
    resp
}

/// A TLS upstream answering HTTP/1.1 or HTTP/2 (by ALPN) on 127.0.0.1 (or `ip`).
pub async fn tls_upstream_on(ip: &str, chain: CertChain, alpn: &[&[u8]]) -> Upstream {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain.0, chain.1)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    serve_tls(listener, config)
}

/// A TLS upstream (HTTP/1.1 and HTTP/2) on an already bound listener.
pub async fn tls_upstream_from(listener: TcpListener, chain: CertChain) -> Upstream {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain.0, chain.1)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    serve_tls(listener, config)
}

fn serve_tls(listener: TcpListener, config: ServerConfig) -> Upstream {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let (seen2, accepted2) = (seen.clone(), accepted.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            accepted2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = service_fn(move |req| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(answer(req, seen).await) }
                });
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    Upstream {
        addr,
        seen,
        accepted,
        task,
    }
}

pub async fn tls_upstream(chain: CertChain) -> Upstream {
    tls_upstream_on("127.0.0.1", chain, &[b"h2", b"http/1.1"]).await
}

/// A cleartext HTTP/1.1 upstream.
pub async fn plain_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let (seen2, accepted2) = (seen.clone(), accepted.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            accepted2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = seen2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(answer(req, seen).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        seen,
        accepted,
        task,
    }
}

pub struct TestProxy {
    pub proxy: Proxy,
    pub log: Arc<MemoryLog>,
    pub ca: Arc<CertificateAuthority>,
}

impl TestProxy {
    pub fn addr(&self) -> SocketAddr {
        self.proxy.local_addr()
    }
    pub fn records(&self) -> Vec<sbx_net::LogRecord> {
        self.log.records()
    }
}

/// Starts a proxy trusting `pki` for upstream TLS (no system roots), logging in memory, with
/// `names` overridden to 127.0.0.1.
pub async fn start_proxy(
    pki: &TestPki,
    policy: Policy,
    names: &[&str],
    customize: impl FnOnce(ProxyConfig) -> ProxyConfig,
) -> TestProxy {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let log = Arc::new(MemoryLog::new());
    let mut config = ProxyConfig::new(ca.clone())
        .with_sandbox("test")
        .with_policy(policy)
        .with_log(log.clone())
        .with_system_roots(false)
        .with_upstream_root(pki.ca_der.clone());
    for n in names {
        config = config
            .with_override(n, SocketAddrOrIp::Ip("127.0.0.1".parse().unwrap()))
            .unwrap();
    }
    let config = customize(config);
    let proxy = Proxy::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    TestProxy { proxy, log, ca }
}

/// Opens a CONNECT tunnel; returns the proxy's status and the stream.
pub async fn connect(proxy: SocketAddr, authority: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, s)
}

/// Reads an HTTP response head byte by byte (so no tunnel bytes are consumed).
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A TLS client config trusting `root` with the given ALPN.
pub fn client_config(root: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

pub async fn tls_connect<S>(
    io: S,
    sni: &str,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(client_config(root, alpn))
        .connect(name, io)
        .await
}

/// A simple response for assertions.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub version: Version,
}

impl Got {
    pub fn reason(&self) -> Option<&str> {
        self.headers
            .get("x-sbx-reason")
            .and_then(|v| v.to_str().ok())
    }
}

async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        version: parts.version,
    }
}

/// Sends requests over an established (TLS) stream with HTTP/1.1 or HTTP/2.
pub async fn send_many<S>(
    io: S,
    h2: bool,
    reqs: Vec<Request<Full<Bytes>>>,
) -> Vec<Result<Got, String>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut out = Vec::new();
    if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        for req in reqs {
            out.push(match send.send_request(req).await {
                Ok(r) => Ok(collect(r).await),
                Err(e) => Err(e.to_string()),
            });
        }
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        for req in reqs {
            if send.ready().await.is_err() {
                out.push(Err("connection closed".into()));
                continue;
            }
            out.push(match send.send_request(req).await {
                Ok(r) => Ok(collect(r).await),
                Err(e) => Err(e.to_string()),
            });
        }
    }
    out
}

pub fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// One HTTPS GET through the proxy: CONNECT `host:port`, TLS with SNI `host` trusting the
/// proxy CA, then a request with `Host: host:port`.
pub async fn https_get(
    tp: &TestProxy,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    h2: bool,
) -> Result<Got, String> {
    let authority = format!("{host}:{port}");
    let (status, s) = connect(tp.addr(), &authority).await;
    if status != 200 {
        return Err(format!("connect status {status}"));
    }
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = tls_connect(s, host, tp.ca.cert_der(), alpn)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let uri = if h2 {
        format!("https://{authority}{path}")
    } else {
        path.to_string()
    };
    let mut hs: Vec<(&str, &str)> = headers.to_vec();
    if !h2 && !hs.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        hs.push(("host", &authority));
    }
    let mut req = get(&uri, &hs);
    if h2 {
        *req.version_mut() = Version::HTTP_2;
    }
    send_many(tls, h2, vec![req]).await.remove(0)
}

/// A cleartext absolute-form request through the proxy.
pub async fn http_get(tp: &TestProxy, url: &str, headers: &[(&str, &str)]) -> Got {
    let s = TcpStream::connect(tp.addr()).await.unwrap();
    let uri: http::Uri = url.parse().unwrap();
    let mut hs: Vec<(&str, &str)> = headers.to_vec();
    let host = uri.authority().unwrap().to_string();
    if !hs.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        hs.push(("host", &host));
    }
    let req = get(url, &hs);
    send_many(s, false, vec![req]).await.remove(0).unwrap()
}

/// Sends raw bytes to the proxy and returns everything it answers until it closes (or 3 s).
pub async fn raw_exchange(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs curl (blocking, in a thread) and returns (exit code, stdout, stderr).
pub async fn curl(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// Writes a PEM to a temp file and returns its path.
pub fn write_temp(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sbx-net-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
