//! What PID 1 does inside the new namespaces before it becomes the init program: the overlay
//! root, `pivot_root`, fresh `/proc`, `/sys`, `/dev`, `/tmp`, the binds, then no_new_privs,
//! capabilities and seccomp. Runs in a freshly exec'd, single-threaded helper, so ordinary Rust
//! (allocation, std::fs) is safe here.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::config::{relative, Config};
use crate::{caps, seccomp};

type Step<T = ()> = Result<T, String>;

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: impl FnOnce() -> String) -> Step<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn do_mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Step {
    ctx(mount(src, target, fstype, flags, data), || {
        format!("mount {} on {}", fstype.unwrap_or("bind"), target.display())
    })
}

/// Device nodes bound from the host (a user namespace cannot `mknod`).
const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// `/proc` paths made read-only: writes there reach the whole host kernel, and when the
/// invoking user is root, root inside owns them by uid.
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// `/proc` files hidden behind `/dev/null`.
const PROC_MASKED: &[&str] = &["kcore", "keys", "timer_list", "sched_debug", "kallsyms"];

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// A host path cloned as a detached mount tree (`open_tree`) before `pivot_root` and attached
/// after it (`move_mount`), so that guest paths resolve inside the new root and never through a
/// symlink to the host, and so the source need not be reachable once the old root is gone.
struct Source {
    tree: OwnedFd,
    is_dir: bool,
}

