//! The image cache: `<images>/<kind>-<key>/` directories with a manifest, one current image
//! per kind and name, builds in temporary directories renamed into place under a lock.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{ImageKind, Manifest, MANIFEST};

/// The images directory, e.g. `$XDG_DATA_HOME/sbx/images`.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A built image: its directory and manifest.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Image {
    /// `<images>/<kind>-<key>`.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Image {
    /// The root directory (namespace backend).
    pub fn rootfs_dir(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The ext4 image of the root (microVM backend), if the recipe made one.
    pub fn rootfs_ext4(&self) -> Option<PathBuf> {
        let p = self.dir.join("rootfs.ext4");
        p.exists().then_some(p)
    }

    /// The kernel (bzImage).
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The initramfs (uncompressed `newc` cpio).
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.cpio")
    }

    /// Agent flags that load this initramfs's modules (dependencies first), for the kernel
    /// command line after `--` (the kernel passes those words to `/init`). Empty for a root
    /// filesystem image.
    pub fn init_module_args(&self) -> Vec<String> {
        let (Some(release), Some(set)) = (&self.manifest.kernel_release, &self.manifest.modules)
        else {
            return Vec::new();
        };
        let mut args = vec![
            "--modules-dir".to_owned(),
            format!("/lib/modules/{release}"),
        ];
        for name in set.names() {
            args.push("--load-module".into());
            args.push(name.into());
        }
        args
    }
}

/// Held while building: one build per store at a time, across processes.
#[derive(Debug)]
pub(crate) struct Lock(#[allow(dead_code)] File);

impl Store {
    /// A store at `dir` (created on first build).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    /// The images directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Build logs live here, one per kind and name, kept after success and failure.
    pub fn log_path(&self, kind: ImageKind, name: &str) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}-{name}.log", kind.as_str()))
    }

    pub(crate) fn lock(&self) -> Result<Lock> {
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io("create the images directory", &self.dir))?;
        let path = self.dir.join(".lock");
        let f = File::create(&path).map_err(Error::io("open the images lock", &path))?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io("lock the images directory", &path)(
                std::io::Error::last_os_error(),
            ));
        }
        // Leftovers of builds that died (we hold the lock, so none is running).
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".build-") || name.starts_with(".old-") {
                    tracing::info!(dir = %e.path().display(), "removing a stale build directory");
                    let _ = remove_tree(&e.path());
                }
            }
        }
        Ok(Lock(f))
    }

    pub(crate) fn image_dir(&self, kind: ImageKind, key: &str) -> PathBuf {
        self.dir.join(format!("{}-{key}", kind.as_str()))
    }

    pub(crate) fn temp_dir(&self, kind: ImageKind, key: &str) -> Result<PathBuf> {
        let p = self.dir.join(format!(
            ".build-{}-{key}-{}",
            kind.as_str(),
            std::process::id()
        ));
        std::fs::create_dir_all(&p).map_err(Error::io("create the build directory", &p))?;
        Ok(p)
    }

    fn pointer(&self, kind: ImageKind, name: &str) -> PathBuf {
        self.dir.join(format!("{}-{name}.current", kind.as_str()))
    }

    /// An image by directory, if it has a readable manifest.
    pub fn open(&self, dir: &Path) -> Result<Image> {
        Ok(Image {
            dir: dir.to_owned(),
            manifest: Manifest::read(dir)?,
        })
    }

    /// The current image of `kind` named `name`, if one was built.
    pub fn current(&self, kind: ImageKind, name: &str) -> Result<Option<Image>> {
        let p = self.pointer(kind, name);
        let target = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read the current image pointer", &p)(e)),
        };
        let dir = self.dir.join(target.trim());
        if !dir.join(MANIFEST).exists() {
            return Ok(None);
        }
        self.open(&dir).map(Some)
    }

    /// Every image with a manifest, oldest first.
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("read the images directory", &self.dir)(e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.path().join(MANIFEST).exists() {
                continue;
            }
            match self.open(&e.path()) {
                Ok(img) => out.push(img),
                Err(err) => tracing::warn!(dir = %e.path().display(), "skipping image: {err}"),
            }
        }
        out.sort_by_key(|i| i.manifest.created_unix);
        Ok(out)
    }

    /// Whether `image` is the current one of its kind and name.
    pub fn is_current(&self, image: &Image) -> bool {
        std::fs::read_to_string(self.pointer(image.manifest.kind, &image.manifest.name))
            .is_ok_and(|t| Some(t.trim()) == image.dir.file_name().and_then(|n| n.to_str()))
    }

    /// Makes the image in `dir` current for its kind and name (atomic rename).
    pub(crate) fn set_current(&self, kind: ImageKind, name: &str, dir: &Path) -> Result<()> {
        let p = self.pointer(kind, name);
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let dir_name = dir.file_name().unwrap_or_default().to_string_lossy();
        std::fs::write(&tmp, format!("{dir_name}\n"))
            .map_err(Error::io("write the image pointer", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(Error::io("write the image pointer", &p))
    }

    /// Moves a finished build into place (replacing an image with the same key), makes it
    /// current, and removes the older images of the same kind and name.
    pub(crate) fn install(
        &self,
        tmp: &Path,
        kind: ImageKind,
        name: &str,
        key: &str,
    ) -> Result<Image> {
        let dest = self.image_dir(kind, key);
        if dest.exists() {
            let old = self.dir.join(format!(
                ".old-{}-{key}-{}",
                kind.as_str(),
                std::process::id()
            ));
            std::fs::rename(&dest, &old).map_err(Error::io("move the old image aside", &dest))?;
            std::fs::rename(tmp, &dest)
                .map_err(Error::io("move the new image into place", &dest))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(tmp, &dest)
                .map_err(Error::io("move the new image into place", &dest))?;
        }
        self.set_current(kind, name, &dest)?;
        for img in self.list()? {
            if img.manifest.kind == kind && img.manifest.name == name && img.dir != dest {
                self.discard(&img.dir);
            }
        }
        self.open(&dest)
    }

    /// Renames a replaced image to `.old-*` (so it is no longer listed) and deletes it in the
    /// background: tens of thousands of files can take minutes on a busy disk. A deletion
    /// cut short is finished by the next build's [`Store::lock`].
    fn discard(&self, dir: &Path) {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let old = self.dir.join(format!(".old-{name}-{}", std::process::id()));
        if std::fs::rename(dir, &old).is_err() {
            let _ = remove_tree(dir);
            return;
        }
        tracing::info!(dir = %dir.display(), "removing a replaced image in the background");
        // `sh` returns at once (so it is reaped here) and leaves `rm` to init.
        let spawned = std::process::Command::new("sh")
            .args([
                "-c",
                "rm -rf --one-file-system -- \"$1\" >/dev/null 2>&1 &",
                "sh",
            ])
            .arg(&old)
            .stdin(std::process::Stdio::null())
            .status();
        if !spawned.is_ok_and(|s| s.success()) {
            let _ = remove_tree(&old);
        }
    }
}

/// Deletes a build or image directory, first detaching anything still mounted below it (a
/// build killed mid-way can leave `proc`, `sys`, `dev/shm`... mounted in its root, and a plain
/// recursive delete would then delete inside the host's own `/dev/shm`). Refuses to delete
/// while a mount below remains.
pub(crate) fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let mut mounts = mounts_below(dir);
    // Deepest first, so parents are unmounted after their children.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in &mounts {
        tracing::warn!(mount = %m.display(), "detaching a mount left by a build that died");
        let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: umount2 reads one NUL-terminated path that outlives the call.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(mount = %m.display(), "could not detach: {e}");
        }
    }
    if !mounts_below(dir).is_empty() {
        return Err(std::io::Error::other(format!(
            "{} still has mounts below it; not deleting it",
            dir.display()
        )));
    }
    std::fs::remove_dir_all(dir)
}

