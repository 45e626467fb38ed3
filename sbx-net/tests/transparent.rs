//! The entry points the userspace network stack feeds: transparent TLS and HTTP
//! (`serve_transparent`), other TCP (`serve_network`), dropped flows (`log_blocked_network`)
//! and the explicit proxy over any stream (`serve_connection`). Real sockets on loopback, real
//! TLS; the guest side of each flow is one end of a `tokio::io::duplex`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sbx_net::{
    BlockedFlow, CertificateAuthority, Credential, FlowProtocol, Limits, LogRecord, MemoryLog,
    Policy, Preset, Proxy, ProxyConfig, ProxyKind, Reason, RecordType, Scope, Sentinel,
    SocketAddrOrIp, StaticCredentials, Verdict,
};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const SECRET: &str = "ghp_CANARYcanary0123456789CANARYcanary01";

struct Stack {
    proxy: Arc<Proxy>,
    log: Arc<MemoryLog>,
    ca: Arc<CertificateAuthority>,
}

impl Stack {
    fn records(&self) -> Vec<LogRecord> {
        self.log.records()
    }

    /// Hands a new guest connection to `serve_transparent`; returns the guest's end.
    fn transparent(&self, dst: SocketAddr, names: &[&str], buf: usize) -> Flow {
        let (guest, host) = tokio::io::duplex(buf);
        let proxy = self.proxy.clone();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let task = tokio::spawn(async move { proxy.serve_transparent(host, dst, &names).await });
        Flow { guest, task }
    }

    fn network(&self, dst: SocketAddr) -> Flow {
        let (guest, host) = tokio::io::duplex(64 * 1024);
        let proxy = self.proxy.clone();
        let task = tokio::spawn(async move { proxy.serve_network(host, dst).await });
        Flow { guest, task }
    }
}

struct Flow {
    guest: DuplexStream,
    task: JoinHandle<()>,
}

/// Waits for the flow's task (the record is written when it returns).
async fn finished(task: JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("flow ends")
        .unwrap();
}

fn policy(allow: &[&str]) -> Policy {
    let mut p = Policy::new(Preset::DenyAll);
    for r in allow {
        p.allow(&Scope::Global, r).unwrap();
    }
    p
}

