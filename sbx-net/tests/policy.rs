//! Policy semantics through a running proxy: allow, deny, wildcards, ports, presets,
//! deny-wins, normalisation, bypass, atomic policy swaps and the policy log.

mod common;

use std::sync::Arc;

use common::*;
use sbx_net::{
    JsonLinesLog, Policy, Preset, ProxyKind, Reason, RecordType, Scope, SocketAddrOrIp, Verdict,
};

fn policy(preset: Preset, allow: &[&str], deny: &[&str]) -> Policy {
    let mut p = Policy::new(preset);
    for r in allow {
        p.allow(&Scope::Global, r).unwrap();
    }
    for r in deny {
        p.deny(&Scope::Global, r).unwrap();
    }
    p
}

#[tokio::test]
async fn allowed_host_is_forwarded_and_logged() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(
        &pki,
        policy(Preset::DenyAll, &["api.test"], &[]),
        &["api.test"],
        |c| c,
    )
    .await;
    let got = https_get(&tp, "api.test", up.port(), "/hello?x=1", &[], false)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body.contains("upstream saw /hello?x=1"), "{}", got.body);
    assert_eq!(up.seen().len(), 1);
    let recs = tp.records();
    let rec = recs
        .iter()
        .find(|r| r.kind == RecordType::Http)
        .expect("http record");
    assert_eq!(rec.host, "api.test");
    assert_eq!(rec.port, up.port());
    assert_eq!(rec.method.as_deref(), Some("GET"));
    assert_eq!(rec.path.as_deref(), Some("/hello?x=1"));
    assert_eq!(rec.proxy, ProxyKind::Forward);
    assert_eq!(rec.decision, Verdict::Allow);
    assert_eq!(rec.reason, Reason::DomainAllowed);
    assert_eq!(rec.rule.as_deref(), Some("global:allow api.test"));
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.sandbox, "test");
    assert!(rec.bytes_down > 0);
}

#[tokio::test]
async fn unlisted_host_is_denied_by_default() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(
        &pki,
        policy(Preset::DenyAll, &[], &[]),
        &["api.test"],
        |c| c,
    )
    .await;
    let (status, _) = connect(tp.addr(), &format!("api.test:{}", up.port())).await;
    assert_eq!(status, 403);
    assert_eq!(up.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    let recs = tp.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].reason, Reason::DefaultDeny);
    assert_eq!(recs[0].decision, Verdict::Deny);
    assert_eq!(recs[0].status, Some(403));
    assert_eq!(recs[0].rule, None);
}

#[tokio::test]
async fn wildcard_matches_subdomains_but_not_the_apex() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["a.wild.test", "wild.test"], false)).await;
    let tp = start_proxy(
        &pki,
        policy(Preset::DenyAll, &["*.wild.test"], &[]),
        &["a.wild.test", "wild.test"],
        |c| c,
    )
    .await;
    let ok = https_get(&tp, "a.wild.test", up.port(), "/", &[], false)
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let (status, _) = connect(tp.addr(), &format!("wild.test:{}", up.port())).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn port_rules_restrict_the_port() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let other = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let rule = format!("api.test:{}", up.port());
    let tp = start_proxy(
        &pki,
        policy(Preset::DenyAll, &[&rule], &[]),
        &["api.test"],
        |c| c,
    )
    .await;
    assert_eq!(
        https_get(&tp, "api.test", up.port(), "/", &[], false)
            .await
            .unwrap()
            .status,
        200
    );
    let (status, _) = connect(tp.addr(), &format!("api.test:{}", other.port())).await;
    assert_eq!(status, 403);
    assert!(other.seen().is_empty());
}

#[tokio::test]
async fn deny_wins_over_a_more_specific_allow() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(
        &pki,
        policy(Preset::AllowAll, &["api.test", "**"], &["*.test"]),
        &["api.test"],
        |c| c,
    )
    .await;
    let (status, _) = connect(tp.addr(), &format!("api.test:{}", up.port())).await;
    assert_eq!(status, 403);
    let rec = &tp.records()[0];
    assert_eq!(rec.reason, Reason::DomainBlocked);
    assert_eq!(rec.rule.as_deref(), Some("global:deny *.test"));
}

