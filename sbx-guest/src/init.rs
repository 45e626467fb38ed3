//! PID-1 setup: kernel modules and switch_root (microVM), standard mounts, `/dev`, hostname.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// How `/dev` is provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DevMode {
    /// Mount the kernel's `devtmpfs` (microVM: the guest kernel's own devices).
    Devtmpfs,
    /// A tmpfs with only `null`, `zero`, `full`, `random`, `urandom`, `tty` and the usual
    /// links (namespace sandbox: never expose the host's devices).
    #[default]
    Minimal,
    /// Leave `/dev` as the launcher prepared it (still adds `/dev/pts` and `/dev/shm`).
    Keep,
}

/// The root disk to switch to (microVM).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwitchRoot {
    /// Block device, e.g. `/dev/vda`.
    pub device: PathBuf,
    /// Filesystem type, e.g. `ext4`.
    pub fstype: String,
    /// Mount options.
    pub options: Option<String>,
}

impl SwitchRoot {
    /// Switch to `device` holding a `fstype` filesystem.
    pub fn new(device: impl Into<PathBuf>, fstype: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            fstype: fstype.into(),
            options: None,
        }
    }
}

fn mount_err(target: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Mount {
        target: target.to_owned(),
        source,
    }
}

fn mount_fresh(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let t = Path::new(target);
    if sys::is_mountpoint(t) {
        tracing::debug!(target, "already mounted");
        return Ok(());
    }
    std::fs::create_dir_all(t).map_err(mount_err(t))?;
    sys::mount(source, t, Some(fstype), flags, data).map_err(mount_err(t))
}

/// Mounts the root disk on `/newroot` and makes it `/` (the initramfs stays in memory, unused).
pub fn switch_root(root: &SwitchRoot) -> Result<()> {
    let target = Path::new("/newroot");
    std::fs::create_dir_all(target).map_err(mount_err(target))?;
    sys::mount(
        &root.device.to_string_lossy(),
        target,
        Some(&root.fstype),
        0,
        root.options.as_deref(),
    )
    .map_err(mount_err(target))?;
    std::env::set_current_dir(target).map_err(Error::io("chdir to the new root"))?;
    sys::move_root_here().map_err(Error::io("switch_root"))
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Mounts `/proc`, `/sys`, `/dev` (per `dev`), `/dev/pts`, `/dev/shm`, `/run` and `/tmp`,
/// skipping any that are already mount points. A failing `/sys` is logged, not fatal (some
/// namespace setups forbid it).
pub fn standard_mounts(dev: DevMode) -> Result<()> {
    mount_fresh("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    if let Err(e) = mount_fresh("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None) {
        tracing::warn!(error = %e, "cannot mount /sys");
    }
    match dev {
        DevMode::Devtmpfs => mount_fresh("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, None)?,
        DevMode::Minimal => minimal_dev()?,
        DevMode::Keep => {}
    }
    mount_fresh(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let ptmx = Path::new("/dev/ptmx");
    if std::fs::symlink_metadata(ptmx).is_err() {
        std::os::unix::fs::symlink("pts/ptmx", ptmx).map_err(mount_err(ptmx))?;
    }
    mount_fresh(
        "shm",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount_fresh(
        "run",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    mount_fresh(
        "tmp",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    Ok(())
}

fn minimal_dev() -> Result<()> {
    let dev = Path::new("/dev");
    if sys::is_mountpoint(dev) {
        return Ok(());
    }
    mount_fresh("dev", "/dev", "tmpfs", libc::MS_NOSUID, Some("mode=0755"))?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        if let Err(e) = sys::mknod_char(&p, 0o666, major, minor) {
            tracing::warn!(device = name, error = %e, "cannot create device node");
        } else {
            // mknod honours the umask; device nodes need their full mode.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666));
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let p = dev.join(link);
        std::os::unix::fs::symlink(target, &p).map_err(mount_err(&p))?;
    }
    Ok(())
}

/// Sets the hostname (the caller must be in its own UTS namespace, or be the VM's kernel's).
pub fn set_hostname(name: &str) -> Result<()> {
    sys::sethostname(name).map_err(Error::io("sethostname"))
}