/// A listener-less proxy trusting `pki` upstream, with `names` overridden to 127.0.0.1.
fn stack(
    pki: &TestPki,
    policy: Policy,
    names: &[&str],
    customize: impl FnOnce(ProxyConfig) -> ProxyConfig,
) -> Stack {
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
    let proxy = Proxy::new(customize(config)).unwrap();
    assert_eq!(proxy.listener_addr(), None);
    Stack {
        proxy: Arc::new(proxy),
        log,
        ca,
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn read_all(s: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn transparent_tls_is_spliced_to_the_upstream_which_the_client_verifies() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let st = stack(&pki, policy(&["api.test"]), &["api.test"], |c| c);
    let flow = st.transparent(local(up.port()), &["other.test", "API.test."], 64 * 1024);
    // The client trusts only the upstream's CA: the handshake succeeds only if the bytes
    // reached the upstream untouched (the sandbox CA would fail verification).
    let tls = tls_connect(flow.guest, "api.test", &pki.ca_der, &[b"http/1.1"])
        .await
        .expect("handshake with the real upstream");
    let got = send_many(tls, false, vec![get("/hello", &[("host", "api.test")])]).await;
    let got = got.into_iter().next().unwrap().unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "upstream saw /hello with 0 body bytes");
    finished(flow.task).await;
    let recs = st.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(
        (r.kind, r.proxy, r.decision, r.reason),
        (
            RecordType::Network,
            ProxyKind::Transparent,
            Verdict::Allow,
            Reason::DomainAllowed
        )
    );
    assert_eq!((r.host.as_str(), r.port), ("api.test", up.port()));
    assert_eq!(r.sni.as_deref(), Some("api.test"));
    assert_eq!(r.rule.as_deref(), Some("global:allow api.test"));
    assert!(r.bytes_up > 200 && r.bytes_down > 200, "{r:?}");

    // The same flow with the sandbox CA as the only root fails: nothing was terminated.
    let flow = st.transparent(local(up.port()), &["api.test"], 64 * 1024);
    assert!(
        tls_connect(flow.guest, "api.test", st.ca.cert_der(), &[b"http/1.1"])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_client_hello_arriving_one_byte_per_read_is_understood() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let st = stack(&pki, policy(&["api.test"]), &["api.test"], |c| c);
    // A one-byte pipe: every read on the proxy side returns a single byte.
    let flow = st.transparent(local(up.port()), &["api.test"], 1);
    let tls = tls_connect(flow.guest, "api.test", &pki.ca_der, &[b"h2"])
        .await
        .expect("handshake through a one-byte pipe");
    let got = send_many(tls, true, vec![get("https://api.test/split", &[])]).await;
    assert_eq!(got.into_iter().next().unwrap().unwrap().status, 200);
    finished(flow.task).await;
    assert_eq!(st.records()[0].decision, Verdict::Allow);
    assert_eq!(up.seen()[0].path, "/split");
}

#[tokio::test]
async fn sni_not_among_the_resolved_names_is_blocked_before_any_upstream_contact() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test", "evil.test"], false)).await;
    let st = stack(&pki, policy(&["**"]), &["api.test", "evil.test"], |c| c);
    for names in [&["api.test"][..], &[]] {
        let flow = st.transparent(local(up.port()), names, 64 * 1024);
        let res = tls_connect(flow.guest, "evil.test", &pki.ca_der, &[b"http/1.1"]).await;
        assert!(res.is_err());
        finished(flow.task).await;
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
    let recs = st.records();
    assert_eq!(recs.len(), 2);
    for r in recs {
        assert_eq!((r.decision, r.reason), (Verdict::Deny, Reason::DnsMismatch));
        assert_eq!(r.host, "evil.test");
        assert_eq!(r.sni.as_deref(), Some("evil.test"));
    }
}

#[tokio::test]
async fn names_the_policy_denies_are_blocked_and_recorded() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test", "no.test", "port.test"], false)).await;
    let mut p = policy(&["*.test", "port.test:1"]);
    p.deny(&Scope::Sandbox("test".into()), "no.test").unwrap();
    let mut p2 = policy(&["port.test:1"]);
    p2.deny(&Scope::Sandbox("test".into()), "no.test").unwrap();
    let st = stack(&pki, p, &["no.test", "port.test"], |c| c);
    let flow = st.transparent(local(up.port()), &["no.test"], 64 * 1024);
    assert!(
        tls_connect(flow.guest, "no.test", &pki.ca_der, &[b"http/1.1"])
            .await
            .is_err()
    );
    finished(flow.task).await;
    // Allowed on another port only.
    st.proxy.set_policy(p2);
    let flow = st.transparent(local(up.port()), &["port.test"], 64 * 1024);
    assert!(
        tls_connect(flow.guest, "port.test", &pki.ca_der, &[b"http/1.1"])
            .await
            .is_err()
    );
    finished(flow.task).await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
    let recs = st.records();
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[0].decision, recs[0].reason),
        (Verdict::Deny, Reason::DomainBlocked)
    );
    assert_eq!(recs[0].rule.as_deref(), Some("sandbox/test:deny no.test"));
    assert_eq!(
        (recs[1].decision, recs[1].reason),
        (Verdict::Deny, Reason::DefaultDeny)
    );
    assert_eq!(recs[1].port, up.port());
}

#[tokio::test]
async fn plain_http_is_routed_by_its_host_header() {
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let st = stack(&pki, policy(&["web.test"]), &["web.test"], |c| c);
    let mut flow = st.transparent(local(plain.port()), &["web.test"], 64 * 1024);
    flow.guest
        .write_all(b"GET /p?q=1 HTTP/1.1\r\nHost: WEB.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let out = read_all(&mut flow.guest).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.ends_with("upstream saw /p?q=1 with 0 body bytes"),
        "{out}"
    );
    drop(flow.guest);
    finished(flow.task).await;
    let r = &st.records()[0];
    assert_eq!(
        (r.kind, r.proxy, r.decision),
        (RecordType::Http, ProxyKind::Transparent, Verdict::Allow)
    );
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.path.as_deref(), Some("/p?q=1"));
    assert_eq!((r.host.as_str(), r.port), ("web.test", plain.port()));
    assert!(r.bytes_up > 40 && r.bytes_down > 40, "{r:?}");

    // An explicit port must be the one connected to; no Host at all has no server name.
    let heads = [
        format!(
            "GET / HTTP/1.1\r\nHost: web.test:{}\r\n\r\n",
            plain.port() ^ 1
        ),
        "GET / HTTP/1.0\r\n\r\n".to_string(),
    ];
    for head in &heads {
        let mut flow = st.transparent(local(plain.port()), &["web.test"], 64 * 1024);
        flow.guest.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(read_all(&mut flow.guest).await, "");
        finished(flow.task).await;
    }
    let recs = st.records();
    assert_eq!(recs[1].reason, Reason::IdentityMismatch);
    assert_eq!(recs[2].reason, Reason::NoServerName);
    assert_eq!(plain.accepted.load(Ordering::SeqCst), 1);
}

