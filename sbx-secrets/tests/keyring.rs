//! The real Linux kernel keyring (keyutils) through `KeyringStore`, and error mapping through
//! keyring-core's mock store.

mod common;

use std::sync::Arc;

use sbx_secrets::secrecy::{ExposeSecret, SecretString};
use sbx_secrets::{Catalog, Error, KeyringStore, Masked, Scope, SecretStore, Secrets, StoreKind};

#[test]
fn kernel_keyring_round_trip() {
    let Some(store) = common::kernel_keyring("rt") else {
        return;
    };
    let sandbox = Scope::sandbox("my-box").unwrap();
    let _cleanup = common::Cleanup {
        store: store.clone(),
        keys: vec![
            (Scope::Global, "github".into()),
            (sandbox.clone(), "github".into()),
        ],
    };
    assert_eq!(store.kind(), StoreKind::Keyring);
    assert!(store.describe().contains("lost at reboot"));
    assert!(store.get(&Scope::Global, "github").unwrap().is_none());

    let v1 = SecretString::from("ghp_first-value-0123456789abcdefghijkl");
    store.set(&Scope::Global, "github", &v1).unwrap();
    let got = store.get(&Scope::Global, "github").unwrap().unwrap();
    assert_eq!(got.expose_secret(), v1.expose_secret());

    // Scopes are separate keys.
    assert!(store.get(&sandbox, "github").unwrap().is_none());
    store
        .set(&sandbox, "github", &SecretString::from("sandbox-value"))
        .unwrap();
    assert_eq!(
        store
            .get(&sandbox, "github")
            .unwrap()
            .unwrap()
            .expose_secret(),
        "sandbox-value"
    );

    // Overwrite replaces.
    store
        .set(&Scope::Global, "github", &SecretString::from("second"))
        .unwrap();
    assert_eq!(
        store
            .get(&Scope::Global, "github")
            .unwrap()
            .unwrap()
            .expose_secret(),
        "second"
    );

    // A second store object in the same namespace (another process, in effect) sees it.
    let again = KeyringStore::kernel(store.namespace()).unwrap();
    assert_eq!(
        again
            .get(&Scope::Global, "github")
            .unwrap()
            .unwrap()
            .expose_secret(),
        "second"
    );

    assert!(store.delete(&Scope::Global, "github").unwrap());
    assert!(store.get(&Scope::Global, "github").unwrap().is_none());
    assert!(!store.delete(&Scope::Global, "github").unwrap());
    assert!(store.delete(&sandbox, "github").unwrap());
    assert!(store.get(&sandbox, "github").unwrap().is_none());
}

#[test]
fn secrets_over_the_kernel_keyring() {
    let Some(store) = common::kernel_keyring("secrets") else {
        return;
    };
    let _cleanup = common::Cleanup {
        store: store.clone(),
        keys: vec![(Scope::Global, "openai".into())],
    };
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets::new(
        Catalog::file(dir.path().join("catalog.json")),
        store.clone(),
    );
    let token = SecretString::from("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789");
    secrets
        .set_service(&Scope::Global, "openai", &token, false)
        .unwrap();
    let listed = secrets.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].entry.store, StoreKind::Keyring);
    assert_eq!(listed[0].secret, Masked::Value("sk-p...6789".into()));

    // After a reboot the keyring is empty but the catalog remains: the listing says so.
    store.delete(&Scope::Global, "openai").unwrap();
    assert_eq!(secrets.list().unwrap()[0].secret, Masked::Missing);

    secrets.remove(&Scope::Global, "openai").unwrap();
    assert!(secrets.list().unwrap().is_empty());
}

/// A keychain that refuses access produces an error that names the store and says what to do.
#[test]
fn locked_keychain_is_a_clear_error() {
    let mock = keyring_core::mock::Store::new().unwrap();
    let store =
        KeyringStore::from_keyring_core(mock.clone(), StoreKind::SecretService, "sbx").unwrap();
    store
        .set(&Scope::Global, "github", &SecretString::from("value"))
        .unwrap();
    let creds = mock.inner.lock().unwrap();
    let cred = creds.borrow()[0].clone();
    drop(creds);
    cred.set_error(keyring_core::Error::NoStorageAccess(
        "collection is locked".into(),
    ));
    let err = store.get(&Scope::Global, "github").unwrap_err();
    assert!(matches!(
        err,
        Error::StoreLocked {
            store: StoreKind::SecretService,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(msg.contains("secret-service store is locked"), "{msg}");
    assert!(msg.contains("SBX_SECRET_STORE"), "{msg}");

    cred.set_error(keyring_core::Error::PlatformFailure(
        "dbus: no reply".into(),
    ));
    let err = store
        .set(&Scope::Global, "github", &SecretString::from("new"))
        .unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable { .. }), "{err:?}");
    // The failed write left the old value.
    assert_eq!(
        store
            .get(&Scope::Global, "github")
            .unwrap()
            .unwrap()
            .expose_secret(),
        "value"
    );

    // Through `Secrets`, a failed store write leaves no catalog entry behind.
    let secrets = Secrets::new(Catalog::in_memory(), Arc::new(store.clone()));
    cred.set_error(keyring_core::Error::NoStorageAccess("locked".into()));
    assert!(secrets
        .set_service(&Scope::Global, "github", &SecretString::from("x"), true)
        .is_err());
    assert!(secrets.list().unwrap().is_empty());
}
