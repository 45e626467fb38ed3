//! Upstream certificate failures give 502 and nothing is forwarded.

mod common;

use common::*;
use sbx_net::{Policy, Preset, Reason, Scope};

fn allow_api() -> Policy {
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Global, "api.test").unwrap();
    p
}

async fn expect_502(chain: CertChain) {
    let up = tls_upstream(chain).await;
    // The proxy trusts only this thread's test PKI (each test runs on its own thread).
    let tp = start_proxy(&pki(), allow_api(), &["api.test"], |c| c).await;
    for h2 in [false, true] {
        let got = https_get(&tp, "api.test", up.port(), "/secret-path", &[], h2)
            .await
            .unwrap();
        assert_eq!(got.status, 502, "h2={h2}");
        assert_eq!(got.reason(), Some("upstream-tls"));
    }
    assert!(
        up.seen().is_empty(),
        "nothing may reach an unverified upstream"
    );
    let rec = tp.records().pop().unwrap();
    assert_eq!(rec.reason, Reason::UpstreamTls);
    assert_eq!(rec.status, Some(502));
}

thread_local! {
    static SHARED: std::rc::Rc<TestPki> = std::rc::Rc::new(TestPki::new());
}

fn pki() -> std::rc::Rc<TestPki> {
    SHARED.with(|p| p.clone())
}

#[tokio::test]
async fn expired_upstream_certificate_is_502() {
    let chain = pki().leaf(&["api.test"], true);
    expect_502(chain).await;
}

#[tokio::test]
async fn upstream_certificate_for_another_host_is_502() {
    let chain = pki().leaf(&["wrong.test"], false);
    expect_502(chain).await;
}

#[tokio::test]
async fn self_signed_upstream_certificate_is_502() {
    expect_502(TestPki::self_signed(&["api.test"])).await;
}

#[tokio::test]
async fn certificate_from_an_untrusted_ca_is_502() {
    let stranger = TestPki::new();
    expect_502(stranger.leaf(&["api.test"], false)).await;
}

#[tokio::test]
async fn a_valid_upstream_certificate_passes() {
    let up = tls_upstream(pki().leaf(&["api.test"], false)).await;
    let tp = start_proxy(&pki(), allow_api(), &["api.test"], |c| c).await;
    let got = https_get(&tp, "api.test", up.port(), "/", &[], false)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
}