/// Reads until `needle` has arrived (or 5 s).
async fn read_until(s: &mut DuplexStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&out).contains(needle) {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn every_request_on_a_transparent_cleartext_connection_is_checked() {
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let sentinel = Sentinel::github();
    let cred = Credential::new("github", sentinel.clone(), &["api.test"]).unwrap();
    let st = stack(
        &pki,
        policy(&["web.test", "other.test"]),
        &["web.test", "other.test"],
        |c| c.with_credential(cred),
    );
    let later_heads = [
        // Another name, even an allowed one: the connection belongs to the name it opened with.
        "GET /two HTTP/1.1\r\nHost: other.test\r\n\r\n".to_string(),
        format!("GET /two HTTP/1.1\r\nHost: web.test\r\nX-Token: {sentinel}\r\n\r\n"),
        "GET /two HTTP/1.1\r\n\r\n".to_string(),
        // Smuggling shapes are refused by the framing guard.
        "POST /two HTTP/1.1\r\nHost: web.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
    ];
    let reasons = [
        Reason::IdentityMismatch,
        Reason::CredentialExfiltration,
        Reason::NoServerName,
        Reason::BadRequest,
    ];
    for (head, reason) in later_heads.iter().zip(reasons) {
        let mut flow = st.transparent(local(plain.port()), &["web.test"], 64 * 1024);
        flow.guest
            .write_all(b"GET /one HTTP/1.1\r\nHost: web.test\r\n\r\n")
            .await
            .unwrap();
        let first = read_until(&mut flow.guest, "upstream saw /one").await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        flow.guest.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(read_all(&mut flow.guest).await, "", "{head}");
        finished(flow.task).await;
        let r = st.records().pop().unwrap();
        assert_eq!((r.decision, r.reason), (Verdict::Deny, reason), "{head}");
    }
    // Pipelined behind an allowed request in the same write.
    let mut flow = st.transparent(local(plain.port()), &["web.test"], 64 * 1024);
    flow.guest
        .write_all(
            b"GET /a HTTP/1.1\r\nHost: web.test\r\n\r\nGET /b HTTP/1.1\r\nHost: other.test\r\n\r\n",
        )
        .await
        .unwrap();
    let _ = read_all(&mut flow.guest).await;
    finished(flow.task).await;
    assert_eq!(st.records().pop().unwrap().reason, Reason::IdentityMismatch);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let paths: Vec<String> = plain.seen().into_iter().map(|s| s.path).collect();
    assert!(paths.iter().all(|p| p == "/one" || p == "/a"), "{paths:?}");
    assert_eq!(paths.iter().filter(|p| *p == "/one").count(), 4);
}

#[tokio::test]
async fn a_sentinel_in_cleartext_to_an_unbound_host_is_exfiltration() {
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let sentinel = Sentinel::github();
    let cred = Credential::new("github", sentinel.clone(), &["api.test"]).unwrap();
    let mut store = StaticCredentials::new();
    store.insert("github", SecretString::from(SECRET));
    let st = stack(&pki, policy(&["web.test"]), &["web.test"], |c| {
        c.with_credential(cred).with_provider(Arc::new(store))
    });
    let mut flow = st.transparent(local(plain.port()), &["web.test"], 64 * 1024);
    let head = format!("GET /?t={sentinel} HTTP/1.1\r\nHost: web.test\r\n\r\n");
    flow.guest.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(read_all(&mut flow.guest).await, "");
    finished(flow.task).await;
    let r = &st.records()[0];
    assert_eq!(
        (r.decision, r.reason),
        (Verdict::Deny, Reason::CredentialExfiltration)
    );
    assert_eq!(r.credentials, vec!["github".to_string()]);
    assert_eq!(plain.accepted.load(Ordering::SeqCst), 0);
    assert!(!format!("{:?}", st.records()).contains(SECRET));
}

#[tokio::test]
async fn garbage_no_sni_and_slow_clients_are_closed_with_a_record() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test", "127.0.0.1"], false)).await;
    let mut limits = Limits::default();
    limits.handshake_timeout = Duration::from_millis(300);
    let st = stack(&pki, policy(&["**"]), &["api.test"], |c| {
        c.with_limits(limits)
    });

    let mut flow = st.transparent(local(up.port()), &["api.test"], 64 * 1024);
    flow.guest
        .write_all(b"\x00\x01garbage\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_all(&mut flow.guest).await, "");
    finished(flow.task).await;

    // rustls sends no SNI for an IP address.
    let flow = st.transparent(local(up.port()), &["api.test"], 64 * 1024);
    assert!(
        tls_connect(flow.guest, "127.0.0.1", &pki.ca_der, &[b"http/1.1"])
            .await
            .is_err()
    );
    finished(flow.task).await;

    let mut flow = st.transparent(local(up.port()), &["api.test"], 64 * 1024);
    flow.guest.write_all(b"GET / HT").await.unwrap();
    let start = std::time::Instant::now();
    assert_eq!(read_all(&mut flow.guest).await, "");
    assert!(start.elapsed() < Duration::from_secs(3));
    finished(flow.task).await;

    // Closed before anything complete arrived.
    let mut flow = st.transparent(local(up.port()), &["api.test"], 64 * 1024);
    flow.guest.write_all(&[0x16, 3, 1]).await.unwrap();
    drop(flow.guest);
    finished(flow.task).await;

    let reasons: Vec<Reason> = st.records().iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        [
            Reason::BadRequest,
            Reason::NoServerName,
            Reason::LimitExceeded,
            Reason::BadRequest
        ]
    );
    assert!(st.records().iter().all(|r| r.decision == Verdict::Deny
        && r.proxy == ProxyKind::Transparent
        && r.host == "127.0.0.1"));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn transparent_flows_go_through_the_ssrf_guard_without_an_override() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    // No override: the guest claims api.test resolved to 127.0.0.1.
    let st = stack(&pki, policy(&["api.test"]), &[], |c| c);
    let flow = st.transparent(local(up.port()), &["api.test"], 64 * 1024);
    assert!(
        tls_connect(flow.guest, "api.test", &pki.ca_der, &[b"http/1.1"])
            .await
            .is_err()
    );
    finished(flow.task).await;
    assert_eq!(st.records()[0].reason, Reason::PrivateAddress);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
    // A rule naming the address opens it.
    st.proxy.set_policy(policy(&[
        "api.test",
        format!("127.0.0.1:{}", up.port()).as_str(),
    ]));
    let flow = st.transparent(local(up.port()), &["api.test"], 64 * 1024);
    let tls = tls_connect(flow.guest, "api.test", &pki.ca_der, &[b"http/1.1"]).await;
    assert!(tls.is_ok());
    drop(tls);
    finished(flow.task).await;
    assert_eq!(st.records()[1].decision, Verdict::Allow);
}