/// Mount points strictly below `dir` (or `dir` itself), from `/proc/self/mountinfo`.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&dir))
        .collect()
}

#[cfg(test)]
mod remove_tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/tail\\04"), "/tail\\04");
    }

    #[test]
    #[allow(clippy::print_stderr)]
    fn a_mount_inside_a_build_dir_is_detached_not_deleted_through() {
        if !nix_root() {
            eprintln!("SKIPPED: needs root to mount");
            return;
        }
        let base = std::env::temp_dir().join(format!("sbx-remove-tree-{}", std::process::id()));
        let victim = base.join("outside");
        let build = base.join(".build-x");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("keep"), b"precious").unwrap();
        std::fs::create_dir_all(build.join("rootfs/dev/shm")).unwrap();
        let src = std::ffi::CString::new(victim.as_os_str().as_encoded_bytes()).unwrap();
        let dst =
            std::ffi::CString::new(build.join("rootfs/dev/shm").as_os_str().as_encoded_bytes())
                .unwrap();
        // SAFETY: mount reads NUL-terminated strings that outlive the call; a bind mount of a
        // temporary directory onto another.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        remove_tree(&build).unwrap();
        assert!(!build.exists());
        assert_eq!(std::fs::read(victim.join("keep")).unwrap(), b"precious");
        std::fs::remove_dir_all(&base).unwrap();
    }

    fn nix_root() -> bool {
        // SAFETY: geteuid has no arguments and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The files a guest boots from. Each can be the user's own; the rest come from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuestPaths {
    /// Kernel (bzImage or ELF vmlinux).
    pub kernel: Option<PathBuf>,
    /// Initramfs (cpio).
    pub initramfs: Option<PathBuf>,
    /// Root directory (namespace backend).
    pub rootfs_dir: Option<PathBuf>,
    /// Root ext4 image (microVM backend).
    pub rootfs_ext4: Option<PathBuf>,
}

