//! The catalog: which secrets exist, what they are for and which store holds each value.
//! It holds no values, so it is a plain JSON file (mode 0600, written atomically).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::error::{Error, Result};
use crate::model::{Scope, SecretEntry};

#[derive(Default, Serialize, Deserialize)]
struct CatalogFile {
    version: u32,
    secrets: Vec<SecretEntry>,
}

/// Where the catalog lives.
#[derive(Debug)]
pub struct Catalog {
    path: Option<PathBuf>,
    memory: Mutex<Vec<SecretEntry>>,
}

impl Catalog {
    /// A catalog in a JSON file (created on first write).
    pub fn file(path: impl Into<PathBuf>) -> Catalog {
        Catalog {
            path: Some(path.into()),
            memory: Mutex::new(Vec::new()),
        }
    }

    /// A catalog in memory.
    pub fn in_memory() -> Catalog {
        Catalog {
            path: None,
            memory: Mutex::new(Vec::new()),
        }
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// All entries, sorted by scope (global first) and name.
    pub fn list(&self) -> Result<Vec<SecretEntry>> {
        let mut v = match &self.path {
            Some(p) => load(p)?,
            None => self.mem().clone(),
        };
        v.sort_by(|a, b| (&a.scope, &a.name).cmp(&(&b.scope, &b.name)));
        Ok(v)
    }

    /// The entry for a scope and name.
    pub fn find(&self, scope: &Scope, name: &str) -> Result<Option<SecretEntry>> {
        Ok(self
            .list()?
            .into_iter()
            .find(|e| &e.scope == scope && e.name == name))
    }

    /// Inserts or replaces an entry; returns the previous one.
    pub(crate) fn upsert(&self, entry: SecretEntry) -> Result<Option<SecretEntry>> {
        self.update(|list| {
            let old = take(list, &entry.scope, &entry.name);
            list.push(entry);
            old
        })
    }

    /// Removes an entry; returns it.
    pub(crate) fn remove(&self, scope: &Scope, name: &str) -> Result<Option<SecretEntry>> {
        self.update(|list| take(list, scope, name))
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Vec<SecretEntry>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update<T>(&self, f: impl FnOnce(&mut Vec<SecretEntry>) -> T) -> Result<T> {
        match &self.path {
            None => Ok(f(&mut self.mem())),
            Some(p) => {
                let _lock = atomic::lock(p)?;
                let mut list = load(p)?;
                let out = f(&mut list);
                let file = CatalogFile {
                    version: 1,
                    secrets: list,
                };
                let mut json = serde_json::to_vec_pretty(&file).expect("the catalog serializes");
                json.push(b'\n');
                atomic::write(p, &json)?;
                Ok(out)
            }
        }
    }
}

fn take(list: &mut Vec<SecretEntry>, scope: &Scope, name: &str) -> Option<SecretEntry> {
    let i = list
        .iter()
        .position(|e| &e.scope == scope && e.name == name)?;
    Some(list.remove(i))
}

fn load(path: &Path) -> Result<Vec<SecretEntry>> {
    let Some(raw) = atomic::read(path)? else {
        return Ok(Vec::new());
    };
    let file: CatalogFile = serde_json::from_slice(&raw).map_err(|e| Error::Io {
        what: "malformed secrets catalog",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    if file.version != 1 {
        return Err(Error::Io {
            what: "unsupported secrets catalog version in",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "version"),
        });
    }
    Ok(file.secrets)
}
