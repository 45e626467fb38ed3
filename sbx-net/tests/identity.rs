//! Destination identity: the CONNECT authority or absolute URI decides, and SNI, `Host` or
//! `:authority` that disagree are refused.

mod common;

use common::*;
use http::Version;
use sbx_net::{Policy, Preset, Reason, Scope, Verdict};

fn allow(rules: &[&str]) -> Policy {
    let mut p = Policy::new(Preset::DenyAll);
    for r in rules {
        p.allow(&Scope::Global, r).unwrap();
    }
    p
}

#[tokio::test]
async fn sni_differing_from_the_connect_host_is_refused() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test", "other.test"], false)).await;
    let tp = start_proxy(
        &pki,
        allow(&["api.test", "other.test"]),
        &["api.test", "other.test"],
        |c| c,
    )
    .await;
    let (status, s) = connect(tp.addr(), &format!("api.test:{}", up.port())).await;
    assert_eq!(status, 200);
    let tls = tls_connect(s, "other.test", tp.ca.cert_der(), &[b"http/1.1"]).await;
    assert!(tls.is_err(), "handshake with a mismatched SNI must fail");
    let rec = tp.records().pop().unwrap();
    assert_eq!(rec.reason, Reason::IdentityMismatch);
    assert_eq!(rec.sni.as_deref(), Some("other.test"));
    assert_eq!(rec.decision, Verdict::Deny);
    assert_eq!(up.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn sni_mismatch_on_a_bypass_tunnel_is_refused() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["pinned.test", "evil.test"], false)).await;
    let mut p = Policy::new(Preset::DenyAll);
    p.bypass(&Scope::Global, "pinned.test").unwrap();
    let tp = start_proxy(&pki, p, &["pinned.test"], |c| c).await;
    let (status, s) = connect(tp.addr(), &format!("pinned.test:{}", up.port())).await;
    assert_eq!(status, 200);
    let tls = tls_connect(s, "evil.test", &pki.ca_der, &[b"http/1.1"]).await;
    assert!(tls.is_err());
    let rec = tp.records().pop().unwrap();
    assert_eq!(rec.reason, Reason::IdentityMismatch);
    assert_eq!(up.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn host_header_differing_from_the_tunnel_is_421() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(
        &pki,
        allow(&["api.test", "other.test"]),
        &["api.test", "other.test"],
        |c| c,
    )
    .await;
    let host = format!("other.test:{}", up.port());
    let got = https_get(&tp, "api.test", up.port(), "/", &[("host", &host)], false)
        .await
        .unwrap();
    assert_eq!(got.status, 421);
    assert_eq!(got.reason(), Some("identity-mismatch"));
    // Same host, wrong port.
    let host = format!("api.test:{}", up.port() ^ 1);
    let got = https_get(&tp, "api.test", up.port(), "/", &[("host", &host)], false)
        .await
        .unwrap();
    assert_eq!(got.status, 421);
    assert!(up.seen().is_empty());
    assert!(tp
        .records()
        .iter()
        .any(|r| r.reason == Reason::IdentityMismatch && r.status == Some(421)));
}

#[tokio::test]
async fn http2_authority_is_checked_per_stream() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(
        &pki,
        allow(&["api.test", "other.test"]),
        &["api.test", "other.test"],
        |c| c,
    )
    .await;
    let authority = format!("api.test:{}", up.port());
    let (status, s) = connect(tp.addr(), &authority).await;
    assert_eq!(status, 200);
    let tls = tls_connect(s, "api.test", tp.ca.cert_der(), &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut good = get(&format!("https://{authority}/good"), &[]);
    *good.version_mut() = Version::HTTP_2;
    let mut bad = get(&format!("https://other.test:{}/bad", up.port()), &[]);
    *bad.version_mut() = Version::HTTP_2;
    let mut good2 = get(&format!("https://{authority}/good2"), &[]);
    *good2.version_mut() = Version::HTTP_2;
    let res = send_many(tls, true, vec![good, bad, good2]).await;
    let statuses: Vec<u16> = res
        .iter()
        .map(|r| r.as_ref().unwrap().status.as_u16())
        .collect();
    assert_eq!(statuses, vec![200, 421, 200]);
    assert_eq!(res[0].as_ref().unwrap().version, Version::HTTP_2);
    let paths: Vec<String> = up.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, vec!["/good", "/good2"]);
}

#[tokio::test]
async fn keep_alive_request_to_a_second_host_is_421() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(
        &pki,
        allow(&["api.test", "other.test"]),
        &["api.test", "other.test"],
        |c| c,
    )
    .await;
    let authority = format!("api.test:{}", up.port());
    let (_, s) = connect(tp.addr(), &authority).await;
    let tls = tls_connect(s, "api.test", tp.ca.cert_der(), &[b"http/1.1"])
        .await
        .unwrap();
    let other = format!("other.test:{}", up.port());
    let res = send_many(
        tls,
        false,
        vec![
            get("/first", &[("host", &authority)]),
            get("/second", &[("host", &other)]),
            get(&format!("https://{other}/third"), &[("host", &other)]),
        ],
    )
    .await;
    assert_eq!(res[0].as_ref().unwrap().status, 200);
    assert_eq!(res[1].as_ref().unwrap().status, 421);
    assert_eq!(res[2].as_ref().unwrap().status, 421);
    let paths: Vec<String> = up.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, vec!["/first"]);
}

#[tokio::test]
async fn cleartext_host_header_must_match_the_uri() {
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let tp = start_proxy(
        &pki,
        allow(&["api.test", "other.test"]),
        &["api.test", "other.test"],
        |c| c,
    )
    .await;
    let url = format!("http://api.test:{}/x", plain.port());
    let got = http_get(&tp, &url, &[("host", "other.test")]).await;
    assert_eq!(got.status, 421);
    let got = http_get(&tp, &url, &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(plain.seen().len(), 1);
    // Origin-form requests to the proxy port are not proxied.
    let out = raw_exchange(
        tp.addr(),
        b"GET /x HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}
