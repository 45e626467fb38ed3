//! Small HTTPS requests on loopback, in one run: direct to the upstream; through the sbx-net
//! proxy as `forward-bypass` (spliced TLS); through the proxy as `forward` (TLS terminated,
//! sentinel swapped for a secret, re-encrypted upstream); and through `mitmdump` (mitmproxy)
//! doing the same interception and header rewrite with an addon.
//!
//! For each path: median and p99 latency of sequential requests on one keep-alive
//! HTTP/1.1 connection, latency added over direct, and requests per second with concurrent
//! connections. Ratios to mitmproxy are printed at the end. Everything listens on 127.0.0.1.
//! If `mitmdump` is not on PATH (`pip install mitmproxy`) the bench says why and runs the rest.
//!
//! `SBX_BENCH_PROXY_REQUESTS` (default 2000) sequential requests per path,
//! `SBX_BENCH_PROXY_SECONDS` (default 3) per throughput run, `SBX_BENCH_PROXY_CONNS` (default 8)
//! concurrent connections.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
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
use sbx_benches::{median, percentile};
use sbx_net::{
    CertificateAuthority, Credential, Policy, Preset, Proxy, ProxyConfig, Scope, Sentinel,
    SocketAddrOrIp, StaticCredentials,
};
use secrecy::SecretString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SECRET: &str = "ghp_benchSECRETvalue0123456789abcdefghij";
type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct Pki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    leaf: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
}

fn pki() -> Result<Pki, BoxError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    // Distinct subject names: OpenSSL (mitmproxy) takes a leaf whose subject equals its
    // issuer for a self-signed certificate.
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "sbx proxy bench upstream CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "bench.test");
    leaf.subject_alt_names = vec![
        SanType::DnsName("bench.test".try_into()?),
        SanType::DnsName("bypass.test".try_into()?),
        SanType::IpAddress("127.0.0.1".parse()?),
    ];
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Pki {
        ca_der: ca_cert.der().clone(),
        ca_pem: ca_cert.pem(),
        leaf: (
            vec![cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ),
    })
}

/// The upstream: answers a small body; counts requests that carried the real secret.
async fn upstream(pki: &Pki, injected: Arc<AtomicUsize>) -> Result<SocketAddr, BoxError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(pki.leaf.0.clone(), pki.leaf.1.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let injected = injected.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = service_fn(move |req: Request<Incoming>| {
                    let injected = injected.clone();
                    async move {
                        let auth = req.headers().get("authorization");
                        if auth.is_some_and(|v| v.as_bytes().ends_with(SECRET.as_bytes())) {
                            injected.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"{\"ok\":true,\"bench\":\"small response body for the proxy bench\"}",
                        ))))
                    }
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    Ok(addr)
}

#[derive(Clone)]
struct Path {
    name: &'static str,
    /// `None`: connect straight to the upstream.
    proxy: Option<SocketAddr>,
    /// CONNECT authority and TLS server name.
    connect: String,
    sni: String,
    root: CertificateDer<'static>,
    auth: Option<String>,
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::Error::other("proxy closed during CONNECT"));
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn open(path: &Path, upstream: SocketAddr) -> Result<Sender, BoxError> {
    let mut tcp = TcpStream::connect(path.proxy.unwrap_or(upstream)).await?;
    tcp.set_nodelay(true)?;
    if path.proxy.is_some() {
        let req = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", path.connect);
        tcp.write_all(req.as_bytes()).await?;
        let head = read_head(&mut tcp).await?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(format!("{}: CONNECT refused: {}", path.name, head.trim()).into());
        }
    }
    let mut roots = RootCertStore::empty();
    roots.add(path.root.clone())?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(path.sni.clone())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn request(send: &mut Sender, path: &Path) -> Result<(), BoxError> {
    send.ready().await?;
    let mut b = Request::get("/small").header("host", &path.connect);
    if let Some(auth) = &path.auth {
        b = b.header("authorization", auth);
    }
    let resp = send.send_request(b.body(Full::new(Bytes::new()))?).await?;
    if resp.status() != 200 {
        return Err(format!("{}: status {}", path.name, resp.status()).into());
    }
    resp.into_body().collect().await?;
    Ok(())
}