/// A TCP echo server on loopback; counts accepted connections.
async fn echo_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn network_flows_need_a_rule_naming_the_address() {
    let pki = TestPki::new();
    let (echo, accepted) = echo_server().await;
    // Allow-all still refuses loopback; deny-all refuses by default.
    for (p, reason) in [
        (Policy::new(Preset::AllowAll), Reason::PrivateAddress),
        (policy(&["**"]), Reason::PrivateAddress),
        (policy(&[]), Reason::DefaultDeny),
        (
            policy(&[format!("127.0.0.1:{}", echo.port() ^ 1).as_str()]),
            Reason::DefaultDeny,
        ),
    ] {
        let st = stack(&pki, p, &[], |c| c);
        let mut flow = st.network(echo);
        let _ = flow.guest.write_all(b"ping").await;
        assert_eq!(read_all(&mut flow.guest).await, "");
        finished(flow.task).await;
        let r = &st.records()[0];
        assert_eq!((r.kind, r.proxy), (RecordType::Network, ProxyKind::Network));
        assert_eq!((r.decision, r.reason), (Verdict::Deny, reason));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0);

    for rule in [
        format!("127.0.0.1:{}", echo.port()),
        "127.0.0.0/8".to_string(),
    ] {
        let st = stack(&pki, policy(&[rule.as_str()]), &[], |c| c);
        let mut flow = st.network(echo);
        flow.guest.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        flow.guest.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop(flow.guest);
        finished(flow.task).await;
        let r = &st.records()[0];
        assert_eq!(
            (r.decision, r.reason),
            (Verdict::Allow, Reason::DomainAllowed)
        );
        assert_eq!(r.rule, Some(format!("global:allow {rule}")));
        assert_eq!((r.bytes_up, r.bytes_down), (4, 4));
        assert_eq!((r.host.as_str(), r.port), ("127.0.0.1", echo.port()));
    }
}

