//! Workspace mounts in a microVM: virtio-fs shares (served by `virtiofsd` on the host) mounted
//! by tag at the folder's host path (`--mount-virtiofs TAG:PATH[:ro]`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// One virtio-fs share to mount.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtiofsMount {
    /// The device's mount tag.
    pub tag: String,
    /// Absolute mount point (created if missing).
    pub path: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

impl VirtiofsMount {
    /// Mount the share tagged `tag` at `path`.
    pub fn new(tag: impl Into<String>, path: impl Into<PathBuf>, read_only: bool) -> Self {
        Self {
            tag: tag.into(),
            path: path.into(),
            read_only,
        }
    }

    /// Parses `TAG:PATH` or `TAG:PATH:ro` (`PATH` absolute; a tag has no `:`).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Usage(format!("--mount-virtiofs {s:?}: {why}"));
        let (tag, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("use TAG:PATH or TAG:PATH:ro"))?;
        if tag.is_empty() || tag.len() > 36 {
            return Err(bad("the tag must be 1 to 36 bytes"));
        }
        let (path, read_only) = match rest.strip_suffix(":ro") {
            Some(p) => (p, true),
            None => (rest, false),
        };
        if !path.starts_with('/') {
            return Err(bad("the path must be absolute"));
        }
        if Path::new(path)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(bad("the path must not contain .."));
        }
        Ok(Self::new(tag, path, read_only))
    }

    /// Mounts it (`nosuid,nodev`, plus `ro` when read-only). Needs the `virtiofs` module,
    /// which the default initramfs loads.
    pub fn mount(&self) -> Result<()> {
        let err = |source| Error::Mount {
            target: self.path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.path).map_err(err)?;
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
        if self.read_only {
            flags |= libc::MS_RDONLY;
        }
        sys::mount(&self.tag, &self.path, Some("virtiofs"), flags, None).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENODEV) {
                tracing::error!(
                    tag = %self.tag,
                    "no virtiofs file system: load the virtiofs module (--load-module virtiofs)"
                );
            }
            err(e)
        })
    }
}

/// Mounts every share in order.
pub fn mount_all(mounts: &[VirtiofsMount]) -> Result<()> {
    for m in mounts {
        m.mount()?;
        tracing::info!(tag = %m.tag, path = %m.path.display(), read_only = m.read_only, "mounted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tag_path_and_ro() {
        assert_eq!(
            VirtiofsMount::parse("sbx0:/home/u/app").unwrap(),
            VirtiofsMount::new("sbx0", "/home/u/app", false)
        );
        assert_eq!(
            VirtiofsMount::parse("sbx1:/data/x:ro").unwrap(),
            VirtiofsMount::new("sbx1", "/data/x", true)
        );
        assert_eq!(
            VirtiofsMount::parse("t:/a:b").unwrap().path,
            Path::new("/a:b"),
            "colons inside the path are kept"
        );
        for bad in [
            "",
            "sbx0",
            ":/x",
            "sbx0:rel",
            "sbx0:/a/../b",
            &format!("{}:/x", "t".repeat(37)),
        ] {
            assert!(VirtiofsMount::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_agent_flag_collects_mounts_in_order() {
        let args = ["--mount-virtiofs", "a:/w", "--mount-virtiofs", "b:/r:ro"];
        let (c, _) = crate::parse_args(args.iter().map(std::ffi::OsString::from)).unwrap();
        assert_eq!(
            c.virtiofs,
            [
                VirtiofsMount::new("a", "/w", false),
                VirtiofsMount::new("b", "/r", true)
            ]
        );
        assert!(crate::parse_args(
            ["--mount-virtiofs", "x"]
                .iter()
                .map(std::ffi::OsString::from)
        )
        .is_err());
        assert!(
            crate::parse_args(["--mount-virtiofs"].iter().map(std::ffi::OsString::from)).is_err()
        );
    }

    #[test]
    fn a_missing_share_is_a_mount_error() {
        let d = std::env::temp_dir().join(format!("sbx-guest-vfs-{}", std::process::id()));
        let e = VirtiofsMount::new("no-such-tag", &d, true)
            .mount()
            .unwrap_err();
        assert!(matches!(e, Error::Mount { .. }), "{e}");
        assert!(d.is_dir(), "the mount point was made");
        let _ = std::fs::remove_dir(&d);
    }
}
