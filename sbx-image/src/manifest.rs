//! What a built image holds: its recipe, package versions, files with sizes and sha256.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::modules::ModuleSet;

/// The file name of an image's manifest.
pub const MANIFEST: &str = "manifest.json";

/// Which kind of image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ImageKind {
    /// A Debian root filesystem: `rootfs/` and (optionally) `rootfs.ext4`.
    Rootfs,
    /// A kernel (`vmlinuz`) and an initramfs (`initramfs.cpio`).
    Kernel,
}

impl ImageKind {
    /// `rootfs` or `kernel`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Rootfs => "rootfs",
            ImageKind::Kernel => "kernel",
        }
    }
}

/// A package and the version that went in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PackageVersion {
    /// Debian package name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// A file of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FileEntry {
    /// Path relative to the image directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Blocks actually allocated, in bytes (less than `size` for a sparse ext4 image).
    pub allocated: u64,
    /// Hex sha256 of the contents.
    pub sha256: String,
}

/// An image's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Build procedure version.
    pub format: u32,
    /// Rootfs or kernel.
    pub kind: ImageKind,
    /// Image name from the recipe.
    pub name: String,
    /// Cache key: a digest of the recipe and the resolved package versions.
    pub key: String,
    /// The recipe, as built.
    pub recipe: serde_json::Value,
    /// Seconds since the epoch when the build finished.
    pub created_unix: u64,
    /// Wall time of the build.
    pub build_seconds: f64,
    /// Every installed package (rootfs) or the packages used (kernel).
    pub packages: Vec<PackageVersion>,
    /// The image's files.
    pub files: Vec<FileEntry>,
    /// Bytes allocated by the `rootfs/` tree, and its number of entries.
    pub tree: Option<TreeSize>,
    /// Kernel release (`uname -r` in the guest).
    pub kernel_release: Option<String>,
    /// Modules in the initramfs, and the wanted ones built into the kernel.
    pub modules: Option<ModuleSet>,
    /// The log of this build (`build.log` in the image directory).
    pub log: PathBuf,
}

/// Size of a directory tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TreeSize {
    /// Allocated bytes.
    pub bytes: u64,
    /// Files, directories, links...
    pub entries: u64,
}

impl Manifest {
    /// Reads `<dir>/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(Error::io("read the manifest", &path))?;
        serde_json::from_slice(&text).map_err(|source| Error::Manifest { path, source })
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_vec_pretty(self).map_err(|source| Error::Manifest {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(Error::io("write the manifest", &path))
    }

    /// Total bytes allocated on disk by the image's files and tree.
    pub fn disk_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.allocated).sum::<u64>() + self.tree.map_or(0, |t| t.bytes)
    }

    /// The version of one package, if it is in the image.
    pub fn package(&self, name: &str) -> Option<&str> {
        self.packages
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.version.as_str())
    }
}

/// Size and sha256 of `dir/rel`. Uses `sha256sum` (coreutils), which is fast whatever this
/// crate's optimization level; images are hundreds of megabytes.
pub(crate) fn file_entry(dir: &Path, rel: &str) -> Result<FileEntry> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(rel);
    let meta = std::fs::metadata(&path).map_err(Error::io("stat an image file", &path))?;
    let out = Command::new("sha256sum")
        .arg(&path)
        .output()
        .map_err(|source| Error::Tool {
            tool: "sha256sum".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let sum = text.split_whitespace().next().unwrap_or_default();
    if !out.status.success() || sum.len() != 64 {
        return Err(Error::format(
            path.display().to_string(),
            format!(
                "sha256sum failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(FileEntry {
        path: rel.to_owned(),
        size: meta.len(),
        allocated: meta.blocks() * 512,
        sha256: sum.to_owned(),
    })
}

/// Allocated size and entry count of a tree (not following symlinks; hard links once).
pub(crate) fn tree_size(dir: &Path) -> Result<TreeSize> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut size = TreeSize {
        bytes: 0,
        entries: 0,
    };
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(Error::io("read a directory", &d))? {
            let e = e.map_err(Error::io("read a directory", &d))?;
            let meta = e
                .path()
                .symlink_metadata()
                .map_err(Error::io("stat", e.path()))?;
            size.entries += 1;
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            size.bytes += meta.blocks() * 512;
            if meta.is_dir() {
                todo.push(e.path());
            }
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_round_trip() {
        let dir = std::env::temp_dir().join(format!("sbx-image-manifest-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("t/sub")).unwrap();
        std::fs::write(dir.join("t/sub/f"), b"abc").unwrap();
        let e = file_entry(&dir, "t/sub/f").unwrap();
        assert_eq!(
            e.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(e.size, 3);
        let t = tree_size(&dir.join("t")).unwrap();
        assert_eq!(t.entries, 2);
        let m = Manifest {
            format: 1,
            kind: ImageKind::Kernel,
            name: "n".into(),
            key: "k".into(),
            recipe: serde_json::json!({"a": 1}),
            created_unix: 1,
            build_seconds: 2.5,
            packages: vec![PackageVersion {
                name: "git".into(),
                version: "1".into(),
            }],
            files: vec![e],
            tree: Some(t),
            kernel_release: None,
            modules: None,
            log: "/x.log".into(),
        };
        m.write(&dir).unwrap();
        assert_eq!(Manifest::read(&dir).unwrap(), m);
        assert_eq!(m.package("git"), Some("1"));
        assert!(m.disk_bytes() >= t.bytes);
        std::fs::write(dir.join(MANIFEST), b"{").unwrap();
        assert!(matches!(Manifest::read(&dir), Err(Error::Manifest { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
