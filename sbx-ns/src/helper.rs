//! The helper process: a fresh exec of a binary that calls [`run_if_helper`] first. It enters
//! the new namespaces, creates the TAP device, forks PID 1 (which sets up the root and execs
//! the init program) and then stays behind as the sandbox's monitor: it reaps PID 1, reports
//! how it ended, and kills it when the launcher goes away.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::proto::{self, FromHelper, ToHelper, HELPER_ENV};
use crate::{setup, tap};

/// Makes this process the sandbox helper when the launcher started it as one, and never
/// returns in that case; returns at once otherwise. Call it first in `main` of any binary used
/// as [`crate::Helper`] (the default is the current executable).
pub fn run_if_helper() {
    let Some(fd) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let Some(fd) = fd.to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
        std::process::exit(125);
    };
    // SAFETY: the launcher put the control socket at this number (dup2 before exec) and
    // nothing else in this fresh process knows about it.
    let control = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        control.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let code = match helper_main(&control) {
        Ok(code) => code,
        Err(message) => {
            let _ = proto::send(control.as_fd(), &FromHelper::Failed { message }, &[]);
            125
        }
    };
    std::process::exit(code);
}

fn expect(control: &OwnedFd) -> Result<(ToHelper, Vec<OwnedFd>), String> {
    match proto::recv::<ToHelper>(control.as_fd()) {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err("launcher went away".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) const NS_FLAGS: CloneFlags = CloneFlags::CLONE_NEWUSER
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWCGROUP);

fn helper_main(control: &OwnedFd) -> Result<i32, String> {
    let (msg, passed) = expect(control)?;
    let (config, targets) = match msg {
        ToHelper::Start { config, fd_targets } => (config, fd_targets),
        ToHelper::Probe { dir } => return Ok(probe(control, Path::new(&dir))),
        other => return Err(format!("unexpected {other:?}")),
    };
    if passed.len() != targets.len() {
        return Err("descriptor count does not match".into());
    }

    // The launcher moved us into the sandbox's cgroups before sending Start, so the cgroup
    // namespace is rooted there.
    unshare(NS_FLAGS).map_err(|e| format!("unshare: {e}"))?;
    proto::send(control.as_fd(), &FromHelper::Unshared, &[]).map_err(|e| e.to_string())?;
    match expect(control)? {
        (ToHelper::Mapped, _) => {}
        (other, _) => return Err(format!("unexpected {other:?}")),
    }

    tap::link_up("lo").map_err(|e| format!("lo up: {e}"))?;
    if config.network {
        let fd = tap::create("eth0").map_err(|e| format!("create TAP eth0: {e}"))?;
        if let Some(mtu) = config.ipv4.as_ref().and_then(|ip| ip.mtu) {
            tap::set_mtu("eth0", mtu).map_err(|e| format!("eth0 mtu {mtu}: {e}"))?;
        }
        tap::link_up("eth0").map_err(|e| format!("eth0 up: {e}"))?;
        if let Some(ip) = &config.ipv4 {
            tap::configure_ipv4("eth0", ip.address, ip.prefix_len, ip.gateway)
                .map_err(|e| format!("eth0 ipv4: {e}"))?;
        }
        proto::send(
            control.as_fd(),
            &FromHelper::Tap {
                name: "eth0".into(),
            },
            &[fd.as_raw_fd()],
        )
        .map_err(|e| e.to_string())?;
    }
    nix::unistd::sethostname(&config.hostname).map_err(|e| format!("sethostname: {e}"))?;

    // SAFETY: this process is single-threaded (a fresh exec that started no threads), so the
    // child may do anything after fork.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            // SAFETY: PR_SET_PDEATHSIG takes integers only. Our parent is single-threaded, so
            // "parent thread exits" means the monitor is gone.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            let mut warn = |c: &OwnedFd, message: String| {
                let _ = proto::send(c.as_fd(), &FromHelper::Warning { message }, &[]);
            };
            let dup = control.try_clone().map_err(|e| e.to_string())?;
            let err = match setup::run_pid1(&config, dup, passed, &targets, &mut warn) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            let _ = proto::send(control.as_fd(), &FromHelper::Failed { message: err }, &[]);
            // SAFETY: _exit ends this forked child without running the parent's atexit work.
            unsafe { libc::_exit(125) }
        }
        ForkResult::Parent { child } => {
            drop(passed);
            monitor(control, child)
        }
    }
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the descriptor was just created for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits for PID 1; kills it if the launcher closes the control socket (or dies).
fn monitor(control: &OwnedFd, child: Pid) -> Result<i32, String> {
    // The child is not reaped before we wait for it, so this pidfd names exactly it; the
    // launcher signals through it and never through a reusable pid number.
    let pidfd = pidfd_open(child)?;
    proto::send(
        control.as_fd(),
        &FromHelper::Started {
            pid: child.as_raw(),
        },
        &[pidfd.as_raw_fd()],
    )
    .map_err(|e| e.to_string())?;
    let mut launcher_gone = false;
    loop {
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if !launcher_gone {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let child_done = fds[0].any().unwrap_or(false);
        let control_ready = fds.get(1).and_then(|f| f.any()).unwrap_or(false);
        if control_ready && !launcher_gone && launcher_closed(control.as_fd()) {
            launcher_gone = true;
            let _ = kill(child, Signal::SIGKILL);
        }
        if child_done {
            break;
        }
    }
    let status = loop {
        match waitpid(child, None) {
            Err(nix::Error::EINTR) => continue,
            other => break other.map_err(|e| format!("waitpid: {e}"))?,
        }
    };
    let (code, signal) = match status {
        WaitStatus::Exited(_, c) => (Some(c), None),
        WaitStatus::Signaled(_, s, _) => (None, Some(s as i32)),
        _ => (None, None),
    };
    if !launcher_gone {
        let _ = proto::send(control.as_fd(), &FromHelper::Exited { code, signal }, &[]);
    }
    Ok(code.unwrap_or_else(|| 128 + signal.unwrap_or(0)))
}

/// Reads whatever the launcher sent; true when it closed its end.
fn launcher_closed(control: BorrowedFd<'_>) -> bool {
    !matches!(proto::recv::<ToHelper>(control), Ok(Some(_)))
}

/// Host support probe: a throwaway user + mount + net namespace with an overlay mount of
/// directories under `dir` and a TAP device. Reports each part on the control socket.
fn probe(control: &OwnedFd, dir: &Path) -> i32 {
    let mut result = crate::support::ProbeResult::default();
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET;
    let userns = unshare(flags)
        .map_err(|e| format!("unshare: {e}"))
        .and_then(|()| {
            std::fs::write("/proc/self/setgroups", "deny")
                .and_then(|()| std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")))
                .and_then(|()| std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")))
                .map_err(|e| format!("write id maps: {e}"))
        });
    result.userns = userns.clone().err();
    if userns.is_ok() {
        result.overlay = crate::support::probe_overlay(dir).err();
        result.tap = tap::create("sbxprobe0")
            .map(drop)
            .map_err(|e| e.to_string())
            .err();
    } else {
        result.overlay = Some("needs a user namespace".into());
        result.tap = Some("needs a user namespace".into());
    }
    let _ = proto::send(control.as_fd(), &FromHelper::Probed(result), &[]);
    0
}