struct Result_ {
    name: &'static str,
    median: Duration,
    p99: Duration,
    rps: f64,
}

async fn measure(path: &Path, upstream: SocketAddr) -> Result<Result_, BoxError> {
    let n = env_num("SBX_BENCH_PROXY_REQUESTS", 2000) as usize;
    let mut send = open(path, upstream).await?;
    for _ in 0..(n / 10).max(20) {
        request(&mut send, path).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        request(&mut send, path).await?;
        samples.push(t.elapsed());
    }
    drop(send);

    let conns = env_num("SBX_BENCH_PROXY_CONNS", 8) as usize;
    let secs = env_num("SBX_BENCH_PROXY_SECONDS", 3);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let path = path.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut send = open(&path, upstream).await?;
            while Instant::now() < deadline {
                request(&mut send, &path).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, BoxError>(())
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await??;
    }
    let rps = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    Ok(Result_ {
        name: path.name,
        median: median(&samples),
        p99: percentile(&samples, 99.0),
        rps,
    })
}

struct Mitm {
    child: Child,
    dir: std::path::PathBuf,
    addr: SocketAddr,
    ca: CertificateDer<'static>,
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ADDON: &str = r#"
import os
SENTINEL = os.environ["SBX_BENCH_SENTINEL"]
SECRET = os.environ["SBX_BENCH_SECRET"]

def request(flow):
    for k, v in list(flow.request.headers.items()):
        if SENTINEL in v:
            flow.request.headers[k] = v.replace(SENTINEL, SECRET)
"#;

fn log_file(dir: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("mitmdump.log"))
        .map_err(|e| e.to_string())
}

