//! Guest DNS through the proxy (`resolve_for_guest`): the policy decides before any lookup,
//! a denied name never reaches the resolver, and every query is recorded.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sbx_net::{
    CertificateAuthority, GuestDns, Limits, MemoryLog, Policy, Preset, Proxy, ProxyConfig,
    ProxyKind, Reason, RecordType, Resolve, ResolveFuture, Scope, SocketAddrOrIp, Verdict,
};

/// A resolver that counts lookups and answers from a script keyed by name.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
    names: Mutex<Vec<String>>,
}

impl Resolve for Counting {
    fn resolve<'a>(&'a self, name: &'a str, _port: u16) -> ResolveFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.names.lock().unwrap().push(name.to_string());
        Box::pin(async move {
            match name {
                "many.ok.test" => Ok((0..40u8)
                    .map(|i| IpAddr::from([93, 184, 216, i % 20]))
                    .collect()),
                "empty.ok.test" => Ok(Vec::new()),
                "gone.ok.test" => Err(io::Error::new(io::ErrorKind::NotFound, "no such name")),
                "broken.ok.test" => Err(io::Error::other("servfail")),
                "slow.ok.test" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Vec::new())
                }
                _ => Ok(vec![
                    "93.184.216.34".parse().unwrap(),
                    "2606:2800:220:1::1".parse().unwrap(),
                    "93.184.216.34".parse().unwrap(),
                ]),
            }
        })
    }
}

fn make(policy: Policy) -> (Proxy, Arc<Counting>, Arc<MemoryLog>) {
    let resolver = Arc::new(Counting::default());
    let log = Arc::new(MemoryLog::new());
    let mut limits = Limits::default();
    limits.connect_timeout = Duration::from_millis(300);
    let config = ProxyConfig::new(Arc::new(CertificateAuthority::generate().unwrap()))
        .with_sandbox("dns")
        .with_policy(policy)
        .with_log(log.clone())
        .with_resolver(resolver.clone())
        .with_limits(limits)
        .with_override(
            "api.ok.test",
            SocketAddrOrIp::Ip("127.0.0.1".parse().unwrap()),
        )
        .unwrap();
    (Proxy::new(config).unwrap(), resolver, log)
}

fn rules() -> Policy {
    let mut p = Policy::new(Preset::DenyAll);
    p.allow(&Scope::Global, "*.ok.test").unwrap();
    p.allow(&Scope::Global, "port.test:8443").unwrap();
    p.deny(&Scope::Sandbox("dns".into()), "secret.ok.test")
        .unwrap();
    p
}

#[tokio::test]
async fn denied_names_are_never_resolved() {
    let (proxy, resolver, log) = make(rules());
    for name in [
        "secret.ok.test",
        "SECRET.ok.test.",
        "example.com",
        "ok.test",
    ] {
        assert_eq!(
            proxy.resolve_for_guest(name).await,
            GuestDns::Denied,
            "{name}"
        );
    }
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 0);
    let recs = log.records();
    assert_eq!(recs.len(), 4);
    for r in &recs {
        assert_eq!(
            (r.kind, r.proxy, r.decision, r.port, r.status),
            (
                RecordType::Dns,
                ProxyKind::Transparent,
                Verdict::Deny,
                53,
                Some(3)
            )
        );
    }
    assert_eq!(recs[0].host, "secret.ok.test");
    assert_eq!(recs[1].host, "secret.ok.test");
    assert_eq!(recs[0].reason, Reason::DomainBlocked);
    assert_eq!(
        recs[0].rule.as_deref(),
        Some("sandbox/dns:deny secret.ok.test")
    );
    assert_eq!(recs[2].reason, Reason::DefaultDeny);

    // Deny wins over `**` and allow-all too.
    let mut p = Policy::new(Preset::AllowAll);
    p.allow(&Scope::Global, "**").unwrap();
    p.deny(&Scope::Global, "example.com").unwrap();
    let (proxy, resolver, _) = make(p);
    assert_eq!(
        proxy.resolve_for_guest("example.com").await,
        GuestDns::Denied
    );
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 0);
    assert!(matches!(
        proxy.resolve_for_guest("www.example.com").await,
        GuestDns::Answer(_)
    ));
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn allowed_names_use_the_override_then_the_resolver() {
    let (proxy, resolver, log) = make(rules());
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        proxy.resolve_for_guest("API.ok.test.").await,
        GuestDns::Answer(vec![lo])
    );
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 0);
    // Allowed on one port only is enough to look the name up.
    assert_eq!(
        proxy.resolve_for_guest("port.test").await,
        GuestDns::Answer(vec![
            "93.184.216.34".parse().unwrap(),
            "2606:2800:220:1::1".parse().unwrap()
        ])
    );
    let GuestDns::Answer(many) = proxy.resolve_for_guest("many.ok.test").await else {
        panic!("answer expected");
    };
    assert_eq!(many.len(), 16);
    let mut unique = many.clone();
    unique.dedup();
    assert_eq!(unique.len(), 16);
    assert_eq!(
        *resolver.names.lock().unwrap(),
        ["port.test", "many.ok.test"]
    );
    let recs = log.records();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].host, "api.ok.test");
    assert_eq!(recs[0].rule.as_deref(), Some("global:allow *.ok.test"));
    assert_eq!(recs[1].rule.as_deref(), Some("global:allow port.test:8443"));
    for r in &recs {
        assert_eq!(
            (r.kind, r.decision, r.status),
            (RecordType::Dns, Verdict::Allow, Some(0))
        );
        assert_eq!(r.reason, Reason::DomainAllowed);
    }
}

#[tokio::test]
async fn missing_broken_and_malformed_names() {
    let (proxy, resolver, log) = make(rules());
    assert_eq!(
        proxy.resolve_for_guest("empty.ok.test").await,
        GuestDns::NotFound
    );
    assert_eq!(
        proxy.resolve_for_guest("gone.ok.test").await,
        GuestDns::NotFound
    );
    assert_eq!(
        proxy.resolve_for_guest("broken.ok.test").await,
        GuestDns::Failed
    );
    assert_eq!(
        proxy.resolve_for_guest("slow.ok.test").await,
        GuestDns::Failed
    );
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 4);
    let statuses: Vec<_> = log.records().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(3), Some(3), Some(2), Some(2)]);
    assert_eq!(log.records()[2].reason, Reason::UpstreamUnreachable);
    let long = ["a".repeat(63).as_str(); 5].join(".");
    for bad in [
        "",
        ".",
        "a..ok.test",
        "a b.ok.test",
        "x_y*.ok.test",
        "127.0.0.1",
        "0x7f000001",
        "[::1]",
        "a.ok.test:80",
        long.as_str(),
        "\u{0}.ok.test",
    ] {
        assert_eq!(
            proxy.resolve_for_guest(bad).await,
            GuestDns::NotFound,
            "{bad:?}"
        );
    }
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 4);
    assert!(log.records()[4..]
        .iter()
        .all(|r| r.decision == Verdict::Deny && r.status == Some(3)));
    assert_eq!(log.records().last().unwrap().host, "?.ok.test");
    proxy.resolve_for_guest("\u{1b}[31mred.test").await;
    assert_eq!(log.records().last().unwrap().host, "?[31mred.test");
}
