//! Request-smuggling shapes are rejected with 400, on the proxy port and inside intercepted
//! tunnels, and nothing reaches the upstream.

mod common;

use common::*;
use sbx_net::{Policy, Preset, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn allow_api() -> Policy {
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Global, "api.test").unwrap();
    p
}

fn shapes(authority: &str, absolute: bool) -> Vec<(&'static str, String)> {
    let target = if absolute {
        format!("http://{authority}/smuggle")
    } else {
        "/smuggle".to_string()
    };
    vec![
        (
            "cl+te",
            format!("POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
        ),
        (
            "te+cl",
            format!("POST {target} HTTP/1.1\r\nHost: {authority}\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG"),
        ),
        (
            "duplicate cl",
            format!("POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nG"),
        ),
        (
            "conflicting cl",
            format!("POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nGG"),
        ),
        (
            "bare lf",
            format!("GET {target} HTTP/1.1\nHost: {authority}\n\n"),
        ),
        (
            "bare lf in one header",
            format!("GET {target} HTTP/1.1\r\nHost: {authority}\nX-Smuggled: 1\r\n\r\n"),
        ),
        (
            "te not chunked",
            format!("POST {target} HTTP/1.1\r\nHost: {authority}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ),
    ]
}

#[tokio::test]
async fn smuggling_shapes_on_the_proxy_port_get_400() {
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let tp = start_proxy(&pki, allow_api(), &["api.test"], |c| c).await;
    let authority = format!("api.test:{}", plain.port());
    for (name, raw) in shapes(&authority, true) {
        let out = raw_exchange(tp.addr(), raw.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{name}: {out:?}");
    }
    assert!(plain.seen().is_empty(), "{:?}", plain.seen());
    // The same connection handling still serves a clean request.
    let clean = format!(
        "GET http://{authority}/clean HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    );
    let out = raw_exchange(tp.addr(), clean.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test]
async fn smuggling_shapes_inside_an_intercepted_tunnel_get_400() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(&pki, allow_api(), &["api.test"], |c| c).await;
    let authority = format!("api.test:{}", up.port());
    for (name, raw) in shapes(&authority, false) {
        let (status, s) = connect(tp.addr(), &authority).await;
        assert_eq!(status, 200);
        let mut tls = tls_connect(s, "api.test", tp.ca.cert_der(), &[b"http/1.1"])
            .await
            .unwrap();
        tls.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), tls.read_to_end(&mut out))
            .await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 400"), "{name}: {out:?}");
    }
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

#[tokio::test]
async fn requests_pipelined_after_a_refused_upgrade_or_connect_are_not_served() {
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(&pki, allow_api(), &["api.test"], |c| c).await;
    let authority = format!("api.test:{}", plain.port());
    let smuggled = format!("GET http://{authority}/smuggled HTTP/1.1\nHost: {authority}\n\n");
    // A refused upgrade (denied host) switches the guard off; the connection must close.
    let raw = format!(
        "GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n{smuggled}"
    );
    let out = raw_exchange(tp.addr(), raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    // Same after a refused CONNECT.
    let raw =
        format!("CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\n\r\n{smuggled}");
    let out = raw_exchange(tp.addr(), raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    assert!(plain.seen().is_empty(), "{:?}", plain.seen());

    // Inside an intercepted tunnel: an upgrade the upstream does not switch, then a bare-LF
    // request in the same write.
    let tunnel = format!("api.test:{}", up.port());
    let (_, s) = connect(tp.addr(), &tunnel).await;
    let mut tls = tls_connect(s, "api.test", tp.ca.cert_der(), &[b"http/1.1"])
        .await
        .unwrap();
    let raw = format!(
        "CONNECT {tunnel} HTTP/1.1\r\nHost: {tunnel}\r\n\r\nGET /smuggled HTTP/1.1\nHost: {tunnel}\n\n"
    );
    tls.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(3), tls.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}
