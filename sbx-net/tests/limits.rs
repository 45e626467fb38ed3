//! Limits: header size, connection cap, slow clients.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sbx_net::{Limits, Policy, Preset, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn allow_api() -> Policy {
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Global, "api.test").unwrap();
    p
}

async fn wait_until(mut f: impl FnMut() -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let mut limits = Limits::default();
    limits.max_header_bytes = 16 * 1024;
    let tp = start_proxy(&pki, allow_api(), &["api.test"], |c| c.with_limits(limits)).await;
    let big = "a".repeat(64 * 1024);
    let raw = format!(
        "GET http://api.test:{}/ HTTP/1.1\r\nHost: api.test:{}\r\nX-Big: {big}\r\n\r\n",
        plain.port(),
        plain.port()
    );
    let out = raw_exchange(tp.addr(), raw.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 4"),
        "{:?}",
        &out[..out.len().min(80)]
    );
    assert!(plain.seen().is_empty());
}

#[tokio::test]
async fn connections_over_the_cap_are_closed() {
    let pki = TestPki::new();
    let mut limits = Limits::default();
    limits.max_connections = 2;
    let tp = start_proxy(&pki, allow_api(), &[], |c| c.with_limits(limits)).await;
    let _a = tokio::net::TcpStream::connect(tp.addr()).await.unwrap();
    let _b = tokio::net::TcpStream::connect(tp.addr()).await.unwrap();
    assert!(
        wait_until(
            || tp.proxy.active_connections() == 2,
            Duration::from_secs(5)
        )
        .await
    );
    let mut c = tokio::net::TcpStream::connect(tp.addr()).await.unwrap();
    let _ = c
        .write_all(b"GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "third connection should be closed: {n:?}"
    );
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let pki = TestPki::new();
    let mut limits = Limits::default();
    limits.header_timeout = Duration::from_millis(300);
    limits.idle_timeout = Duration::from_millis(600);
    let tp = start_proxy(&pki, allow_api(), &[], |c| c.with_limits(limits)).await;
    // A client that sends half a request head and stalls.
    let mut s = tokio::net::TcpStream::connect(tp.addr()).await.unwrap();
    s.write_all(b"GET http://api.test/ HTTP/1.1\r\nHost: ap")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "connection not closed");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        wait_until(
            || tp.proxy.active_connections() == 0,
            Duration::from_secs(3)
        )
        .await
    );
    // A client that connects and says nothing.
    let mut s = tokio::net::TcpStream::connect(tp.addr()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "idle connection not closed");
}
