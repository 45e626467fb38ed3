//! The encrypted file store: round trip, reopening, wrong passphrase, file mode, no plaintext.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use sbx_secrets::secrecy::{ExposeSecret, SecretString};
use sbx_secrets::{
    Catalog, Error, FileStore, FileStoreConfig, KdfParams, Scope, SecretStore, Secrets, StoreKind,
    Unlock,
};

/// Cheap Argon2id costs keep the tests fast; the file records its own costs.
fn config(path: &std::path::Path) -> FileStoreConfig {
    FileStoreConfig::new(path).kdf(KdfParams::new(256, 1, 1))
}

fn pass(p: &str) -> Unlock {
    Unlock::Passphrase(SecretString::from(p))
}

#[test]
fn file_store_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets/secrets.enc");
    let value = "FILE-CANARY-7f3a9c1e-value-0123456789";
    let store = FileStore::open(config(&path), pass("correct horse")).unwrap();
    assert_eq!(store.kind(), StoreKind::File);
    assert!(!path.exists(), "nothing is written before the first value");
    assert!(store.get(&Scope::Global, "x").unwrap().is_none());

    store
        .set(&Scope::Global, "github", &SecretString::from(value))
        .unwrap();
    let sb = Scope::sandbox("box1").unwrap();
    store
        .set(&sb, "github", &SecretString::from("per-sandbox"))
        .unwrap();

    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let raw = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains(value) && !text.contains("per-sandbox"),
        "{text}"
    );
    assert!(!text.contains("FILE-CANARY"));
    assert!(text.contains("argon2id"));

    // Reopened with the passphrase: same values.
    let again = FileStore::open(config(&path), pass("correct horse")).unwrap();
    assert_eq!(
        again
            .get(&Scope::Global, "github")
            .unwrap()
            .unwrap()
            .expose_secret(),
        value
    );
    assert_eq!(
        again.get(&sb, "github").unwrap().unwrap().expose_secret(),
        "per-sandbox"
    );

    // Reopened with a cached key (what the CLI keeps in the kernel keyring).
    let key = FileStore::key_id_of(&path).unwrap().unwrap();
    assert_eq!(key, again.key_id());
    let cached = again.key().to_base64();
    let by_key = FileStore::open(
        config(&path),
        Unlock::Key(sbx_secrets::FileKey::from_base64(&cached).unwrap()),
    )
    .unwrap();
    assert!(by_key.get(&Scope::Global, "github").unwrap().is_some());

    // Writes through one handle are seen by another (every call re-reads the file).
    assert!(again.delete(&Scope::Global, "github").unwrap());
    assert!(store.get(&Scope::Global, "github").unwrap().is_none());
    assert!(!store.delete(&Scope::Global, "github").unwrap());
    assert!(store.get(&sb, "github").unwrap().is_some());

    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn wrong_passphrase_is_locked_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.enc");
    let store = FileStore::open(config(&path), pass("right")).unwrap();
    store
        .set(&Scope::Global, "a", &SecretString::from("v"))
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = FileStore::open(config(&path), pass("wrong")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::StoreLocked {
                store: StoreKind::File,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    let err = FileStore::open(config(&path), pass("")).unwrap_err();
    assert!(matches!(err, Error::StoreLocked { .. }));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn corrupt_or_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.enc");
    std::fs::write(&path, b"github=plaintext-token\n").unwrap();
    let err = FileStore::open(config(&path), pass("p")).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(!err.to_string().contains("plaintext-token"));

    // A flipped ciphertext byte fails authentication.
    let path = dir.path().join("t.enc");
    let store = FileStore::open(config(&path), pass("p")).unwrap();
    store
        .set(&Scope::Global, "a", &SecretString::from("value-value"))
        .unwrap();
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let ct = env["ciphertext"].as_str().unwrap().to_string();
    let flipped = if ct.starts_with('A') { "B" } else { "A" }.to_string() + &ct[1..];
    env["ciphertext"] = flipped.into();
    std::fs::write(&path, serde_json::to_vec(&env).unwrap()).unwrap();
    assert!(store.get(&Scope::Global, "a").is_err());
}

#[test]
fn secrets_over_the_file_store_persist_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store = FileStore::open(config(&dir.path().join("s.enc")), pass("pw")).unwrap();
        Secrets::new(
            Catalog::file(dir.path().join("catalog.json")),
            Arc::new(store),
        )
    };
    let token = SecretString::from("gsk_abcdefghijklmnopqrstuvwxyz0123456789");
    open()
        .set_service(&Scope::Global, "groq", &token, false)
        .unwrap();
    let secrets = open();
    let listed = secrets.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].entry.store, StoreKind::File);
    assert_eq!(listed[0].secret.to_string(), "gsk_...6789");
    let catalog = std::fs::read_to_string(dir.path().join("catalog.json")).unwrap();
    assert!(!catalog.contains(token.expose_secret()));
    assert_eq!(
        std::fs::metadata(dir.path().join("catalog.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}
