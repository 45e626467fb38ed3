//! Protocol combinations: each leg negotiates its own HTTP version by ALPN.

mod common;

use common::*;
use http::Version;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sbx_net::{Policy, Preset, Scope};

#[tokio::test]
async fn http2_client_multiplexes_onto_an_http1_upstream() {
    let pki = TestPki::new();
    let up = tls_upstream_on("127.0.0.1", pki.leaf(&["h1.test"], false), &[b"http/1.1"]).await;
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Global, "h1.test").unwrap();
    let tp = start_proxy(&pki, p, &["h1.test"], |c| c).await;
    let authority = format!("h1.test:{}", up.port());
    let (status, s) = connect(tp.addr(), &authority).await;
    assert_eq!(status, 200);
    let tls = tls_connect(s, "h1.test", tp.ca.cert_der(), &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut send = send.clone();
        let mut req = get(&format!("https://{authority}/s{i}"), &[]);
        *req.version_mut() = Version::HTTP_2;
        set.spawn(async move { send.send_request(req).await.map(|r| r.status().as_u16()) });
    }
    let mut statuses = Vec::new();
    while let Some(r) = set.join_next().await {
        statuses.push(r.unwrap().unwrap());
    }
    assert_eq!(statuses, vec![200; 10]);
    let seen = up.seen();
    assert_eq!(seen.len(), 10);
    assert!(seen.iter().all(|s| s.version == Version::HTTP_11));
    assert!(seen
        .iter()
        .all(|s| s.headers.get("host").unwrap() == authority.as_str()));
}

#[tokio::test]
async fn sandbox_scoped_rules_apply_to_the_proxys_sandbox_only() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Sandbox("test".into()), "api.test").unwrap();
    let tp = start_proxy(&pki, p.clone(), &["api.test"], |c| c).await;
    let got = https_get(&tp, "api.test", up.port(), "/", &[], false)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(
        tp.records().pop().unwrap().rule.as_deref(),
        Some("sandbox/test:allow api.test")
    );
    let other = start_proxy(&pki, p, &["api.test"], |c| c.with_sandbox("other")).await;
    let (status, _) = connect(other.addr(), &format!("api.test:{}", up.port())).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn request_bodies_are_forwarded_and_counted() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let plain = plain_upstream().await;
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Global, "api.test").unwrap();
    let tp = start_proxy(&pki, p, &["api.test"], |c| c).await;
    let body = vec![b'x'; 100_000];
    for h2 in [false, true] {
        let authority = format!("api.test:{}", up.port());
        let (_, s) = connect(tp.addr(), &authority).await;
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = tls_connect(s, "api.test", tp.ca.cert_der(), alpn)
            .await
            .unwrap();
        let uri = if h2 {
            format!("https://{authority}/upload")
        } else {
            "/upload".into()
        };
        let mut req = http::Request::post(uri)
            .header("host", &authority)
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        if h2 {
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove("host");
        }
        let got = send_many(tls, h2, vec![req]).await.remove(0).unwrap();
        assert_eq!(got.status, 200);
        assert!(got.body.contains("with 100000 body bytes"), "{}", got.body);
    }
    // Chunked upload over cleartext through the framing guard.
    let raw = format!(
        "POST http://api.test:{0}/chunked HTTP/1.1\r\nHost: api.test:{0}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        plain.port()
    );
    let out = raw_exchange(tp.addr(), raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("with 11 body bytes"), "{out}");
    for _ in 0..500 {
        if tp.records().iter().filter(|r| r.bytes_up > 0).count() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ups: Vec<u64> = tp.records().iter().map(|r| r.bytes_up).collect();
    assert_eq!(ups, vec![100_000, 100_000, 11]);
}

#[tokio::test]
async fn bypass_tunnels_carry_non_tls_protocols() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let mut p = Policy::new(Preset::DenyAll);
    p.bypass(&Scope::Global, "raw.test").unwrap();
    let tp = start_proxy(&pki, p, &["raw.test"], |c| c).await;
    let (status, mut s) = connect(tp.addr(), &format!("raw.test:{}", plain.port())).await;
    assert_eq!(status, 200);
    s.write_all(b"GET /raw HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("upstream saw /raw"));
}

#[tokio::test]
async fn dropping_the_proxy_closes_open_tunnels() {
    use tokio::io::AsyncReadExt;
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test", "pinned.test"], false)).await;
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Global, "api.test").unwrap();
    p.bypass(&Scope::Global, "pinned.test").unwrap();
    let tp = start_proxy(&pki, p, &["api.test", "pinned.test"], |c| c).await;
    let (_, s1) = connect(tp.addr(), &format!("api.test:{}", up.port())).await;
    let mut intercepted = tls_connect(s1, "api.test", tp.ca.cert_der(), &[b"http/1.1"])
        .await
        .unwrap();
    let (_, s2) = connect(tp.addr(), &format!("pinned.test:{}", up.port())).await;
    let mut bypassed = tls_connect(s2, "pinned.test", &pki.ca_der, &[b"http/1.1"])
        .await
        .unwrap();
    let addr = tp.addr();
    drop(tp);
    let mut buf = [0u8; 16];
    let t = std::time::Duration::from_secs(5);
    let r1 = tokio::time::timeout(t, intercepted.read(&mut buf)).await;
    assert!(
        matches!(r1, Ok(Ok(0)) | Ok(Err(_))),
        "intercepted tunnel still open: {r1:?}"
    );
    let r2 = tokio::time::timeout(t, bypassed.read(&mut buf)).await;
    assert!(
        matches!(r2, Ok(Ok(0)) | Ok(Err(_))),
        "bypass tunnel still open: {r2:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}