// From <linux/mount.h>.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn open_source(path: &Path, read_only: bool) -> Step<Source> {
    let is_dir = ctx(fs::metadata(path), || format!("stat {}", path.display()))?.is_dir();
    let c = cstring(path.as_os_str().as_encoded_bytes())?;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: open_tree reads the NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(format!(
            "open_tree {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor was just created for us.
    let tree = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
    if read_only {
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: mount_setattr reads `attr` (size passed) and an empty path relative to `tree`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc < 0 {
            return Err(format!(
                "read-only {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(Source { tree, is_dir })
}

/// Attaches a cloned tree at `target` (in the new root).
fn attach(src: &Source, target: &Path) -> Step {
    mount_point(target, src.is_dir)?;
    let t = cstring(target.as_os_str().as_encoded_bytes())?;
    // SAFETY: move_mount reads two NUL-terminated paths; the source is the tree descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            src.tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(format!(
            "attach {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Creates `path` (inside the new root) as a directory or an empty file to mount on.
fn mount_point(path: &Path, dir: bool) -> Step {
    if let Ok(m) = fs::symlink_metadata(path) {
        if m.file_type().is_symlink() {
            return Err(format!("mount point {} is a symlink", path.display()));
        }
        return Ok(());
    }
    if dir {
        ctx(
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path),
            || format!("mkdir {}", path.display()),
        )
    } else {
        if let Some(parent) = path.parent() {
            ctx(
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent),
                || format!("mkdir {}", parent.display()),
            )?;
        }
        ctx(fs::write(path, b""), || {
            format!("create {}", path.display())
        })
    }
}

/// Remounts a bind mount read-only, keeping the flags the kernel locked on it (a user
/// namespace may not clear nosuid/nodev/noexec/atime flags it inherited).
fn remount_read_only(target: &Path) -> Step {
    let st = ctx(statvfs(target), || format!("statvfs {}", target.display()))?;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    let f = st.flags();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    do_mount(None, target, None, flags, None)
}

/// Everything between "namespaces exist" and `execve` of the init program. `warn` carries
/// non-fatal findings to the launcher. Returns only on failure.
pub(crate) fn run_pid1(
    config: &Config,
    control: OwnedFd,
    passed: Vec<OwnedFd>,
    targets: &[RawFd],
    warn: &mut dyn FnMut(&OwnedFd, String),
) -> Step<Infallible> {
    let root = config.mount_dir();

    ctx(nix::unistd::setsid(), || "setsid".into())?;
    do_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;

    // Host objects we need after pivot_root, opened while the host tree is still visible.
    let dev_sources: Vec<(&str, Source)> = DEV_NODES
        .iter()
        .filter_map(|n| {
            open_source(&Path::new("/dev").join(n), false)
                .ok()
                .map(|s| (*n, s))
        })
        .collect();
    let bind_sources: Vec<Source> = config
        .binds
        .iter()
        .map(|b| open_source(&b.host, b.read_only))
        .collect::<Step<_>>()?;

    // The root: the base read-only below, the sandbox's own layer above.
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        config.rootfs.display(),
        config.upper_dir().display(),
        config.work_dir().display()
    );
    // The root is nosuid unless the sandbox asked for working setuid programs (`sudo`).
    let root_flags = if config.allow_setuid {
        MsFlags::MS_NODEV
    } else {
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV
    };
    do_mount(
        Some(Path::new("overlay")),
        &root,
        Some("overlay"),
        root_flags,
        Some(&opts),
    )?;

    // proc and sysfs can only be mounted in a user namespace while a full host instance is
    // still visible in this mount namespace, so before the old root goes.
    let proc_dir = root.join("proc");
    mount_point(&proc_dir, true)?;
    do_mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        None,
    )?;
    for p in PROC_READ_ONLY {
        let t = proc_dir.join(p);
        if t.exists() {
            do_mount(Some(&t), &t, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
            remount_read_only(&t)?;
        }
    }
    for p in PROC_MASKED {
        let t = proc_dir.join(p);
        if t.exists() {
            do_mount(
                Some(Path::new("/dev/null")),
                &t,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    let sys_dir = root.join("sys");
    mount_point(&sys_dir, true)?;
    if let Err(e) = do_mount(
        Some(Path::new("sysfs")),
        &sys_dir,
        Some("sysfs"),
        NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY,
        None,
    ) {
        warn(&control, format!("{e}; /sys left empty"));
    }

    // Enter the new root and drop the host's.
    ctx(nix::unistd::chdir(&root), || "chdir new root".into())?;
    ctx(nix::unistd::pivot_root(".", "."), || "pivot_root".into())?;
    ctx(umount2(".", MntFlags::MNT_DETACH), || {
        "unmount old root".into()
    })?;
    ctx(nix::unistd::chdir("/"), || "chdir /".into())?;

    setup_dev(&dev_sources)?;
    mount_point(Path::new("/tmp"), true)?;
    do_mount(
        Some(Path::new("tmpfs")),
        Path::new("/tmp"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;

    for (b, src) in config.binds.iter().zip(&bind_sources) {
        attach(src, &Path::new("/").join(relative(&b.guest)))?;
    }
    drop(dev_sources);
    drop(bind_sources);

    // Descriptors for the init program at the numbers it was promised; everything else closes
    // at exec.
    let control = dup_high(control)?;
    let passed: Vec<OwnedFd> = passed.into_iter().map(dup_high).collect::<Step<_>>()?;
    for (fd, target) in passed.iter().zip(targets) {
        // SAFETY: dup2 only changes the descriptor table; `target` was promised to the init
        // program, and nothing of ours lives there any more (all moved above 1024). The new
        // descriptor has no FD_CLOEXEC, so it survives exec.
        if unsafe { libc::dup2(fd.as_raw_fd(), *target) } < 0 {
            return Err(format!(
                "dup2 to {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let keep: Vec<RawFd> = [0, 1, 2]
        .into_iter()
        .chain(targets.iter().copied())
        .collect();
    cloexec_all_except(&keep)?;

    let cwd = Path::new("/").join(relative(&config.init.cwd));
    if let Err(e) = nix::unistd::chdir(&cwd) {
        warn(&control, format!("chdir {}: {e}; using /", cwd.display()));
    }

    // Fail the start, not a later wait, when the init program is missing.
    ctx(
        nix::unistd::access(&config.init.path, nix::unistd::AccessFlags::X_OK),
        || format!("init program {}", config.init.path.display()),
    )?;

    if config.allow_setuid {
        // Without no_new_privs, installing a seccomp filter needs CAP_SYS_ADMIN (in this user
        // namespace), which the capability reduction below drops: install it first. The filter
        // allows the prctl/capset calls the reduction makes.
        seccomp::install_keeping_setuid().map_err(|e| format!("seccomp: {e}"))?;
    } else {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
    }
    ctx(caps::reduce(), || "reduce capabilities".into())?;

    let path = cstring(config.init.path.as_os_str().as_encoded_bytes())?;
    let argv: Vec<CString> = config
        .init
        .args
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Step<_>>()?;
    let envp: Vec<CString> = config
        .init
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<Step<_>>()?;

    if !config.allow_setuid {
        seccomp::install().map_err(|e| format!("seccomp: {e}"))?;
    }
    crate::proto::send(control.as_fd(), &crate::proto::FromHelper::Ready, &[])
        .map_err(|e| e.to_string())?;
    let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(format!("exec {}: {err}", config.init.path.display()))
}

fn cstring(b: &[u8]) -> Step<CString> {
    CString::new(b).map_err(|_| "NUL in argv or env".to_string())
}

/// Moves a descriptor above the range init programs are promised, close-on-exec.
fn dup_high(fd: OwnedFd) -> Step<OwnedFd> {
    ctx(
        nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(1024)),
        || "dup".into(),
    )
    .map(|raw| {
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
    })
}

fn cloexec_all_except(keep: &[RawFd]) -> Step {
    let entries = ctx(fs::read_dir("/proc/self/fd"), || {
        "list /proc/self/fd".into()
    })?;
    let fds: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|fd| !keep.contains(fd)) {
        // SAFETY: F_SETFD on a descriptor number touches no memory; a stale number (the
        // read_dir handle itself) fails with EBADF, which we ignore.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

fn setup_dev(nodes: &[(&str, Source)]) -> Step {
    let dev = Path::new("/dev");
    mount_point(dev, true)?;
    do_mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    for (name, src) in nodes {
        attach(src, &dev.join(name))?;
    }
    let pts = dev.join("pts");
    mount_point(&pts, true)?;
    do_mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    mount_point(&shm, true)?;
    do_mount(
        Some(Path::new("tmpfs")),
        &shm,
        Some("tmpfs"),
        NOSUID_NODEV_NOEXEC,
        Some("mode=1777"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ctx(symlink(to, dev.join(link)), || {
            format!("symlink /dev/{link}")
        })?;
    }
    Ok(())
}
