//! The launcher side: spawn the helper, drive the setup handshake, own the running sandbox.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::agent::{self, AgentOptions};
use crate::cgroup::{Cgroups, LimitsReport};
use crate::config::{Config, Helper, IdMap};
use crate::proto::{self, FromHelper, ToHelper, HELPER_ENV};
use crate::tap::Tap;
use crate::{Error, Result};

/// The control socket's number in the helper.
const CONTROL_FD: RawFd = 3;

/// How PID 1 ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Configures stdio and inherited descriptors before [`SandboxBuilder::start`].
#[derive(Debug)]
pub struct SandboxBuilder {
    config: Config,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    fds: Vec<(OwnedFd, RawFd)>,
    timeout: Duration,
    agent: Option<AgentOptions>,
}

/// A running namespace sandbox. Dropping it kills everything inside (like [`Sandbox::stop`]).
#[derive(Debug)]
pub struct Sandbox {
    monitor: Child,
    control: OwnedFd,
    pid: i32,
    pidfd: OwnedFd,
    tap: Option<Tap>,
    cgroups: Cgroups,
    limits: LimitsReport,
    state_dir: PathBuf,
    exec_socket: Option<PathBuf>,
    exit: Option<Exit>,
    /// PID 1's standard input, when configured as [`Stdio::piped`].
    pub stdin: Option<ChildStdin>,
    /// PID 1's standard output, when piped.
    pub stdout: Option<ChildStdout>,
    /// PID 1's standard error, when piped.
    pub stderr: Option<ChildStderr>,
}

