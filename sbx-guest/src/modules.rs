//! Kernel module loading for the microVM path: resolve `modules.dep`, load dependencies first.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A parsed `modules.dep`: module name -> (relative path, direct and indirect dependencies).
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    modules: HashMap<String, (PathBuf, Vec<String>)>,
}

/// The module name of a path like `kernel/drivers/virtio/virtio_mmio.ko.xz`: `virtio_mmio`
/// (dashes become underscores, as the kernel does).
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

impl ModuleIndex {
    /// Parses `modules.dep` text (`path: dep-path dep-path...`).
    pub fn parse(text: &str) -> Self {
        let mut modules = HashMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(path), (PathBuf::from(path), deps));
        }
        Self { modules }
    }

    /// Paths to load, dependencies before dependents, each once, for the `wanted` modules.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<PathBuf>> {
        let mut order = Vec::new();
        let mut done = HashSet::new();
        let mut visiting = HashSet::new();
        for w in wanted {
            self.visit(&w.replace('-', "_"), &mut done, &mut visiting, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut HashSet<String>,
        visiting: &mut HashSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        let (path, deps) = self
            .modules
            .get(name)
            .ok_or_else(|| Error::Module(name.to_owned()))?;
        if !visiting.insert(name.to_owned()) {
            return Err(Error::ModuleCycle(name.to_owned()));
        }
        for d in deps {
            self.visit(d, done, visiting, order)?;
        }
        visiting.remove(name);
        done.insert(name.to_owned());
        order.push(path.clone());
        Ok(())
    }
}

/// Loads `wanted` modules (and their dependencies) from `dir` (a `/lib/modules/<version>`).
/// Modules already loaded or built in are fine.
pub fn load_modules(dir: &Path, wanted: &[&str]) -> Result<()> {
    let text = std::fs::read_to_string(dir.join("modules.dep")).map_err(|source| Error::Io {
        what: "read modules.dep",
        source,
    })?;
    let index = ModuleIndex::parse(&text);
    for rel in index.load_order(wanted)? {
        let path = dir.join(&rel);
        let file = File::open(&path).map_err(|source| Error::Io {
            what: "open kernel module",
            source,
        })?;
        let name = rel.to_string_lossy();
        let compressed = name.ends_with(".xz") || name.ends_with(".zst") || name.ends_with(".gz");
        match crate::sys::finit_module(&file, compressed) {
            Ok(()) => tracing::debug!(module = %name, "loaded"),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(Error::Io {
                    what: "load kernel module",
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/a-b.ko: kernel/c.ko
kernel/c.ko: kernel/a-b.ko
";

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/x/virtio_mmio.ko"), "virtio_mmio");
        assert_eq!(module_name("kernel/x/net-failover.ko.zst"), "net_failover");
    }

    #[test]
    fn dependencies_first_each_once() {
        let idx = ModuleIndex::parse(DEP);
        let order = idx.load_order(&["virtio_net", "virtio_mmio"]).unwrap();
        let names: Vec<String> = order
            .iter()
            .map(|p| module_name(&p.to_string_lossy()))
            .collect();
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert_eq!(names.len(), 6);
        assert!(pos("virtio") < pos("virtio_ring"));
        assert!(pos("virtio_ring") < pos("virtio_net"));
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
        assert!(pos("virtio_ring") < pos("virtio_mmio"));
    }

    #[test]
    fn unknown_and_cycles_are_errors() {
        let idx = ModuleIndex::parse(DEP);
        assert!(matches!(idx.load_order(&["nope"]), Err(Error::Module(_))));
        assert!(matches!(
            idx.load_order(&["a-b"]),
            Err(Error::ModuleCycle(_))
        ));
    }
}
