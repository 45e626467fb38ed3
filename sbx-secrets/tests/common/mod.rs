//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::print_stderr)] // The skip note is for the test log.

use std::sync::Arc;

use sbx_secrets::{KeyringStore, Scope, SecretStore};

/// A namespace no other test (or user) uses.
pub fn unique_namespace(tag: &str) -> String {
    format!(
        "sbx-test-{tag}-{}-{}",
        std::process::id(),
        sbx_secrets::random_alnum(8).unwrap()
    )
}

/// The real kernel-keyring store in a fresh namespace, or `None` (with a note on stderr) when
/// the kernel refuses keyutils here. `SBX_REQUIRE_KEYRING=1` turns the skip into a failure.
pub fn kernel_keyring(tag: &str) -> Option<Arc<KeyringStore>> {
    let store = KeyringStore::kernel(&unique_namespace(tag)).and_then(|s| {
        s.probe()?;
        Ok(s)
    });
    match store {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            if std::env::var_os("SBX_REQUIRE_KEYRING").is_some_and(|v| v == "1") {
                panic!("the kernel keyring is required but unusable: {e}");
            }
            eprintln!("SKIPPED: the kernel refuses keyutils here: {e}");
            None
        }
    }
}

/// Deletes the listed keys when dropped, so a failing test leaves nothing in the user's keyring.
pub struct Cleanup {
    pub store: Arc<dyn SecretStore>,
    pub keys: Vec<(Scope, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (scope, name) in &self.keys {
            let _ = self.store.delete(scope, name);
        }
    }
}