#[tokio::test]
async fn presets_balanced_and_allow_all() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.openai.com", "api.test"], false)).await;
    // Balanced: the built-in allowlist names api.openai.com:443; point it at the local upstream.
    let target = SocketAddrOrIp::Socket(up.addr);
    let tp = start_proxy(&pki, Policy::new(Preset::Balanced), &["api.test"], |c| {
        c.with_override("api.openai.com", target).unwrap()
    })
    .await;
    let got = https_get(&tp, "api.openai.com", 443, "/v1/models", &[], false)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    let rec = tp
        .records()
        .into_iter()
        .find(|r| r.kind == RecordType::Http)
        .unwrap();
    assert_eq!(
        rec.rule.as_deref(),
        Some("preset/balanced:allow api.openai.com:443")
    );
    let (status, _) = connect(tp.addr(), &format!("api.test:{}", up.port())).await;
    assert_eq!(status, 403, "balanced denies what it does not list");

    let tp = start_proxy(&pki, Policy::new(Preset::AllowAll), &["api.test"], |c| c).await;
    let got = https_get(&tp, "api.test", up.port(), "/", &[], false)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    let rec = tp
        .records()
        .into_iter()
        .find(|r| r.kind == RecordType::Http)
        .unwrap();
    assert_eq!(rec.reason, Reason::DefaultAllow);

    let tp = start_proxy(
        &pki,
        Policy::new(Preset::DenyAll),
        &["api.openai.com"],
        |c| c,
    )
    .await;
    let (status, _) = connect(tp.addr(), "api.openai.com:443").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn host_normalisation_tricks() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(
        &pki,
        policy(Preset::DenyAll, &["api.test"], &[]),
        &["api.test"],
        |c| c,
    )
    .await;
    let p = up.port();
    // Case and trailing dot name the same host.
    let (status, _) = connect(tp.addr(), &format!("API.Test.:{p}")).await;
    assert_eq!(status, 200);
    let got = https_get(&tp, "API.Test", p, "/", &[], false)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(tp.records().last().unwrap().host, "api.test");
    // A Cyrillic look-alike is a different (punycode) name; raw UTF-8 is not a valid
    // request target at all.
    let lookalike = sbx_net::Host::parse("аpi.test").unwrap().to_string();
    assert!(lookalike.starts_with("xn--"));
    let (status, _) = connect(tp.addr(), &format!("{lookalike}:{p}")).await;
    assert_eq!(status, 403);
    assert_eq!(tp.records().last().unwrap().host, lookalike);
    let (status, _) = connect(tp.addr(), &format!("аpi.test:{p}")).await;
    assert_eq!(status, 400);
    // Userinfo is never accepted.
    let (status, _) = connect(tp.addr(), &format!("user@api.test:{p}")).await;
    assert_eq!(status, 400);
    // Percent-encoding is never accepted.
    let (status, _) = connect(tp.addr(), &format!("api%2etest:{p}")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn ip_obfuscations_are_seen_as_loopback() {
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let tp = start_proxy(&pki, policy(Preset::AllowAll, &["**"], &[]), &[], |c| c).await;
    let p = plain.port();
    for host in [
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
    ] {
        let (status, _) = connect(tp.addr(), &format!("{host}:{p}")).await;
        assert_eq!(status, 403, "{host}");
        let rec = tp.records().pop().unwrap();
        assert_eq!(rec.reason, Reason::PrivateAddress, "{host}");
        assert_eq!(rec.host, "127.0.0.1", "{host}");
        let got = http_get(&tp, &format!("http://{host}:{p}/"), &[]).await;
        assert_eq!(got.status, 403, "{host}");
        assert_eq!(got.reason(), Some("private-address"));
    }
    assert!(plain.seen().is_empty());
}

#[tokio::test]
async fn policy_swaps_are_atomic_and_a_bad_policy_keeps_the_old_one() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(
        &pki,
        policy(Preset::DenyAll, &["api.test"], &[]),
        &["api.test"],
        |c| c,
    )
    .await;
    let bad = r#"{"preset":"deny-all","global":[{"action":"allow","resource":"api.*.test"}]}"#;
    assert!(tp.proxy.update_policy_json(bad).is_err());
    assert!(tp.proxy.update_policy_json("not json").is_err());
    assert_eq!(
        https_get(&tp, "api.test", up.port(), "/", &[], false)
            .await
            .unwrap()
            .status,
        200
    );

    // An open tunnel sees the new policy on its next request.
    let authority = format!("api.test:{}", up.port());
    let (status, s) = connect(tp.addr(), &authority).await;
    assert_eq!(status, 200);
    let tls = tls_connect(s, "api.test", tp.ca.cert_der(), &[b"http/1.1"])
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = &tp.proxy;
    let client = async {
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let r1 = send
            .send_request(get("/one", &[("host", &authority)]))
            .await
            .unwrap();
        assert_eq!(r1.status(), 200);
        drop(r1);
        tx.send(()).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        send.ready().await.unwrap();
        let r2 = send
            .send_request(get("/two", &[("host", &authority)]))
            .await
            .unwrap();
        r2.status()
    };
    let swap = async {
        rx.await.unwrap();
        proxy
            .update_policy_json(
                r#"{"preset":"deny-all","global":[{"action":"deny","resource":"api.test"}]}"#,
            )
            .unwrap();
    };
    let (status2, ()) = tokio::join!(client, swap);
    assert_eq!(status2, 403);
    assert_eq!(up.seen().iter().filter(|s| s.path == "/two").count(), 0);
    let (status, _) = connect(tp.addr(), &authority).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn bypass_rules_splice_without_interception() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["pinned.test"], false)).await;
    let mut p = Policy::new(Preset::DenyAll);
    p.bypass(&Scope::Global, "pinned.test").unwrap();
    let tp = start_proxy(&pki, p, &["pinned.test"], |c| c).await;
    let (status, s) = connect(tp.addr(), &format!("pinned.test:{}", up.port())).await;
    assert_eq!(status, 200);
    // The client verifies the upstream's own certificate: nothing was intercepted.
    let tls = tls_connect(s, "pinned.test", &pki.ca_der, &[b"http/1.1"])
        .await
        .unwrap();
    let req = get("/pinned", &[("host", "pinned.test")]);
    let got = send_many(tls, false, vec![req]).await.remove(0).unwrap();
    assert_eq!(got.status, 200);
    // The tunnel record is written when the tunnel closes.
    let mut rec = None;
    for _ in 0..500 {
        rec = tp
            .records()
            .into_iter()
            .find(|r| r.proxy == ProxyKind::ForwardBypass);
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let rec = rec.expect("bypass record");
    assert_eq!(rec.kind, RecordType::Network);
    assert_eq!(rec.sni.as_deref(), Some("pinned.test"));
    assert_eq!(rec.decision, Verdict::Allow);
    assert_eq!(rec.rule.as_deref(), Some("global:bypass pinned.test"));
    assert!(rec.bytes_up > 0 && rec.bytes_down > 0);
}