impl GuestPaths {
    /// Fills the fields the user left empty from the current `default` images and checks
    /// that every path exists. Fields with no user path and no built image stay `None`.
    pub fn resolve(mut self, store: &Store) -> Result<Self> {
        if self.kernel.is_none() || self.initramfs.is_none() {
            if let Some(k) = store.current(ImageKind::Kernel, "default")? {
                self.kernel.get_or_insert_with(|| k.kernel());
                self.initramfs.get_or_insert_with(|| k.initramfs());
            }
        }
        if self.rootfs_dir.is_none() || self.rootfs_ext4.is_none() {
            if let Some(r) = store.current(ImageKind::Rootfs, "default")? {
                self.rootfs_dir.get_or_insert_with(|| r.rootfs_dir());
                if self.rootfs_ext4.is_none() {
                    self.rootfs_ext4 = r.rootfs_ext4();
                }
            }
        }
        for (what, p) in [
            ("kernel", &self.kernel),
            ("initramfs", &self.initramfs),
            ("root directory", &self.rootfs_dir),
            ("root ext4 image", &self.rootfs_ext4),
        ] {
            if let Some(p) = p {
                if !p.exists() {
                    return Err(Error::Missing {
                        what,
                        path: p.clone(),
                    });
                }
            }
        }
        Ok(self)
    }

    /// Uses this kernel.
    pub fn with_kernel(mut self, p: impl Into<PathBuf>) -> Self {
        self.kernel = Some(p.into());
        self
    }

    /// Uses this initramfs.
    pub fn with_initramfs(mut self, p: impl Into<PathBuf>) -> Self {
        self.initramfs = Some(p.into());
        self
    }

    /// Uses this root directory.
    pub fn with_rootfs_dir(mut self, p: impl Into<PathBuf>) -> Self {
        self.rootfs_dir = Some(p.into());
        self
    }

    /// Uses this root ext4 image.
    pub fn with_rootfs_ext4(mut self, p: impl Into<PathBuf>) -> Self {
        self.rootfs_ext4 = Some(p.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn fake(store: &Store, kind: ImageKind, key: &str, created: u64) -> PathBuf {
        let _lock = store.lock().unwrap();
        let tmp = store.temp_dir(kind, key).unwrap();
        std::fs::write(tmp.join("vmlinuz"), b"k").unwrap();
        std::fs::write(tmp.join("initramfs.cpio"), b"i").unwrap();
        Manifest {
            format: 1,
            kind,
            name: "default".into(),
            key: key.into(),
            recipe: serde_json::Value::Null,
            created_unix: created,
            build_seconds: 0.0,
            packages: vec![],
            files: vec![],
            tree: None,
            kernel_release: None,
            modules: None,
            log: "/l".into(),
        }
        .write(&tmp)
        .unwrap();
        store.install(&tmp, kind, "default", key).unwrap().dir
    }

    #[test]
    fn install_replaces_and_points() {
        let root = std::env::temp_dir().join(format!("sbx-image-store-{}", std::process::id()));
        let store = Store::new(&root);
        assert!(store.list().unwrap().is_empty());
        assert!(store
            .current(ImageKind::Kernel, "default")
            .unwrap()
            .is_none());
        let a = fake(&store, ImageKind::Kernel, "aaaa", 1);
        assert_eq!(
            store
                .current(ImageKind::Kernel, "default")
                .unwrap()
                .unwrap()
                .dir,
            a
        );
        // A stale half-written build is cleaned up by the next lock.
        std::fs::create_dir_all(root.join(".build-kernel-x-1")).unwrap();
        let b = fake(&store, ImageKind::Kernel, "bbbb", 2);
        assert!(!root.join(".build-kernel-x-1").exists());
        let cur = store
            .current(ImageKind::Kernel, "default")
            .unwrap()
            .unwrap();
        assert_eq!(cur.dir, b);
        assert!(store.is_current(&cur));
        assert!(!a.exists(), "the replaced image is moved away");
        assert!(store.list().unwrap().iter().all(|i| i.dir != a));
        // Same key again (a forced rebuild) replaces in place.
        let b2 = fake(&store, ImageKind::Kernel, "bbbb", 3);
        assert_eq!(b2, b);
        assert_eq!(store.list().unwrap().len(), 1);
        let paths = GuestPaths::default().resolve(&store).unwrap();
        assert_eq!(paths.kernel, Some(b.join("vmlinuz")));
        assert_eq!(paths.rootfs_dir, None);
        let missing = GuestPaths::default()
            .with_rootfs_dir("/nonexistent-sbx-root")
            .resolve(&store);
        assert!(matches!(missing, Err(Error::Missing { .. })));
        // A background deletion may still be running in there.
        let _ = std::fs::remove_dir_all(&root);
    }
}
