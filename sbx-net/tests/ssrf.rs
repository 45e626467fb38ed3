//! SSRF guards: private and loopback answers, mixed answers, rebinding, raw IPs, IPv4-in-IPv6
//! and the proxy connecting to itself.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use sbx_net::{Policy, Preset, Reason, Resolve, ResolveFuture, Scope, SocketAddrOrIp};

/// A resolver with scripted answers: the n-th call gets `answers[min(n, len-1)]`.
struct Scripted {
    answers: Vec<Vec<IpAddr>>,
    calls: AtomicUsize,
    names: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(answers: &[&[&str]]) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: answers
                .iter()
                .map(|a| a.iter().map(|s| s.parse().unwrap()).collect())
                .collect(),
            calls: AtomicUsize::new(0),
            names: Mutex::default(),
        })
    }
}

impl Resolve for Scripted {
    fn resolve<'a>(&'a self, name: &'a str, _port: u16) -> ResolveFuture<'a> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.names.lock().unwrap().push(name.to_string());
        let answer = self.answers[n.min(self.answers.len() - 1)].clone();
        Box::pin(async move { Ok(answer) })
    }
}

fn allow(rules: &[&str]) -> Policy {
    let mut p = Policy::new(Preset::DenyAll);
    for r in rules {
        p.allow(&Scope::Global, r).unwrap();
    }
    p
}

#[tokio::test]
async fn allowed_name_resolving_to_loopback_is_refused() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["evil.test"], false)).await;
    let plain = plain_upstream().await;
    let resolver = Scripted::new(&[&["127.0.0.1"]]);
    let tp = start_proxy(&pki, allow(&["evil.test", "**"]), &[], |c| {
        c.with_resolver(resolver.clone())
    })
    .await;
    let (status, _) = connect(tp.addr(), &format!("evil.test:{}", up.port())).await;
    assert_eq!(status, 403);
    assert_eq!(tp.records()[0].reason, Reason::PrivateAddress);
    let got = http_get(&tp, &format!("http://evil.test:{}/", plain.port()), &[]).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.reason(), Some("private-address"));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
    assert!(plain.seen().is_empty());
}

#[tokio::test]
async fn names_resolving_to_metadata_private_or_mixed_answers_are_refused() {
    let pki = TestPki::new();
    for answer in [
        &["169.254.169.254"][..],
        &["10.0.0.7"],
        &["192.168.1.1"],
        &["100.64.0.1"],
        &["fd00::1"],
        &["0.0.0.0"],
        &["93.184.216.34", "127.0.0.1"],
    ] {
        let resolver = Scripted::new(&[answer]);
        let tp = start_proxy(&pki, allow(&["**"]), &[], |c| {
            c.with_resolver(resolver.clone())
        })
        .await;
        // Refused before any connection is attempted.
        let (status, _) = connect(tp.addr(), "internal.test:443").await;
        assert_eq!(status, 403, "{answer:?}");
        assert_eq!(tp.records()[0].reason, Reason::PrivateAddress, "{answer:?}");
    }
}

#[tokio::test]
async fn rebinding_dns_cannot_move_the_checked_address() {
    let pki = TestPki::new();
    // The checked address (127.0.0.2, named by a rule) and the rebinding target (127.0.0.1)
    // listen on the same port.
    let (good, bad) = loop {
        let good = tls_upstream_on(
            "127.0.0.2",
            pki.leaf(&["rebind.test"], false),
            &[b"http/1.1"],
        )
        .await;
        let port = good.port();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port));
        if let Ok(l) = listener {
            drop(l);
            let bad = tls_upstream_on_port(&pki, port).await;
            if let Some(bad) = bad {
                break (good, bad);
            }
        }
    };
    let resolver = Scripted::new(&[&["127.0.0.2"], &["127.0.0.1"]]);
    let rule = format!("127.0.0.2:{}", good.port());
    let tp = start_proxy(&pki, allow(&["rebind.test", &rule]), &[], |c| {
        c.with_resolver(resolver.clone())
    })
    .await;
    let got = https_get(&tp, "rebind.test", good.port(), "/first", &[], false)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    // One resolution per tunnel, and the connection went to the checked address.
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
    assert_eq!(good.seen().len(), 1);
    assert!(bad.seen().is_empty());
    // The next tunnel resolves again, gets loopback, and is refused.
    let (status, _) = connect(tp.addr(), &format!("rebind.test:{}", good.port())).await;
    assert_eq!(status, 403);
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 2);
    assert!(bad.seen().is_empty());
    assert_eq!(bad.accepted.load(Ordering::SeqCst), 0);
}

async fn tls_upstream_on_port(pki: &TestPki, port: u16) -> Option<Upstream> {
    // Bind a specific port on 127.0.0.1 by retrying the helper until it lands there; the
    // helper binds port 0, so bind here directly instead.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .ok()?;
    Some(tls_upstream_from(listener, pki.leaf(&["rebind.test"], false)).await)
}

#[tokio::test]
async fn connect_to_raw_loopback_ip_needs_a_rule_naming_it() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["127.0.0.1"], false)).await;
    let tp = start_proxy(&pki, allow(&["**"]), &[], |c| c).await;
    let (status, _) = connect(tp.addr(), &format!("127.0.0.1:{}", up.port())).await;
    assert_eq!(status, 403);
    assert_eq!(tp.records()[0].reason, Reason::PrivateAddress);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);

    // A rule naming the address allows it; the minted leaf carries an IP SAN.
    let rule = format!("127.0.0.1:{}", up.port());
    let tp = start_proxy(&pki, allow(&[&rule]), &[], |c| c).await;
    let got = https_get(&tp, "127.0.0.1", up.port(), "/ip", &[], false).await;
    // rustls clients send no SNI for IP literals; the leaf must verify by IP SAN.
    let got = got.unwrap();
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn ipv4_embedding_ipv6_forms_are_refused() {
    let pki = TestPki::new();
    let tp = start_proxy(&pki, allow(&["**"]), &[], |c| c).await;
    for host in [
        "[::ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "[::1]",
        "[fe80::1]",
    ] {
        let (status, _) = connect(tp.addr(), &format!("{host}:443")).await;
        assert_eq!(status, 403, "{host}");
        assert_eq!(
            tp.records().pop().unwrap().reason,
            Reason::PrivateAddress,
            "{host}"
        );
    }
}

#[tokio::test]
async fn the_proxy_never_connects_to_itself() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let self_addr = listener.local_addr().unwrap();
    drop(listener);
    let rule = format!("127.0.0.1:{}", self_addr.port());
    // Even with a rule naming the address and an override pointing a name at it.
    let ca = Arc::new(sbx_net::CertificateAuthority::generate().unwrap());
    let log = Arc::new(sbx_net::MemoryLog::new());
    let config = sbx_net::ProxyConfig::new(ca)
        .with_policy(allow(&[&rule, "self.test"]))
        .with_log(log.clone())
        .with_system_roots(false)
        .with_override("self.test", SocketAddrOrIp::Socket(self_addr))
        .unwrap();
    let proxy = sbx_net::Proxy::bind(self_addr, config).await.unwrap();
    let (status, _) = connect(
        proxy.local_addr(),
        &format!("127.0.0.1:{}", self_addr.port()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = connect(proxy.local_addr(), "self.test:443").await;
    assert_eq!(status, 403);
    let recs = log.records();
    assert!(
        recs.iter().all(|r| r.reason == Reason::ProxyLoop),
        "{recs:?}"
    );
    assert_eq!(recs.len(), 2);
}
