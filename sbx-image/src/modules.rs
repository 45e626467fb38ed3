//! Kernel module resolution without `depmod`: each module's `.modinfo` `depends=` (and
//! `softdep=` `pre:` names that are modules) gives its dependencies; `modules.builtin` says
//! which names need no file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::elf;
use crate::error::{Error, Result};

/// One loadable module, with its direct dependencies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KernelModule {
    /// The module name (dashes as underscores), e.g. `virtio_rng`.
    pub name: String,
    /// Path relative to `/lib/modules/<version>`, e.g. `kernel/drivers/char/hw_random/virtio-rng.ko`.
    pub path: String,
    /// Names of the modules it needs loaded first.
    pub depends: Vec<String>,
}

/// The modules to put into an initramfs: loadable ones in load order, and the wanted names
/// the kernel has built in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModuleSet {
    /// Dependencies before dependents, each once.
    pub modules: Vec<KernelModule>,
    /// Wanted (or depended-on) names that are built into the kernel.
    pub builtin: Vec<String>,
}

/// The kernel's module name for a file name or path: `virtio-rng.ko` -> `virtio_rng`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

struct Tree {
    dir: PathBuf,
    files: BTreeMap<String, String>,
    builtin: HashSet<String>,
}

fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::io("read module directory", dir))? {
        let entry = entry.map_err(Error::io("read module directory", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{rel}/{name}");
        let ft = entry
            .file_type()
            .map_err(Error::io("stat module", entry.path()))?;
        if ft.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else if name.contains(".ko") {
            out.insert(module_name(&name), rel);
        }
    }
    Ok(())
}

impl Tree {
    fn open(dir: &Path) -> Result<Self> {
        let mut files = BTreeMap::new();
        walk(&dir.join("kernel"), "kernel", &mut files)?;
        let builtin = match std::fs::read_to_string(dir.join("modules.builtin")) {
            Ok(t) => t.lines().map(module_name).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => {
                return Err(Error::io(
                    "read modules.builtin",
                    dir.join("modules.builtin"),
                )(e))
            }
        };
        Ok(Tree {
            dir: dir.to_owned(),
            files,
            builtin,
        })
    }

    fn deps_of(&self, rel: &str) -> Result<Vec<String>> {
        let path = self.dir.join(rel);
        let bytes = std::fs::read(&path).map_err(Error::io("read kernel module", &path))?;
        if !bytes.starts_with(b"\x7fELF") {
            return Err(Error::format(
                rel,
                "compressed modules are not supported; unpack them first",
            ));
        }
        let mut deps = Vec::new();
        for (k, v) in elf::modinfo(rel, &bytes)? {
            match k.as_str() {
                "depends" => deps.extend(v.split(',').filter(|s| !s.is_empty()).map(module_name)),
                "softdep" => {
                    // "pre: a b post: c": `pre` modules must be there first; aliases
                    // (such as `crc32c`) that are not module names are skipped.
                    let mut pre = false;
                    for word in v.split_whitespace() {
                        match word {
                            "pre:" => pre = true,
                            "post:" => pre = false,
                            w if pre && self.files.contains_key(&module_name(w)) => {
                                deps.push(module_name(w))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        deps.dedup();
        Ok(deps)
    }

    fn visit(
        &self,
        name: &str,
        needed_by: &str,
        set: &mut ModuleSet,
        done: &mut HashSet<String>,
        stack: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(Error::format(
                format!("kernel module {name}"),
                format!("dependency cycle through {}", stack.join(" -> ")),
            ));
        }
        let Some(rel) = self.files.get(name) else {
            if self.builtin.contains(name) {
                done.insert(name.to_owned());
                set.builtin.push(name.to_owned());
                return Ok(());
            }
            return Err(Error::Module {
                module: name.to_owned(),
                needed_by: needed_by.to_owned(),
            });
        };
        let depends = self.deps_of(rel)?;
        stack.push(name.to_owned());
        for d in &depends {
            self.visit(d, name, set, done, stack)?;
        }
        stack.pop();
        done.insert(name.to_owned());
        set.modules.push(KernelModule {
            name: name.to_owned(),
            path: rel.clone(),
            depends,
        });
        Ok(())
    }
}

impl ModuleSet {
    /// Resolves `wanted` module names in `dir` (an unpacked `/lib/modules/<version>`).
    pub fn resolve(dir: &Path, wanted: &[String]) -> Result<Self> {
        let tree = Tree::open(dir)?;
        let mut set = ModuleSet::default();
        let mut done = HashSet::new();
        for w in wanted {
            tree.visit(
                &module_name(w),
                "the recipe",
                &mut set,
                &mut done,
                &mut Vec::new(),
            )?;
        }
        Ok(set)
    }

    /// `modules.dep` text for these modules, in `depmod`'s format: each module's path, then
    /// the paths of all its dependencies, the ones to load last first.
    pub fn modules_dep(&self) -> String {
        let by_name: BTreeMap<&str, &KernelModule> =
            self.modules.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut out = String::new();
        for m in &self.modules {
            // The load order restricted to this module's dependency closure.
            let mut closure = HashSet::new();
            let mut todo: Vec<&str> = m.depends.iter().map(String::as_str).collect();
            while let Some(n) = todo.pop() {
                if let Some(d) = by_name.get(n) {
                    if closure.insert(n) {
                        todo.extend(d.depends.iter().map(String::as_str));
                    }
                }
            }
            out.push_str(&m.path);
            out.push(':');
            for d in self
                .modules
                .iter()
                .rev()
                .filter(|d| closure.contains(d.name.as_str()))
            {
                out.push(' ');
                out.push_str(&d.path);
            }
            out.push('\n');
        }
        out
    }

    /// Names of the loadable modules, in load order.
    pub fn names(&self) -> Vec<&str> {
        self.modules.iter().map(|m| m.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ModuleSet {
        let m = |name: &str, path: &str, deps: &[&str]| KernelModule {
            name: name.into(),
            path: path.into(),
            depends: deps.iter().map(|s| s.to_string()).collect(),
        };
        ModuleSet {
            modules: vec![
                m("virtio", "kernel/v/virtio.ko", &[]),
                m("virtio_ring", "kernel/v/virtio_ring.ko", &[]),
                m("failover", "kernel/n/failover.ko", &[]),
                m("net_failover", "kernel/n/net_failover.ko", &["failover"]),
                m(
                    "virtio_net",
                    "kernel/n/virtio_net.ko",
                    &["virtio_ring", "virtio", "net_failover"],
                ),
            ],
            builtin: vec!["ext4".into()],
        }
    }

    #[test]
    fn names_normalize_dashes_and_suffixes() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
        assert_eq!(module_name("overlay.ko.xz"), "overlay");
        assert_eq!(module_name("virtio_mmio"), "virtio_mmio");
    }

    #[test]
    fn modules_dep_lists_the_whole_closure() {
        let text = set().modules_dep();
        let line = text
            .lines()
            .find(|l| l.starts_with("kernel/n/virtio_net.ko:"))
            .unwrap();
        for d in [
            "virtio.ko",
            "virtio_ring.ko",
            "net_failover.ko",
            "failover.ko",
        ] {
            assert!(line.contains(d), "{line}");
        }
        assert!(text.contains("kernel/v/virtio.ko:\n"));
        // Readable by the agent's own parser, which loads in dependency order.
        let idx = sbx_guest::ModuleIndex::parse(&text);
        let order = idx.load_order(&["virtio_net"]).unwrap();
        let names: Vec<String> = order
            .iter()
            .map(|p| module_name(&p.to_string_lossy()))
            .collect();
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
        assert_eq!(names.len(), 5);
    }

    #[test]
    fn resolve_missing_dir_is_an_error() {
        assert!(ModuleSet::resolve(Path::new("/nonexistent-sbx"), &["x".into()]).is_err());
    }
}
