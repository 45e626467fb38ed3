//! # sbx-image: guest images for sbx sandboxes
//!
//! Builds, from Debian packages, what a sandbox boots from, and caches it:
//!
//! - **Root filesystem** ([`RootfsRecipe`], [`Store::build_rootfs`]): `mmdebstrap` of a
//!   Debian suite with bash, coreutils, git, curl, ca-certificates, python3, nodejs + npm,
//!   procps, iproute2, sudo, less, an editor; the user `agent` (uid 1000, home
//!   `/home/agent`, passwordless sudo); `/etc/hostname`, `/etc/hosts`, locale and timezone.
//!   Kept as a directory (the namespace backend's read-only lower layer) and as an ext4 image
//!   made with `mkfs.ext4 -d` (the microVM backend's root disk).
//! - **Kernel + initramfs** ([`KernelRecipe`], [`Store::build_kernel`]): Debian's cloud
//!   kernel (`linux-image-cloud-amd64` resolved to its `linux-image-*` package, fetched with
//!   `apt-get download`) and a `newc` cpio ([`CpioWriter`]) holding the guest agent as
//!   `/init` (with its shared libraries and ELF interpreter), a static busybox with its applet
//!   links, and the virtio, vsock, fuse/virtiofs and overlay modules with every dependency
//!   (read from each module's `.modinfo`; no `depmod` needed) plus a `modules.dep` for them.
//!   Modules the kernel has built in (ext4 and its helpers in Debian's cloud kernel) are
//!   recorded in the manifest and skipped.
//!
//! ## The cache
//! A [`Store`] is a directory (sbx uses `$SBX_HOME/images` or `$XDG_DATA_HOME/sbx/images`).
//! Each image is `<kind>-<key>/` with a `manifest.json` ([`Manifest`]: recipe, every package
//! version, file sizes and sha256, build time). The key digests the recipe, the versions the
//! host's apt sources offer for its packages and (for the initramfs) the agent binary, so a
//! changed recipe or a new package version builds a new image and an unchanged one is reused.
//! Builds run in a `.build-*` directory under a lock and are renamed into place; a
//! `<kind>-<name>.current` file names the image in use. A failed build removes its temporary
//! directory, leaves the current image as it was, and returns [`Error::Build`] with the step
//! and the path of the kept build log (`logs/<kind>-<name>.log`, the
//! latest build's; a finished image keeps its own as `build.log`).
//!
//! Users can bring their own kernel, initramfs or root ([`GuestPaths`]).
//!
//! ## Platform
//! Linux with Debian's tools: `mmdebstrap`, `apt-get`, `dpkg-deb`, `mkfs.ext4` (e2fsprogs),
//! `sha256sum`, binutils `strip`. Building the root needs root (or a host where mmdebstrap's
//! unshare mode works). Synchronous: tools run as child processes, no async runtime.
//!
//! ## Example
//! ```no_run
//! use sbx_image::{BuildOptions, KernelRecipe, RootfsRecipe, Store};
//! # fn main() -> Result<(), sbx_image::Error> {
//! let store = Store::new("/var/lib/sbx/images");
//! let mut show = |s: &sbx_image::Step<'_>| eprintln!("[{}/{}] {}", s.index, s.total, s.label);
//! let root = store.build_rootfs(&RootfsRecipe::default(), &BuildOptions::default(), &mut show)?;
//! println!("root at {}", root.rootfs_dir().display());
//! let agent = std::path::Path::new("/usr/local/bin/sbx-guest");
//! let kernel = store.build_kernel(&KernelRecipe::default(), agent, &BuildOptions::default(), &mut show)?;
//! println!("boot {} with {}", kernel.kernel().display(), kernel.initramfs().display());
//! # Ok(())
//! # }
//! ```

mod apt;
mod cpio;
mod elf;
mod error;
mod kernel;
mod manifest;
mod modules;
mod recipe;
mod rootfs;
mod steps;
mod store;

pub use cpio::{read_newc, CpioEntry, CpioWriter};
pub use error::{Error, Result};
pub use manifest::{FileEntry, ImageKind, Manifest, PackageVersion, TreeSize, MANIFEST};
pub use modules::{module_name, KernelModule, ModuleSet};
pub use recipe::{KernelRecipe, RootfsRecipe, DEFAULT_MODULES, DEFAULT_PACKAGES};
pub use steps::{Progress, Step};
pub use store::{GuestPaths, Image, Store};

/// How to build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuildOptions {
    /// Rebuild even when an image with the same key exists.
    pub force: bool,
}

impl BuildOptions {
    /// Sets [`BuildOptions::force`].
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}