#[tokio::test]
async fn json_lines_log_is_readable_while_the_proxy_writes() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let path =
        std::env::temp_dir().join(format!("sbx-net-policy-log-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let log = Arc::new(JsonLinesLog::open(&path).unwrap());
    let tp = start_proxy(
        &pki,
        policy(Preset::DenyAll, &["api.test"], &[]),
        &["api.test"],
        |c| c.with_log(log.clone()),
    )
    .await;
    assert_eq!(
        https_get(&tp, "api.test", up.port(), "/a", &[], true)
            .await
            .unwrap()
            .status,
        200
    );
    let (status, _) = connect(tp.addr(), "blocked.test:443").await;
    assert_eq!(status, 403);
    let recs = JsonLinesLog::read_all(&path).unwrap();
    assert!(recs
        .iter()
        .any(|r| r.path.as_deref() == Some("/a") && r.status == Some(200)));
    assert!(recs
        .iter()
        .any(|r| r.host == "blocked.test" && r.reason == Reason::DefaultDeny));
    let text = std::fs::read_to_string(&path).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in [
            "time", "sandbox", "type", "host", "port", "proxy", "decision", "reason",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
    }
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn curl_works_through_the_proxy_with_http1_and_http2() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let tp = start_proxy(
        &pki,
        policy(Preset::DenyAll, &["api.test"], &[]),
        &["api.test"],
        |c| c,
    )
    .await;
    let ca = write_temp("proxy-ca-curl.pem", tp.proxy.ca_pem());
    for flag in ["--http1.1", "--http2"] {
        let (code, out, err) = curl(vec![
            flag.into(),
            "--proxy".into(),
            format!("http://{}", tp.addr()),
            "--cacert".into(),
            ca.display().to_string(),
            format!("https://api.test:{}/via-curl", up.port()),
        ])
        .await;
        assert_eq!(code, 0, "{flag}: {err}");
        assert!(out.contains("upstream saw /via-curl"), "{flag}: {out}");
    }
    let denied = curl(vec![
        "--proxy".into(),
        format!("http://{}", tp.addr()),
        "--cacert".into(),
        ca.display().to_string(),
        "https://denied.test/".into(),
    ])
    .await;
    assert_ne!(denied.0, 0);
    assert!(denied.2.contains("403"), "{}", denied.2);
}
