//! Scopes, overrides, masking, sentinels and custom placeholders through the public API.

use std::collections::HashSet;
use std::sync::Arc;

use sbx_secrets::secrecy::{ExposeSecret, SecretString};
use sbx_secrets::{
    mask, Catalog, CustomSecret, Error, MemoryStore, Placeholder, SandboxName, Scope, Secrets,
    Sentinel, Service, SERVICES,
};

fn tok(s: &str) -> SecretString {
    SecretString::from(s)
}

#[test]
fn sandbox_secret_overrides_global() {
    let s = Secrets::in_memory();
    let a = SandboxName::new("copilot-a").unwrap();
    let b = SandboxName::new("copilot-b").unwrap();
    s.set_service(&Scope::Global, "github", &tok("global-token"), false)
        .unwrap();
    s.set_service(&Scope::Global, "openai", &tok("global-openai"), false)
        .unwrap();
    s.set_service(&Scope::Sandbox(a.clone()), "github", &tok("a-token"), false)
        .unwrap();

    assert_eq!(
        s.resolve(&a, "github").unwrap().unwrap().expose_secret(),
        "a-token"
    );
    assert_eq!(
        s.resolve(&b, "github").unwrap().unwrap().expose_secret(),
        "global-token"
    );
    assert_eq!(
        s.resolve(&a, "openai").unwrap().unwrap().expose_secret(),
        "global-openai"
    );
    assert!(s.resolve(&a, "anthropic").unwrap().is_none());

    let eff = s.effective(&a).unwrap();
    let names: Vec<(String, String)> = eff
        .iter()
        .map(|e| (e.name.clone(), e.scope.to_string()))
        .collect();
    assert_eq!(
        names,
        [
            ("github".to_string(), "copilot-a".to_string()),
            ("openai".to_string(), "global".to_string())
        ]
    );

    // Removing the override falls back to the global secret.
    s.remove(&Scope::Sandbox(a.clone()), "github").unwrap();
    assert_eq!(
        s.resolve(&a, "github").unwrap().unwrap().expose_secret(),
        "global-token"
    );
    let err = s.remove(&Scope::Sandbox(a), "github").unwrap_err();
    assert_eq!(err.to_string(), "no secret `github` in scope copilot-a");
}

