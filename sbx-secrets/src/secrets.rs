//! [`Secrets`]: a catalog plus the stores that hold values, with scopes, validation and
//! sentinels.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::SecretString;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::model::{
    normalize_host, validate_env, validate_name, SandboxName, Scope, SecretEntry, SecretKind,
};
use crate::sentinel::{Placeholder, Sentinel};
use crate::services::{HeaderFormat, Service};
use crate::store::{MemoryStore, SecretStore, StoreKind};
use crate::token::{mask, validate_token};

/// A custom secret's binding: its name, hosts, env var and placeholder.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CustomSecret {
    /// The name (`sbx secret rm` takes it).
    pub name: String,
    /// Hosts it may be sent to.
    pub hosts: Vec<String>,
    /// The variable that carries the placeholder in the sandbox.
    pub env: String,
    /// The placeholder pattern (default `sbx-{rand}`).
    pub placeholder: Placeholder,
}

impl CustomSecret {
    /// A custom secret carried in `env`, named after it (`MY_API_KEY` -> `my-api-key`).
    pub fn new(env: &str) -> CustomSecret {
        CustomSecret {
            name: env.to_ascii_lowercase().replace('_', "-"),
            hosts: Vec::new(),
            env: env.to_string(),
            placeholder: Placeholder::default(),
        }
    }

    /// Sets the name.
    pub fn name(mut self, name: &str) -> CustomSecret {
        self.name = name.to_string();
        self
    }

    /// Adds a host.
    pub fn host(mut self, host: &str) -> CustomSecret {
        self.hosts.push(host.to_string());
        self
    }

    /// Sets the placeholder pattern.
    pub fn placeholder(mut self, placeholder: Placeholder) -> CustomSecret {
        self.placeholder = placeholder;
        self
    }
}

/// What a listing shows in place of the value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Masked {
    /// The masked value (see [`mask`](crate::mask)).
    Value(String),
    /// The catalog names it but the store has no value (e.g. the kernel keyring after a
    /// reboot): set it again.
    Missing,
    /// The store could not be asked; the reason is short and never holds the value.
    Unavailable(String),
}

impl fmt::Display for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Masked::Value(v) => f.write_str(v),
            Masked::Missing => f.write_str("(missing)"),
            Masked::Unavailable(_) => f.write_str("(unavailable)"),
        }
    }
}

/// One row of [`Secrets::list`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Listed {
    /// The entry.
    pub entry: SecretEntry,
    /// Its masked value or why there is none.
    pub secret: Masked,
}

/// What a sandbox gets for one secret: the sentinel it sees and where the real value may go.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Binding {
    /// The secret's name (the credential name the proxy looks up).
    pub name: String,
    /// The scope it came from (a sandbox secret overrides a global one).
    pub scope: Scope,
    /// Hosts the value may be sent to.
    pub hosts: Vec<String>,
    /// Variables that carry the sentinel in the sandbox.
    pub env: Vec<String>,
    /// How clients send it (built-in services only).
    pub header: Option<HeaderFormat>,
    /// The sentinel: fresh for each call, so unique per sandbox and secret.
    pub sentinel: Sentinel,
}