/// Puts `fd` at [`CONTROL_FD`] in the child, without FD_CLOEXEC.
pub(crate) fn pass_control(cmd: &mut Command, fd: OwnedFd) {
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls (dup2,
    // fcntl, close_range), which are async-signal-safe; `fd` is moved in and stays open until the closure is dropped.
    unsafe {
        cmd.pre_exec(move || {
            let raw = fd.as_raw_fd();
            if raw == CONTROL_FD {
                if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Descriptors someone else left inheritable (a jobserver pipe, a C library's
            // files) must not reach the helper. close_range is a plain syscall; kernels
            // before 5.11 lack the flag and we carry on, PID 1 repeats this before exec.
            libc::syscall(
                libc::SYS_close_range,
                CONTROL_FD as libc::c_uint + 1,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
}

fn write_maps(pid: u32, map: IdMap) -> Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |file: &str, text: String| {
        fs::write(proc.join(file), text).map_err(|e| Error::io("write", proc.join(file), e))
    };
    if uid == 0 && matches!(map, IdMap::Auto | IdMap::Swap { .. }) {
        // Root may map a range: root inside is root outside (the invoker), and image files
        // owned by other ids keep their owners (but for a swapped pair).
        let (uids, gids) = map.root_lines();
        write("uid_map", uids)?;
        write("gid_map", gids)?;
    } else {
        if uid != 0 {
            // An unprivileged gid_map needs setgroups denied first.
            write("setgroups", "deny".into())?;
        }
        write("uid_map", format!("0 {uid} 1\n"))?;
        write("gid_map", format!("0 {gid} 1\n"))?;
    }
    Ok(())
}

fn wait_readable(fd: &OwnedFd, deadline: Instant, timeout: Duration) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(timeout));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(Error::Sys("poll control socket", e)),
        }
    }
}

impl SandboxBuilder {
    /// PID 1's standard input (default: `/dev/null`).
    pub fn stdin(mut self, s: impl Into<Stdio>) -> Self {
        self.stdin = Some(s.into());
        self
    }

    /// PID 1's standard output (default: inherited).
    pub fn stdout(mut self, s: impl Into<Stdio>) -> Self {
        self.stdout = Some(s.into());
        self
    }

    /// PID 1's standard error (default: inherited).
    pub fn stderr(mut self, s: impl Into<Stdio>) -> Self {
        self.stderr = Some(s.into());
        self
    }

    /// Hands `fd` to the init program as descriptor number `target` (3..1024), for example a
    /// listening socket the agent serves on.
    pub fn pass_fd(mut self, fd: OwnedFd, target: RawFd) -> Self {
        self.fds.push((fd, target));
        self
    }

    /// Runs the sbx guest agent as PID 1 instead of `config.init` (whose environment and
    /// working directory it inherits), serving the exec protocol on `<state>/exec.sock`
    /// ([`Sandbox::exec_socket`], [`Sandbox::client`]).
    pub fn agent(mut self, opts: AgentOptions) -> Self {
        self.agent = Some(opts);
        self
    }

    /// How long setup may take (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Builds the sandbox and starts its init program. Returns once PID 1 is about to exec it.
    pub fn start(self) -> Result<Sandbox> {
        let SandboxBuilder {
            mut config,
            stdin,
            stdout,
            stderr,
            mut fds,
            timeout,
            agent,
        } = self;
        config.validate()?;
        let mut exec_socket = None;
        if let Some(opts) = &agent {
            if fds.iter().any(|(_, t)| *t == agent::LISTEN_FD) {
                return Err(Error::InvalidConfig("fd 3 is the agent's".into()));
            }
            fs::create_dir_all(&config.state_dir)
                .map_err(|e| Error::io("create", &config.state_dir, e))?;
            let listener = agent::prepare(&mut config, opts)?;
            fds.push((listener, agent::LISTEN_FD));
            exec_socket = Some(agent::socket_path(&config));
            config.validate()?;
        }
        if fds.iter().any(|(_, t)| !(0..1024).contains(t)) {
            return Err(Error::InvalidConfig(
                "passed fd targets must be in 0..1024".into(),
            ));
        }
        let meta =
            fs::metadata(&config.rootfs).map_err(|e| Error::io("stat", &config.rootfs, e))?;
        if !meta.is_dir() {
            return Err(Error::InvalidConfig("rootfs is not a directory".into()));
        }
        for d in [config.upper_dir(), config.work_dir(), config.mount_dir()] {
            fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
        }
        // The writable layer holds files owned by root inside, which is the invoking user
        // outside (root, when run as root), setuid bits included: no other host user may
        // reach it.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&config.state_dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("chmod", &config.state_dir, e))?;
        }

        let helper = match &config.helper {
            Helper::CurrentExe => PathBuf::from("/proc/self/exe"),
            Helper::Path(p) => p.clone(),
        };
        let (control, theirs) = proto::pair()?;
        let mut cmd = Command::new(&helper);
        cmd.arg0("sbx-ns-helper")
            .env_clear()
            .env(HELPER_ENV, CONTROL_FD.to_string())
            .stdin(stdin.unwrap_or_else(Stdio::null))
            .stdout(stdout.unwrap_or_else(Stdio::inherit))
            .stderr(stderr.unwrap_or_else(Stdio::inherit))
            // Keep terminal signals (Ctrl-C) for the launcher to act on.
            .process_group(0);
        pass_control(&mut cmd, theirs);
        let monitor = cmd.spawn().map_err(|e| Error::Spawn(helper.clone(), e))?;
        drop(cmd);
        tracing::debug!(pid = monitor.id(), "sandbox helper spawned");

        let (cgroups, limits) = Cgroups::apply(&config.limits, monitor.id());
        let mut partial = Partial {
            monitor: Some(monitor),
            cgroups,
        };
        let handshake = (|| -> Result<(i32, OwnedFd, Option<Tap>)> {
            let raw: Vec<RawFd> = fds.iter().map(|(f, _)| f.as_raw_fd()).collect();
            let targets = fds.iter().map(|(_, t)| *t).collect();
            let start = ToHelper::Start {
                config: Box::new(config.clone()),
                fd_targets: targets,
            };
            proto::send(control.as_fd(), &start, &raw)?;
            drop(fds);
            let deadline = Instant::now() + timeout;
            let helper_pid = partial.monitor.as_ref().map_or(0, |m| m.id());
            let mut tap = None;
            let mut started = None;
            let mut ready = false;
            loop {
                if ready {
                    if let Some((pid, pidfd)) = started.take() {
                        return Ok((pid, pidfd, tap));
                    }
                }
                wait_readable(&control, deadline, timeout)?;
                let Some((msg, mut got)) = proto::recv::<FromHelper>(control.as_fd())? else {
                    return Err(Error::Protocol("helper exited during setup".into()));
                };
                match msg {
                    FromHelper::Unshared => {
                        write_maps(helper_pid, config.id_map)?;
                        proto::send(control.as_fd(), &ToHelper::Mapped, &[])?;
                    }
                    FromHelper::Tap { name } => {
                        let fd = got.pop().ok_or(Error::Protocol("TAP without fd".into()))?;
                        tap = Some(Tap::from_fd(fd, name));
                    }
                    FromHelper::Started { pid } => {
                        let fd = got.pop().ok_or(Error::Protocol("no pidfd".into()))?;
                        started = Some((pid, fd));
                    }
                    FromHelper::Warning { message } => tracing::warn!(%message, "sandbox setup"),
                    // PID 1 and the monitor send independently; either may come first.
                    FromHelper::Ready => ready = true,
                    FromHelper::Failed { message } => return Err(Error::Setup(message)),
                    other => return Err(Error::Protocol(format!("unexpected {other:?}"))),
                }
            }
        })();
        let (pid, pidfd, tap) = match handshake {
            Ok(v) => v,
            Err(e) => {
                drop(control);
                partial.abort();
                return Err(e);
            }
        };
        let mut monitor = partial
            .monitor
            .take()
            .ok_or(Error::Protocol("no monitor".into()))?;
        tracing::debug!(pid, "sandbox ready");
        Ok(Sandbox {
            stdin: monitor.stdin.take(),
            stdout: monitor.stdout.take(),
            stderr: monitor.stderr.take(),
            monitor,
            control,
            pid,
            pidfd,
            tap,
            cgroups: std::mem::take(&mut partial.cgroups),
            limits,
            state_dir: config.state_dir.clone(),
            exec_socket,
            exit: None,
        })
    }
}

/// Cleans up a half-started sandbox.
struct Partial {
    monitor: Option<Child>,
    cgroups: Cgroups,
}

impl Partial {
    fn abort(&mut self) {
        if let Some(mut m) = self.monitor.take() {
            // The monitor dying takes PID 1 with it (PR_SET_PDEATHSIG).
            let _ = m.kill();
            let _ = m.wait();
        }
        self.cgroups.remove();
    }
}

impl Sandbox {
    /// A builder for stdio and inherited descriptors.
    pub fn builder(config: Config) -> SandboxBuilder {
        SandboxBuilder {
            config,
            stdin: None,
            stdout: None,
            stderr: None,
            fds: Vec::new(),
            timeout: Duration::from_secs(10),
            agent: None,
        }
    }

    /// Starts a sandbox with default stdio (stdin null, stdout and stderr inherited).
    pub fn start(config: Config) -> Result<Sandbox> {
        Self::builder(config).start()
    }

    /// PID 1's process id in the host's pid namespace.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The host's end of the sandbox's `eth0`, if the network is on.
    pub fn tap(&mut self) -> Option<&mut Tap> {
        self.tap.as_mut()
    }

    /// Takes the TAP device out (to hand it to a network stack).
    pub fn take_tap(&mut self) -> Option<Tap> {
        self.tap.take()
    }

    /// Which cgroup limits are in force.
    pub fn limits(&self) -> &LimitsReport {
        &self.limits
    }

    /// The cgroup directories created for this sandbox (removed on stop).
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        self.cgroups.dirs()
    }

    /// The host-side state folder.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The exec protocol's Unix socket when the agent is PID 1.
    pub fn exec_socket(&self) -> Option<&Path> {
        self.exec_socket.as_deref()
    }

    /// An exec client for the agent (see [`sbx_exec::Client`]), when the agent is PID 1.
    pub fn client(&self) -> Option<sbx_exec::Client> {
        self.exec_socket.as_ref().map(sbx_exec::Client::unix)
    }

    /// Stops an agent sandbox the orderly way: the agent ends every process and exits, then
    /// the namespaces go away. Kills after `grace` (or at once when there is no agent).
    pub fn shutdown(mut self, grace: Duration) -> Result<Exit> {
        let asked = self.client().map(|c| c.shutdown());
        if let Some(Err(e)) = &asked {
            tracing::warn!(error = %e, "agent shutdown request failed; killing");
        }
        if !matches!(asked, Some(Ok(()))) || !self.wait_exit(grace) {
            self.signal(libc::SIGKILL)?;
        }
        self.wait()
    }

    /// Waits up to `t` for PID 1 to end; true if it did.
    fn wait_exit(&self, t: Duration) -> bool {
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(t.as_millis()).unwrap_or(u16::MAX);
        matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
    }

    /// Sends `signal` to PID 1 (through a pidfd, never a recycled pid). Inside its pid
    /// namespace PID 1 only gets signals it handles, plus SIGKILL and SIGSTOP.
    pub fn signal(&self, signal: i32) -> Result<()> {
        // SAFETY: pidfd_send_signal takes a descriptor we own, a signal number and a null
        // siginfo pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = nix::Error::last();
            if e != nix::Error::ESRCH {
                return Err(Error::Sys("pidfd_send_signal", e));
            }
        }
        Ok(())
    }

    /// Waits for PID 1 to end (everything else inside dies with it).
    pub fn wait(&mut self) -> Result<Exit> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        let status = loop {
            match self.monitor.wait() {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|e| Error::io("wait", "sandbox monitor", e))?,
            }
        };
        let mut exit = None;
        // The monitor sent PID 1's exact status before exiting; drain until EOF.
        while let Ok(Some((msg, _))) = proto::recv::<FromHelper>(self.control.as_fd()) {
            if let FromHelper::Exited { code, signal } = msg {
                exit = code.map(Exit::Code).or(signal.map(Exit::Signal));
            }
        }
        let exit = exit.unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            status
                .code()
                .map(Exit::Code)
                .or(status.signal().map(Exit::Signal))
                .unwrap_or(Exit::Code(125))
        });
        self.exit = Some(exit);
        self.cleanup();
        Ok(exit)
    }

    /// Kills everything inside and waits. Nothing is left running, mounted or attached on
    /// the host; the writable layer in the state folder stays.
    pub fn stop(mut self) -> Result<Exit> {
        self.signal(libc::SIGKILL)?;
        self.wait()
    }

    /// Asks PID 1 to end with SIGTERM, then kills after `grace`.
    pub fn stop_timeout(mut self, grace: Duration) -> Result<Exit> {
        self.signal(libc::SIGTERM)?;
        if !self.wait_exit(grace) {
            self.signal(libc::SIGKILL)?;
        }
        self.wait()
    }

    fn cleanup(&mut self) {
        self.tap = None;
        self.cgroups.remove();
        if let Some(sock) = &self.exec_socket {
            let _ = fs::remove_file(sock);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.signal(libc::SIGKILL);
            let _ = self.wait();
        }
    }
}
