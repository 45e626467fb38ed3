//! WebSocket-style upgrades pass through intercepted tunnels.

mod common;

use common::*;
use hyper_util::rt::TokioIo;
use sbx_net::{Policy, Preset, RecordType, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn websocket_upgrade_through_an_intercepted_tunnel() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["ws.test"], false)).await;
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Global, "ws.test").unwrap();
    let tp = start_proxy(&pki, p, &["ws.test"], |c| c).await;
    let authority = format!("ws.test:{}", up.port());
    let (status, s) = connect(tp.addr(), &authority).await;
    assert_eq!(status, 200);
    let tls = tls_connect(s, "ws.test", tp.ca.cert_der(), &[b"http/1.1"])
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = get(
        "/ws",
        &[
            ("host", &authority),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    );
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"ping through the proxy").await.unwrap();
    let mut buf = [0u8; 22];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the proxy");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get("upgrade").unwrap(), "websocket");
    drop(io);
    drop(send);
    // One http record for the upgrade, with bytes counted once the connection closes.
    let mut rec = None;
    for _ in 0..500 {
        rec = tp
            .records()
            .into_iter()
            .find(|r| r.kind == RecordType::Http);
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let rec = rec.expect("upgrade record");
    assert_eq!(rec.status, Some(101));
    assert_eq!(rec.bytes_up, 22);
    assert_eq!(rec.bytes_down, 22);
}
