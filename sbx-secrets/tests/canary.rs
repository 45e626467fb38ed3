//! A canary secret goes through every operation and every store; it must never show up in
//! logs, errors, `Debug` output, listings or files on disk.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use sbx_secrets::secrecy::{ExposeSecret, SecretString};
use sbx_secrets::{
    Catalog, CustomSecret, FileStore, FileStoreConfig, KdfParams, SandboxName, Scope, SecretStore,
    Secrets, Unlock,
};

const CANARY: &str = "CANARY-6d1f0b7e-9a4c-4c55-b0f2-1e2d3c4b5a69";
/// A middle piece of the canary: masking may show its ends, never this.
const MIDDLE: &str = "9a4c-4c55";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(CANARY), "canary in {what}: {text}");
    assert!(
        !text.contains(MIDDLE),
        "part of the canary in {what}: {text}"
    );
}

/// Runs the whole life of a secret and returns everything it printed, logged or formatted.
fn exercise(secrets: &Secrets) -> String {
    let mut seen = String::new();
    let canary = SecretString::from(CANARY);
    let sb = SandboxName::new("canary-box").unwrap();
    let scope = Scope::Sandbox(sb.clone());

    let e = secrets
        .set_service(&Scope::Global, "github", &canary, false)
        .unwrap();
    seen += &format!("{e:?} {canary:?}\n");
    let e = secrets
        .set_custom(
            &scope,
            CustomSecret::new("CANARY_KEY").host("api.example.com"),
            &canary,
            false,
        )
        .unwrap();
    seen += &format!("{e:?}\n");
    // Errors on a second set, and on bad input that contains the canary.
    let err = secrets
        .set_service(&Scope::Global, "github", &canary, false)
        .unwrap_err();
    seen += &format!("{err} {err:?}\n");
    let bad = SecretString::from(format!("{CANARY}\n{CANARY}"));
    let err = secrets
        .set_service(&scope, "openai", &bad, false)
        .unwrap_err();
    seen += &format!("{err} {err:?}\n");
    let err = secrets
        .set_service(&scope, &format!("svc-{CANARY}"), &canary, false)
        .unwrap_err();
    seen += &format!("{err} {err:?}\n");

    for l in secrets.list().unwrap() {
        seen += &format!("{l:?} {}\n", l.secret);
    }
    for b in secrets.bindings(&sb).unwrap() {
        seen += &format!("{b:?}\n");
        assert!(!b.sentinel.as_str().contains(CANARY));
    }
    // "Used": the proxy's lookup returns the value, which is the point, but formats redacted.
    let v = secrets.resolve(&sb, "github").unwrap().unwrap();
    assert_eq!(v.expose_secret(), CANARY);
    seen += &format!("{v:?} {secrets:?}\n");
    for s in secrets.stores() {
        seen += &format!("{s:?} {}\n", s.describe());
    }
    secrets.remove(&Scope::Global, "github").unwrap();
    secrets.remove(&scope, "canary-key").unwrap();
    let err = secrets.remove(&scope, "canary-key").unwrap_err();
    seen += &format!("{err} {err:?}\n");
    assert!(secrets.resolve(&sb, "github").unwrap().is_none());
    seen
}

fn with_logs(f: impl FnOnce() -> String) -> (String, String) {
    let buf = Captured::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, logs)
}

#[test]
fn canary_never_leaks_from_memory_store() {
    let (out, logs) = with_logs(|| exercise(&Secrets::in_memory()));
    assert_clean("output", &out);
    assert_clean("logs", &logs);
    assert!(logs.contains("secret set"), "logging works: {logs}");
}

#[test]
fn canary_never_leaks_from_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = FileStoreConfig::new(dir.path().join("s.enc")).kdf(KdfParams::new(256, 1, 1));
    let (out, logs) = with_logs(|| {
        let store = FileStore::open(cfg, Unlock::Passphrase("pw".to_string().into())).unwrap();
        let secrets = Secrets::new(
            Catalog::file(dir.path().join("catalog.json")),
            Arc::new(store),
        );
        exercise(&secrets)
    });
    assert_clean("output", &out);
    assert_clean("logs", &logs);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        let raw = std::fs::read(&p).unwrap();
        assert_clean(&p.display().to_string(), &String::from_utf8_lossy(&raw));
    }
}

#[test]
fn canary_never_leaks_from_kernel_keyring() {
    let Some(store) = common::kernel_keyring("canary") else {
        return;
    };
    let _cleanup = common::Cleanup {
        store: store.clone(),
        keys: vec![
            (Scope::Global, "github".into()),
            (Scope::sandbox("canary-box").unwrap(), "canary-key".into()),
        ],
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, logs) = with_logs(|| {
        let secrets = Secrets::new(
            Catalog::file(dir.path().join("catalog.json")),
            store.clone(),
        );
        exercise(&secrets)
    });
    assert_clean("output", &out);
    assert_clean("logs", &logs);
    assert!(store.get(&Scope::Global, "github").unwrap().is_none());
}