async fn start_mitm(pki: &Pki, sentinel: &str) -> Result<Mitm, String> {
    let which = Command::new("sh")
        .args(["-c", "command -v mitmdump"])
        .output()
        .map_err(|e| e.to_string())?;
    if !which.status.success() {
        return Err("mitmdump not found on PATH (pip install mitmproxy)".into());
    }
    let dir = std::env::temp_dir().join(format!("sbx-bench-mitm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("addon.py"), ADDON).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("upstream-ca.pem"), &pki.ca_pem).map_err(|e| e.to_string())?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    let child = Command::new("mitmdump")
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .arg("--set")
        .arg(format!("confdir={}", dir.display()))
        .arg("--set")
        .arg(format!(
            "ssl_verify_upstream_trusted_ca={}",
            dir.join("upstream-ca.pem").display()
        ))
        .arg("-s")
        .arg(dir.join("addon.py"))
        .env("SBX_BENCH_SENTINEL", sentinel)
        .env("SBX_BENCH_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(log_file(&dir)?)
        .stderr(log_file(&dir)?)
        .spawn()
        .map_err(|e| format!("cannot start mitmdump: {e}"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut mitm = Mitm {
        child,
        dir: dir.clone(),
        addr,
        ca: CertificateDer::from(Vec::new()),
    };
    let start = Instant::now();
    loop {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("mitmdump did not start listening within 30 s".into());
        }
        if let Ok(Some(status)) = mitm.child.try_wait() {
            return Err(format!("mitmdump exited: {status}"));
        }
        if TcpStream::connect(addr).await.is_ok() && dir.join("mitmproxy-ca-cert.pem").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pem = std::fs::read(dir.join("mitmproxy-ca-cert.pem")).map_err(|e| e.to_string())?;
    use rustls::pki_types::pem::PemObject;
    mitm.ca = CertificateDer::from_pem_slice(&pem).map_err(|e| e.to_string())?;
    Ok(mitm)
}

async fn run() -> Result<(), BoxError> {
    let pki = pki()?;
    let injected = Arc::new(AtomicUsize::new(0));
    let up = upstream(&pki, injected.clone()).await?;

    let sentinel = Sentinel::github();
    let mut policy = Policy::new(Preset::DenyAll);
    policy.allow(&Scope::Global, "bench.test")?;
    policy.bypass(&Scope::Global, "bypass.test")?;
    let mut store = StaticCredentials::new();
    store.insert("github", SecretString::from(SECRET));
    let ca = Arc::new(CertificateAuthority::generate()?);
    let config = ProxyConfig::new(ca.clone())
        .with_policy(policy)
        .with_system_roots(false)
        .with_upstream_root(pki.ca_der.clone())
        .with_override("bench.test", SocketAddrOrIp::Ip("127.0.0.1".parse()?))?
        .with_override("bypass.test", SocketAddrOrIp::Ip("127.0.0.1".parse()?))?
        .with_credential(Credential::new(
            "github",
            sentinel.clone(),
            &["bench.test"],
        )?)
        .with_provider(Arc::new(store));
    let proxy = Proxy::bind("127.0.0.1:0".parse()?, config).await?;
    let auth = Some(format!("Bearer {sentinel}"));
    let port = up.port();

    let mut paths = vec![
        Path {
            name: "direct",
            proxy: None,
            connect: format!("bench.test:{port}"),
            sni: "bench.test".into(),
            root: pki.ca_der.clone(),
            auth: Some(format!("Bearer {SECRET}")),
        },
        Path {
            name: "sbx forward-bypass",
            proxy: Some(proxy.local_addr()),
            connect: format!("bypass.test:{port}"),
            sni: "bypass.test".into(),
            root: pki.ca_der.clone(),
            auth: Some(format!("Bearer {SECRET}")),
        },
        Path {
            name: "sbx forward+inject",
            proxy: Some(proxy.local_addr()),
            connect: format!("bench.test:{port}"),
            sni: "bench.test".into(),
            root: ca.cert_der().clone(),
            auth: auth.clone(),
        },
    ];
    let mitm = match start_mitm(&pki, sentinel.as_str()).await {
        Ok(m) => {
            paths.push(Path {
                name: "mitmproxy+inject",
                proxy: Some(m.addr),
                connect: format!("127.0.0.1:{port}"),
                sni: "127.0.0.1".into(),
                root: m.ca.clone(),
                auth: auth.clone(),
            });
            Some(m)
        }
        Err(why) => {
            println!("mitmproxy: skipped: {why}");
            None
        }
    };

    let mut results = Vec::new();
    for path in &paths {
        let before = injected.load(Ordering::Relaxed);
        let r = match measure(path, up).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(m) = &mitm {
                    let log =
                        std::fs::read_to_string(m.dir.join("mitmdump.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    eprintln!(
                        "mitmdump log (last lines, newest first):\n{}",
                        tail.join("\n")
                    );
                }
                return Err(e);
            }
        };
        let swapped = injected.load(Ordering::Relaxed) - before;
        if path
            .auth
            .as_deref()
            .is_some_and(|a| a.contains(sentinel.as_str()))
            && swapped == 0
        {
            return Err(format!("{}: the upstream never saw the secret", path.name).into());
        }
        results.push(r);
    }
    drop(mitm);

    let direct = results[0].median;
    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>12} {:>10}",
        "path (small HTTPS GET)", "median", "p99", "added (med)", "req/s"
    );
    for r in &results {
        let added = r.median.saturating_sub(direct);
        println!(
            "{:<22} {:>8.0}us {:>8.0}us {:>10.0}us {:>10.0}",
            r.name,
            r.median.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            added.as_secs_f64() * 1e6,
            r.rps
        );
    }
    if let Some(m) = results.iter().find(|r| r.name.starts_with("mitmproxy")) {
        let fwd = &results[2];
        let m_added = m.median.saturating_sub(direct).as_secs_f64();
        let f_added = fwd.median.saturating_sub(direct).as_secs_f64().max(1e-6);
        println!();
        println!(
            "sbx forward+inject vs mitmproxy: {:.1}x the requests/s, {:.1}x less added median latency",
            fwd.rps / m.rps,
            m_added / f_added
        );
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("proxy bench failed: {e}");
        std::process::exit(1);
    }
}
