//! An in-memory store for tests and embedders.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use secrecy::SecretString;

use super::{SecretStore, StoreKind};
use crate::error::Result;
use crate::model::Scope;

/// Values in process memory, gone when the process exits. `Debug` shows keys only.
#[derive(Default)]
pub struct MemoryStore {
    values: Mutex<HashMap<(Scope, String), SecretString>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Scope, String), SecretString>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.lock();
        let mut keys: Vec<String> = map.keys().map(|(s, n)| format!("{s}/{n}")).collect();
        keys.sort();
        f.debug_struct("MemoryStore").field("keys", &keys).finish()
    }
}

impl SecretStore for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn describe(&self) -> String {
        "process memory (lost when the process exits)".into()
    }

    fn get(&self, scope: &Scope, name: &str) -> Result<Option<SecretString>> {
        Ok(self.lock().get(&(scope.clone(), name.to_string())).cloned())
    }

    fn set(&self, scope: &Scope, name: &str, value: &SecretString) -> Result<()> {
        self.lock()
            .insert((scope.clone(), name.to_string()), value.clone());
        Ok(())
    }

    fn delete(&self, scope: &Scope, name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .remove(&(scope.clone(), name.to_string()))
            .is_some())
    }
}