#[test]
fn overwrite_needs_consent() {
    let s = Secrets::in_memory();
    s.set_service(&Scope::Global, "github", &tok("one"), false)
        .unwrap();
    let err = s
        .set_service(&Scope::Global, "github", &tok("two"), false)
        .unwrap_err();
    assert!(matches!(err, Error::Exists { .. }));
    assert_eq!(
        s.get(&Scope::Global, "github")
            .unwrap()
            .unwrap()
            .expose_secret(),
        "one"
    );
    s.set_service(&Scope::Global, "github", &tok("two"), true)
        .unwrap();
    assert_eq!(
        s.get(&Scope::Global, "github")
            .unwrap()
            .unwrap()
            .expose_secret(),
        "two"
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let s = Secrets::in_memory();
    for (t, want) in [
        ("", "the token is empty"),
        (
            "abc\ndef",
            "the token contains a newline or control character",
        ),
        (
            "abc\u{1b}[0m",
            "the token contains a newline or control character",
        ),
    ] {
        let err = s
            .set_service(&Scope::Global, "github", &tok(t), false)
            .unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    let err = s
        .set_service(&Scope::Global, "gitlab", &tok("x"), false)
        .unwrap_err();
    assert!(err.to_string().contains("use `set-custom`"), "{err}");
    let err = s
        .set_custom(&Scope::Global, CustomSecret::new("X_KEY"), &tok("x"), false)
        .unwrap_err();
    assert!(err.to_string().contains("--host"), "{err}");
    let err = s
        .set_custom(
            &Scope::Global,
            CustomSecret::new("GH").name("github").host("a.com"),
            &tok("x"),
            false,
        )
        .unwrap_err();
    assert!(matches!(err, Error::ReservedName(_)));
    let err = s
        .set_custom(
            &Scope::Global,
            CustomSecret::new("K").host("**"),
            &tok("x"),
            false,
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidHost { .. }));
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn catalog_failure_rolls_the_value_back() {
    let dir = tempfile::tempdir().unwrap();
    // The catalog's directory is a file: every catalog write fails.
    std::fs::write(dir.path().join("blocker"), b"").unwrap();
    let store = Arc::new(MemoryStore::new());
    let s = Secrets::new(
        Catalog::file(dir.path().join("blocker/catalog.json")),
        store.clone(),
    );
    assert!(s
        .set_service(&Scope::Global, "github", &tok("value"), false)
        .is_err());
    use sbx_secrets::SecretStore;
    assert!(store.get(&Scope::Global, "github").unwrap().is_none());
}

#[test]
fn masking_shows_at_most_four_and_four() {
    let s = Secrets::in_memory();
    s.set_service(
        &Scope::Global,
        "anthropic",
        &tok("sk-ant-api03-abcdefghijklmnopqrstuvwxyz-WXYZ"),
        false,
    )
    .unwrap();
    s.set_service(&Scope::Global, "mistral", &tok("shorttoken123"), false)
        .unwrap();
    let listed = s.list().unwrap();
    let shown: Vec<String> = listed.iter().map(|l| l.secret.to_string()).collect();
    assert_eq!(shown, ["sk-a...WXYZ", "****"]);
    assert_eq!(mask(&tok("0123456789012345678901234")), "0123...1234");
    assert_eq!(mask(&tok("01234567890123456789012")), "****");
}

#[test]
fn sentinels_have_the_service_shape() {
    let gh = Service::get("github").unwrap().placeholder();
    let s = Sentinel::generate(&gh).unwrap();
    let v = s.as_str();
    assert!(v.starts_with("gho_"), "{v}");
    assert_eq!(v.len(), 40);
    assert!(v[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
    for svc in SERVICES {
        let p = svc.placeholder();
        let s = Sentinel::generate(&p).unwrap();
        assert!(p.matches(s.as_str()), "{} {s}", svc.name);
        assert!(s.as_str().len() >= 32);
        assert!(s.as_str().bytes().all(|b| b.is_ascii_graphic()));
    }
    let a = Sentinel::generate(&Service::get("anthropic").unwrap().placeholder()).unwrap();
    assert!(a.as_str().starts_with("sk-ant-api03-") && a.as_str().ends_with("AA"));
    let g = Sentinel::generate(&Service::get("google").unwrap().placeholder()).unwrap();
    assert!(g.as_str().starts_with("AIza") && g.as_str().len() == 39);
}

#[test]
fn sentinels_are_unique_per_sandbox_and_secret() {
    let s = Secrets::in_memory();
    for svc in ["github", "copilot", "openai"] {
        s.set_service(&Scope::Global, svc, &tok("value-value-value"), false)
            .unwrap();
    }
    let mut seen = HashSet::new();
    for i in 0..200 {
        let sb = SandboxName::new(&format!("box{i}")).unwrap();
        let bindings = s.bindings(&sb).unwrap();
        assert_eq!(bindings.len(), 3);
        for b in bindings {
            assert!(
                seen.insert(b.sentinel.as_str().to_string()),
                "repeat: {}",
                b.sentinel
            );
        }
    }
    // Asking twice for the same sandbox also gives fresh sentinels (callers persist theirs).
    let sb = SandboxName::new("box0").unwrap();
    let again = s.bindings(&sb).unwrap();
    assert!(again.iter().all(|b| !seen.contains(b.sentinel.as_str())));
    let gh = again.iter().find(|b| b.name == "github").unwrap();
    assert_eq!(gh.env, ["GH_TOKEN", "GITHUB_TOKEN"]);
    assert!(gh.hosts.contains(&"api.github.com".to_string()));
    assert_eq!(gh.header.unwrap().value, "Bearer {token}");
}

#[test]
fn custom_placeholders() {
    let s = Secrets::in_memory();
    let entry = s
        .set_custom(
            &Scope::Global,
            CustomSecret::new("MY_API_KEY")
                .host("API.Example.com")
                .host("*.example.org:8443")
                .host("api.example.com")
                .placeholder(Placeholder::parse("sk-{rand}").unwrap()),
            &tok("real-custom-value"),
            false,
        )
        .unwrap();
    assert_eq!(entry.name, "my-api-key");
    assert_eq!(entry.hosts(), ["api.example.com", "*.example.org:8443"]);
    assert_eq!(entry.env(), ["MY_API_KEY"]);

    let sb = SandboxName::new("dev").unwrap();
    let b = &s.bindings(&sb).unwrap()[0];
    assert_eq!(b.name, "my-api-key");
    assert!(b.header.is_none());
    let v = b.sentinel.as_str();
    assert!(v.starts_with("sk-") && v.len() == 35, "{v}");
    assert!(v[3..].bytes().all(|c| c.is_ascii_alphanumeric()));

    // Default placeholder, explicit name, multi-part patterns.
    let e = s
        .set_custom(
            &Scope::sandbox("dev").unwrap(),
            CustomSecret::new("TOKEN")
                .name("internal")
                .host("10.0.0.5:8080"),
            &tok("x-value"),
            false,
        )
        .unwrap();
    assert_eq!(e.placeholder().as_str(), "sbx-{rand}");
    let p = Placeholder::parse("pre_{rand:20}_mid_{rand:20}_post").unwrap();
    let v = Sentinel::generate(&p).unwrap();
    assert!(p.matches(v.as_str()) && v.as_str().ends_with("_post"));
    for bad in ["sk-", "sk-{rand:8}", "sk {rand}", "{nope}"] {
        assert!(Placeholder::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn sandbox_view_resolves_with_override() {
    fn provider<T: Send + Sync + 'static>(_: &T) {}
    let s = Secrets::in_memory();
    s.set_service(&Scope::Global, "github", &tok("global-token"), false)
        .unwrap();
    s.set_service(
        &Scope::sandbox("a").unwrap(),
        "github",
        &tok("a-token"),
        false,
    )
    .unwrap();
    let s = Arc::new(s);
    let a = sbx_secrets::SandboxSecrets::new(s.clone(), SandboxName::new("a").unwrap());
    let b = sbx_secrets::SandboxSecrets::new(s, SandboxName::new("b").unwrap());
    provider(&a);
    assert_eq!(a.secret("github").unwrap().expose_secret(), "a-token");
    assert_eq!(b.secret("github").unwrap().expose_secret(), "global-token");
    assert!(a.secret("openai").is_none());
    assert!(!format!("{a:?}").contains("token"));
}

/// A store whose `set` writes the value and then fails, like keyutils adding a key to the
/// session keyring and failing to link it into the persistent one.
#[derive(Debug, Default)]
struct HalfWrite {
    inner: MemoryStore,
    fail: std::sync::atomic::AtomicBool,
}

impl sbx_secrets::SecretStore for HalfWrite {
    fn kind(&self) -> sbx_secrets::StoreKind {
        sbx_secrets::StoreKind::Memory
    }
    fn describe(&self) -> String {
        "half-write test store".into()
    }
    fn get(&self, scope: &Scope, name: &str) -> sbx_secrets::Result<Option<SecretString>> {
        self.inner.get(scope, name)
    }
    fn set(&self, scope: &Scope, name: &str, value: &SecretString) -> sbx_secrets::Result<()> {
        self.inner.set(scope, name, value)?;
        if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Random);
        }
        Ok(())
    }
    fn delete(&self, scope: &Scope, name: &str) -> sbx_secrets::Result<bool> {
        self.inner.delete(scope, name)
    }
}

#[test]
fn a_half_written_value_is_rolled_back() {
    use sbx_secrets::SecretStore;
    let store = Arc::new(HalfWrite::default());
    let s = Secrets::new(Catalog::in_memory(), store.clone());
    s.set_service(&Scope::Global, "openai", &tok("old-value"), false)
        .unwrap();
    store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(s
        .set_service(&Scope::Global, "openai", &tok("new-value"), true)
        .is_err());
    assert_eq!(
        s.get(&Scope::Global, "openai")
            .unwrap()
            .unwrap()
            .expose_secret(),
        "old-value"
    );
    // A new secret whose write fails leaves nothing behind.
    store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(s
        .set_service(&Scope::Global, "groq", &tok("value"), false)
        .is_err());
    assert!(store.get(&Scope::Global, "groq").unwrap().is_none());
    assert_eq!(s.list().unwrap().len(), 1);
}