/// Secrets of all scopes: a [`Catalog`] describing them and the stores holding their values.
/// New values go to the first store; entries held by other stores are read from those if they
/// were added with [`Secrets::with_store`].
pub struct Secrets {
    catalog: Catalog,
    stores: Vec<Arc<dyn SecretStore>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("catalog", &self.catalog.path())
            .field(
                "stores",
                &self.stores.iter().map(|s| s.kind()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Secrets {
    /// Secrets described by `catalog`, stored in `store`.
    pub fn new(catalog: Catalog, store: Arc<dyn SecretStore>) -> Secrets {
        Secrets {
            catalog,
            stores: vec![store],
        }
    }

    /// Everything in memory (tests, embedders).
    pub fn in_memory() -> Secrets {
        Secrets::new(Catalog::in_memory(), Arc::new(MemoryStore::new()))
    }

    /// Adds a store to read entries it holds (writes still go to the first store).
    pub fn with_store(mut self, store: Arc<dyn SecretStore>) -> Secrets {
        if !self.stores.iter().any(|s| s.kind() == store.kind()) {
            self.stores.push(store);
        }
        self
    }

    /// The store new values go to.
    pub fn store(&self) -> &dyn SecretStore {
        self.stores[0].as_ref()
    }

    /// The open stores.
    pub fn stores(&self) -> impl Iterator<Item = &dyn SecretStore> {
        self.stores.iter().map(|s| s.as_ref())
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn store_of(&self, entry: &SecretEntry) -> Result<&dyn SecretStore> {
        self.stores
            .iter()
            .find(|s| s.kind() == entry.store)
            .map(|s| s.as_ref())
            .ok_or_else(|| Error::StoreNotOpen {
                name: entry.name.clone(),
                store: entry.store,
            })
    }

    /// The entry of a scope and name, if any.
    pub fn entry(&self, scope: &Scope, name: &str) -> Result<Option<SecretEntry>> {
        self.catalog.find(scope, name)
    }

    /// Stores the token of a built-in service. Refuses to replace an existing secret unless
    /// `overwrite`.
    pub fn set_service(
        &self,
        scope: &Scope,
        service: &str,
        token: &SecretString,
        overwrite: bool,
    ) -> Result<SecretEntry> {
        let svc = Service::lookup(service)?;
        validate_token(token)?;
        self.put(scope, svc.name, SecretKind::Service, token, overwrite)
    }

    /// Stores a custom secret. Refuses to replace an existing secret unless `overwrite`.
    pub fn set_custom(
        &self,
        scope: &Scope,
        custom: CustomSecret,
        token: &SecretString,
        overwrite: bool,
    ) -> Result<SecretEntry> {
        validate_name(&custom.name)?;
        if Service::get(&custom.name).is_some() {
            return Err(Error::ReservedName(custom.name));
        }
        validate_env(&custom.env)?;
        if custom.hosts.is_empty() {
            return Err(Error::InvalidHost {
                host: String::new(),
                why: "bind the secret to at least one host with --host",
            });
        }
        let mut hosts = Vec::new();
        for h in &custom.hosts {
            let h = normalize_host(h)?;
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        validate_token(token)?;
        let kind = SecretKind::Custom {
            hosts,
            env: custom.env,
            placeholder: custom.placeholder,
        };
        self.put(scope, &custom.name, kind, token, overwrite)
    }

    /// Writes the value, then the catalog; if the catalog write fails the value is put back
    /// as it was, so nothing is left half-written.
    fn put(
        &self,
        scope: &Scope,
        name: &str,
        kind: SecretKind,
        token: &SecretString,
        overwrite: bool,
    ) -> Result<SecretEntry> {
        let old_entry = self.catalog.find(scope, name)?;
        if old_entry.is_some() && !overwrite {
            return Err(Error::Exists {
                name: name.to_string(),
                scope: scope.to_string(),
            });
        }
        let store = self.store();
        let previous = store.get(scope, name)?;
        let restore = || {
            let restored = match &previous {
                Some(v) => store.set(scope, name, v),
                None => store.delete(scope, name).map(|_| ()),
            };
            if restored.is_err() {
                tracing::error!(%scope, name, store = %store.kind(), "could not roll back a failed secret write");
            }
        };
        // A store may fail half-way (keyutils: added to the session keyring, then the link
        // into the persistent keyring fails): put the old state back.
        if let Err(e) = store.set(scope, name, token) {
            restore();
            return Err(e);
        }
        let entry = SecretEntry {
            scope: scope.clone(),
            name: name.to_string(),
            kind,
            store: store.kind(),
            updated: now(),
        };
        if let Err(e) = self.catalog.upsert(entry.clone()) {
            restore();
            return Err(e);
        }
        // An entry that moved stores leaves no copy behind in the old one.
        if let Some(old) = old_entry.filter(|o| o.store != entry.store) {
            if let Ok(s) = self.store_of(&old) {
                let _ = s.delete(scope, name);
            }
        }
        tracing::info!(%scope, name, store = %entry.store, "secret set");
        Ok(entry)
    }

    /// Removes a secret (value and catalog entry).
    pub fn remove(&self, scope: &Scope, name: &str) -> Result<SecretEntry> {
        let Some(entry) = self.catalog.find(scope, name)? else {
            return Err(Error::NotFound {
                name: crate::error::echo_name(name),
                scope: scope.to_string(),
            });
        };
        let store = self.store_of(&entry)?;
        let previous = store.get(scope, name)?;
        store.delete(scope, name)?;
        if let Err(e) = self.catalog.remove(scope, name) {
            if let Some(v) = previous {
                let _ = store.set(scope, name, &v);
            }
            return Err(e);
        }
        tracing::info!(%scope, name, store = %entry.store, "secret removed");
        Ok(entry)
    }

    /// Every entry with its masked value.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        for entry in self.catalog.list()? {
            let secret = match self
                .store_of(&entry)
                .and_then(|s| s.get(&entry.scope, &entry.name))
            {
                Ok(Some(v)) => Masked::Value(mask(&v)),
                Ok(None) => Masked::Missing,
                Err(e) => Masked::Unavailable(e.to_string()),
            };
            out.push(Listed { entry, secret });
        }
        Ok(out)
    }

    /// The value stored in exactly this scope.
    pub fn get(&self, scope: &Scope, name: &str) -> Result<Option<SecretString>> {
        match self.catalog.find(scope, name)? {
            Some(entry) => self.store_of(&entry)?.get(scope, name),
            None => Ok(None),
        }
    }

    /// The entries that apply to a sandbox: its own, plus global ones it does not override.
    pub fn effective(&self, sandbox: &SandboxName) -> Result<Vec<SecretEntry>> {
        let all = self.catalog.list()?;
        let own = Scope::Sandbox(sandbox.clone());
        let mut out: Vec<SecretEntry> = all.iter().filter(|e| e.scope == own).cloned().collect();
        for g in all.iter().filter(|e| e.scope == Scope::Global) {
            if !out.iter().any(|e| e.name == g.name) {
                out.push(g.clone());
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The value a sandbox's requests get for `name`: the sandbox's own secret, else the
    /// global one. This is what a proxy's credential provider calls.
    pub fn resolve(&self, sandbox: &SandboxName, name: &str) -> Result<Option<SecretString>> {
        let own = Scope::Sandbox(sandbox.clone());
        if self.catalog.find(&own, name)?.is_some() {
            return self.get(&own, name);
        }
        self.get(&Scope::Global, name)
    }

    /// Fresh sentinels for every secret that applies to a sandbox.
    pub fn bindings(&self, sandbox: &SandboxName) -> Result<Vec<Binding>> {
        let mut out: Vec<Binding> = Vec::new();
        for entry in self.effective(sandbox)? {
            let pattern = entry.placeholder();
            let mut sentinel = Sentinel::generate(&pattern)?;
            // Randomness makes a repeat practically impossible; never hand out one anyway.
            while out.iter().any(|b| b.sentinel == sentinel) {
                sentinel = Sentinel::generate(&pattern)?;
            }
            let header = match entry.kind {
                SecretKind::Service => Service::get(&entry.name).map(|s| s.header),
                _ => None,
            };
            out.push(Binding {
                hosts: entry.hosts(),
                env: entry.env(),
                name: entry.name,
                scope: entry.scope,
                header,
                sentinel,
            });
        }
        Ok(out)
    }
}

/// The secrets of one sandbox, as a proxy's credential provider needs them: a name in, the
/// effective value (sandbox scope, else global) out. Cheap to clone; `Send + Sync + 'static`.
#[derive(Clone, Debug)]
pub struct SandboxSecrets {
    secrets: Arc<Secrets>,
    sandbox: SandboxName,
}

impl SandboxSecrets {
    /// A view of `secrets` for `sandbox`.
    pub fn new(secrets: Arc<Secrets>, sandbox: SandboxName) -> SandboxSecrets {
        SandboxSecrets { secrets, sandbox }
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &SandboxName {
        &self.sandbox
    }

    /// The value for `name`, or `None` when there is none or the store fails (the failure is
    /// logged, without the value). This is the shape of sbx-net's `CredentialProvider::secret`.
    pub fn secret(&self, name: &str) -> Option<SecretString> {
        match self.secrets.resolve(&self.sandbox, name) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(sandbox = %self.sandbox.as_str(), name, "secret lookup failed: {e}");
                None
            }
        }
    }
}

/// Stores of every kind an entry of `kinds` might name, for callers that open extra stores.
pub fn kinds_in(entries: &[SecretEntry]) -> Vec<StoreKind> {
    let mut v: Vec<StoreKind> = entries.iter().map(|e| e.store).collect();
    v.sort();
    v.dedup();
    v
}
