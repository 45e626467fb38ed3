//! What goes into an image. A recipe plus the package versions it resolves to is the image's
//! cache key: change either and the image is rebuilt.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped when the build procedure changes in a way that changes the output.
pub(crate) const FORMAT: u32 = 3;

/// The Debian root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RootfsRecipe {
    /// Image name; `sbx image build` keeps one current image per kind and name.
    pub name: String,
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// mmdebstrap variant (`minbase`, `essential`, `apt`, ...).
    pub variant: String,
    /// Packages installed on top of the variant.
    pub packages: Vec<String>,
    /// The unprivileged user (uid 1000, passwordless sudo).
    pub user: String,
    /// Host name in `/etc/hostname` and `/etc/hosts`.
    pub hostname: String,
    /// `LANG` in `/etc/default/locale` (`C.UTF-8` needs no `locales` package).
    pub locale: String,
    /// Zone name under `/usr/share/zoneinfo` (needs `tzdata`).
    pub timezone: String,
    /// Leave out `/usr/share/doc` (except copyright files), man pages and info pages.
    pub exclude_docs: bool,
    /// Shell commands run inside the finished root (as root, `/bin/sh -c`), in order.
    pub run: Vec<String>,
    /// Also make an ext4 image of the root (for the microVM backend).
    pub ext4: bool,
}

/// The packages of [`RootfsRecipe::default`].
pub const DEFAULT_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "git",
    "curl",
    "ca-certificates",
    "python3",
    "nodejs",
    "npm",
    "procps",
    "iproute2",
    "sudo",
    "less",
    "vim-tiny",
    "tzdata",
    "openssh-client",
    "xz-utils",
];

impl Default for RootfsRecipe {
    fn default() -> Self {
        RootfsRecipe {
            name: "default".into(),
            suite: "bookworm".into(),
            variant: "minbase".into(),
            packages: DEFAULT_PACKAGES.iter().map(|s| s.to_string()).collect(),
            user: "agent".into(),
            hostname: "sbx".into(),
            locale: "C.UTF-8".into(),
            timezone: "Etc/UTC".into(),
            exclude_docs: true,
            run: Vec::new(),
            ext4: true,
        }
    }
}

impl RootfsRecipe {
    /// Adds packages.
    pub fn with_packages<I, S>(mut self, packages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.packages.extend(packages.into_iter().map(Into::into));
        self
    }

    /// Adds a command run inside the finished root.
    pub fn with_run(mut self, command: impl Into<String>) -> Self {
        self.run.push(command.into());
        self
    }

    /// Sets the image name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Turns the ext4 image on or off.
    pub fn with_ext4(mut self, on: bool) -> Self {
        self.ext4 = on;
        self
    }
}

/// The modules of [`KernelRecipe::default`]: virtio transport, block, net, vsock, rng,
/// virtio-fs, overlay and ext4 (built into Debian's cloud kernel; its dependencies too).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_mmio",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "virtio_rng",
    "fuse",
    "virtiofs",
    "overlay",
    "ext4",
];

/// Debian's cloud kernel and an initramfs around the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KernelRecipe {
    /// Image name (see [`RootfsRecipe::name`]).
    pub name: String,
    /// The kernel package, or a meta package depending on one (`linux-image-cloud-amd64`).
    pub kernel_package: String,
    /// The package providing a static `/bin/busybox`.
    pub busybox_package: String,
    /// Modules to carry, with their dependencies; built-in ones are recorded and skipped.
    pub modules: Vec<String>,
    /// Strip debug info from the agent copied in as `/init` (needs binutils `strip`).
    pub strip_agent: bool,
}

impl Default for KernelRecipe {
    fn default() -> Self {
        KernelRecipe {
            name: "default".into(),
            kernel_package: "linux-image-cloud-amd64".into(),
            busybox_package: "busybox-static".into(),
            modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            strip_agent: true,
        }
    }
}

/// A short hex digest of the recipe and what it resolved to.
pub(crate) fn cache_key(
    kind: &str,
    recipe: &impl Serialize,
    resolved: &[(String, String)],
) -> String {
    let mut h = Sha256::new();
    h.update(format!("sbx-image format {FORMAT}\n{kind}\n").as_bytes());
    // Serializing our own plain structs cannot fail.
    h.update(serde_json::to_vec(recipe).unwrap_or_default());
    for (k, v) in resolved {
        h.update(format!("\n{k}={v}").as_bytes());
    }
    hex(&h.finalize())[..16].to_owned()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Quotes `s` for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_recipe_and_versions() {
        let r = RootfsRecipe::default();
        let v = vec![("git".to_string(), "1:2.39".to_string())];
        let k = cache_key("rootfs", &r, &v);
        assert_eq!(k.len(), 16);
        assert_eq!(k, cache_key("rootfs", &r.clone(), &v));
        assert_ne!(k, cache_key("rootfs", &r.clone().with_packages(["jq"]), &v));
        assert_ne!(
            k,
            cache_key("rootfs", &r, &[("git".into(), "1:2.40".into())])
        );
        assert_ne!(k, cache_key("kernel", &r, &v));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("a b"), "'a b'");
    }

    #[test]
    fn defaults_cover_the_issue_lists() {
        let r = RootfsRecipe::default();
        for p in [
            "git",
            "curl",
            "python3",
            "nodejs",
            "npm",
            "sudo",
            "ca-certificates",
        ] {
            assert!(r.packages.iter().any(|x| x == p), "{p}");
        }
        assert_eq!(KernelRecipe::default().modules.len(), DEFAULT_MODULES.len());
    }
}