#[tokio::test]
async fn blocked_flows_are_recorded_at_most_once_a_second_per_destination() {
    let pki = TestPki::new();
    let st = stack(&pki, policy(&[]), &[], |c| c);
    let dst = "192.0.2.7".parse().unwrap();
    for _ in 0..50 {
        st.proxy.log_blocked_network(BlockedFlow::new(
            FlowProtocol::Udp,
            dst,
            Some(123),
            Reason::ProtocolNotAllowed,
        ));
    }
    st.proxy.log_blocked_network(BlockedFlow::new(
        FlowProtocol::Icmp,
        dst,
        None,
        Reason::ProtocolNotAllowed,
    ));
    assert_eq!(st.records().len(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    st.proxy.log_blocked_network(BlockedFlow::new(
        FlowProtocol::Udp,
        dst,
        Some(123),
        Reason::ProtocolNotAllowed,
    ));
    let recs = st.records();
    assert_eq!(recs.len(), 3);
    let first = &recs[0];
    assert_eq!(
        (first.kind, first.proxy, first.decision, first.reason),
        (
            RecordType::Network,
            ProxyKind::Network,
            Verdict::Deny,
            Reason::ProtocolNotAllowed
        )
    );
    assert_eq!(first.protocol.as_deref(), Some("udp"));
    assert_eq!(
        (first.host.as_str(), first.port, first.count),
        ("192.0.2.7", 123, None)
    );
    assert_eq!(recs[1].protocol.as_deref(), Some("icmp"));
    // 49 suppressed plus this one.
    assert_eq!(recs[2].count, Some(50));
    let json = serde_json::to_string(&recs[2]).unwrap();
    assert!(json.contains("\"count\":50") && json.contains("\"protocol\":\"udp\""));
}

#[tokio::test]
async fn serve_connection_speaks_the_explicit_proxy_protocol_with_injection() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let sentinel = Sentinel::github();
    let cred = Credential::new("github", sentinel.clone(), &["api.test"]).unwrap();
    let mut store = StaticCredentials::new();
    store.insert("github", SecretString::from(SECRET));
    let st = stack(&pki, policy(&["api.test"]), &["api.test"], |c| {
        c.with_credential(cred).with_provider(Arc::new(store))
    });
    let (mut guest, host) = tokio::io::duplex(64 * 1024);
    let proxy = st.proxy.clone();
    let task = tokio::spawn(async move {
        proxy
            .serve_connection(host, "10.77.0.2:40000".parse().unwrap())
            .await
    });
    let authority = format!("api.test:{}", up.port());
    guest
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut guest).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(st.proxy.active_connections(), 1);
    // Intercepted: the client trusts the sandbox CA.
    let tls = tls_connect(guest, "api.test", st.ca.cert_der(), &[b"http/1.1"])
        .await
        .unwrap();
    let bearer = format!("Bearer {sentinel}");
    let got = send_many(
        tls,
        false,
        vec![get(
            "/user",
            &[("host", &authority), ("authorization", &bearer)],
        )],
    )
    .await;
    assert_eq!(got.into_iter().next().unwrap().unwrap().status, 200);
    assert_eq!(
        up.seen()[0].headers.get("authorization").unwrap(),
        &format!("Bearer {SECRET}")
    );
    finished(task).await;
    assert_eq!(st.proxy.active_connections(), 0);
    let recs = st.records();
    assert!(recs
        .iter()
        .any(|r| r.kind == RecordType::Http && r.credentials == ["github"]));
    assert!(recs.iter().all(|r| r.proxy == ProxyKind::Forward));
    assert!(!format!("{recs:?}").contains(SECRET));
}

#[tokio::test]
async fn the_connection_cap_applies_to_every_entry_point() {
    let pki = TestPki::new();
    let (echo, accepted) = echo_server().await;
    let mut limits = Limits::default();
    limits.max_connections = 1;
    let rule = format!("127.0.0.1:{}", echo.port());
    let st = stack(&pki, policy(&[rule.as_str()]), &[], |c| {
        c.with_limits(limits)
    });
    let mut held = st.network(echo);
    held.guest.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    held.guest.read_exact(&mut b).await.unwrap();
    // Over the cap: refused at once, whatever the entry point.
    let mut second = st.network(echo);
    assert_eq!(read_all(&mut second.guest).await, "");
    finished(second.task).await;
    let mut third = st.transparent(echo, &["a.test"], 1024);
    assert_eq!(read_all(&mut third.guest).await, "");
    finished(third.task).await;
    let (mut guest, host) = tokio::io::duplex(1024);
    st.proxy
        .serve_connection(host, "10.77.0.2:1".parse().unwrap())
        .await;
    assert_eq!(guest.read(&mut b).await.unwrap(), 0);
    let limited = st
        .records()
        .iter()
        .filter(|r| r.reason == Reason::LimitExceeded)
        .count();
    assert_eq!(limited, 2);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    drop(held.guest);
    finished(held.task).await;
}
