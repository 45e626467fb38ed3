//! The agent's life: setup, listeners, startup and main commands, signals, shutdown.

use std::ffi::OsString;
use std::net::IpAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sbx_exec::ExitStatus;

use crate::error::{Error, Result};
use crate::exec::{self, ExecDefaults};
use crate::init::{self, DevMode, SwitchRoot};
use crate::net::{self, NetSetup};
use crate::reaper::Reaper;
use crate::{modules, session, sys};

/// Where the agent accepts exec connections.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Listen {
    /// An inherited socket that is already bound and listening (the namespace launcher creates
    /// it in the sandbox's state folder, which the sandbox cannot see).
    Fd(RawFd),
    /// A new Unix socket at this path (a stale file there is replaced).
    Path(PathBuf),
    /// An `AF_VSOCK` port (microVM).
    Vsock(u32),
}

/// What happens when the main command ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnMainExit {
    /// Shut the sandbox down; the agent's exit code is the command's (128+signal if killed).
    #[default]
    Shutdown,
    /// Keep serving execs.
    Stay,
}

/// The agent's configuration. Build with [`AgentConfig::default`] and the fields, or from
/// command-line flags with [`crate::parse_args`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AgentConfig {
    /// Listeners (at least one, or the agent only runs its commands).
    pub listen: Vec<Listen>,
    /// Do PID-1 setup: modules, switch_root, mounts, hostname. Default: when PID 1.
    pub init: bool,
    /// How `/dev` is provided when `init`.
    pub dev: DevMode,
    /// Hostname to set when `init`.
    pub hostname: Option<String>,
    /// `/lib/modules/<version>` holding `modules.dep` (microVM).
    pub modules_dir: Option<PathBuf>,
    /// Kernel modules to load, dependencies first (microVM).
    pub modules: Vec<String>,
    /// Root disk to switch to after loading modules (microVM).
    pub switch_root: Option<SwitchRoot>,
    /// Shell commands run in order with `/bin/sh -c` before the exec service starts.
    pub startup: Vec<String>,
    /// The main command (empty: none; the agent serves until asked to shut down).
    pub main: Vec<OsString>,
    /// What the end of the main command means.
    pub on_main_exit: OnMainExit,
    /// On shutdown as PID 1, power the machine off instead of exiting (microVM).
    pub power_off: bool,
    /// Environment for every command the agent starts.
    pub env: Vec<(OsString, OsString)>,
    /// How long processes get between SIGTERM and SIGKILL at shutdown.
    pub shutdown_grace: Duration,
    /// Static IPv4 setup of the guest interface (microVM; in a namespace sandbox the
    /// launcher may configure the TAP itself).
    pub net: Option<NetSetup>,
    /// Name server written to `/etc/resolv.conf`.
    pub nameserver: Option<IpAddr>,
    /// PEM file of the sandbox CA to install into the trust store; read before the switch to
    /// the root disk when it exists there (initramfs), else from the final root.
    pub ca_cert: Option<PathBuf>,
    /// virtio-fs shares mounted after the switch to the root disk (microVM workspaces).
    pub virtiofs: Vec<crate::mounts::VirtiofsMount>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            init: sys::getpid() == 1,
            dev: DevMode::default(),
            hostname: None,
            modules_dir: None,
            modules: Vec::new(),
            switch_root: None,
            startup: Vec::new(),
            main: Vec::new(),
            on_main_exit: OnMainExit::default(),
            power_off: false,
            env: Vec::new(),
            shutdown_grace: Duration::from_secs(5),
            net: None,
            nameserver: None,
            ca_cert: None,
            virtiofs: Vec::new(),
        }
    }
}

/// State shared by the agent's threads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) reaper: Reaper,
    pub(crate) defaults: ExecDefaults,
    shutdown: Mutex<Option<i32>>,
    shutdown_cond: Condvar,
    main_pid: AtomicI32,
    /// Connections being served.
    sessions: AtomicUsize,
}

impl Shared {
    pub(crate) fn request_shutdown(&self, code: i32) {
        let mut s = self.shutdown.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_none() {
            tracing::info!(code, "shutdown requested");
            *s = Some(code);
        }
        self.shutdown_cond.notify_all();
    }

    fn wait_shutdown(&self) -> i32 {
        let mut s = self.shutdown.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(c) = *s {
                return c;
            }
            s = self
                .shutdown_cond
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn open_listener(l: &Listen) -> Result<OwnedFd> {
    match l {
        Listen::Fd(fd) => {
            // SAFETY: the launcher passed this fd to us for exactly this purpose; nothing else
            // in the agent uses it.
            unsafe { sys::adopt_fd(*fd) }.map_err(Error::io("adopt the listening fd"))
        }
        Listen::Path(p) => {
            // Bind under a temporary name and rename, so the path appears only once the
            // socket listens: a client that sees it can connect.
            let mut tmp = p.clone().into_os_string();
            tmp.push(format!(".tmp{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let l = UnixListener::bind(&tmp).map_err(Error::io("bind the exec socket"))?;
            std::fs::rename(&tmp, p).map_err(Error::io("rename the exec socket"))?;
            Ok(OwnedFd::from(l))
        }
        Listen::Vsock(port) => sys::vsock_listen(*port).map_err(Error::io("listen on vsock")),
    }
}

fn accept_loop(listener: OwnedFd, shared: Arc<Shared>) {
    loop {
        match sys::accept(&listener) {
            Ok(conn) => {
                let sh = Arc::clone(&shared);
                shared.sessions.fetch_add(1, Ordering::SeqCst);
                let r = std::thread::Builder::new()
                    .name("sbx-exec".into())
                    .spawn(move || {
                        session::serve(conn, Arc::clone(&sh));
                        sh.sessions.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = r {
                    shared.sessions.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(error = %e, "cannot start a session thread");
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED) => {}
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    tracing::error!(error = %e, "accept failed; listener stopped");
                    return;
                }
            },
        }
    }
}

fn signal_loop(sfd: OwnedFd, shared: Arc<Shared>) {
    loop {
        match sys::read_signal(&sfd) {
            Ok(libc::SIGCHLD) => {
                shared.reaper.reap();
            }
            Ok(sig) => {
                let main = shared.main_pid.load(Ordering::SeqCst);
                if main > 0 {
                    tracing::debug!(sig, main, "forwarding signal to the main command");
                    let _ = sys::kill(main, sig);
                } else if matches!(sig, libc::SIGTERM | libc::SIGINT | libc::SIGPWR) {
                    shared.request_shutdown(0);
                } else {
                    tracing::debug!(sig, "ignoring signal");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "signalfd read failed");
                return;
            }
        }
    }
}

/// Network, resolver and trust store setup under `root`. Failures are logged, not fatal: the
/// sandbox stays usable (and debuggable) without a network. Returns the environment the CA
/// installation adds to every command.
fn guest_network(
    config: &AgentConfig,
    early_ca: Option<Vec<u8>>,
    root: &Path,
) -> Vec<(OsString, OsString)> {
    if let Some(setup) = &config.net {
        if let Err(e) = net::configure_network(setup) {
            tracing::error!("network setup failed: {}", crate::cli::error_chain(&e));
        }
    }
    if let Some(ns) = config.nameserver {
        if let Err(e) = net::write_resolv_conf(root, ns) {
            tracing::error!("{}", crate::cli::error_chain(&e));
        }
    }
    let Some(path) = &config.ca_cert else {
        return Vec::new();
    };
    let pem = match early_ca.map_or_else(|| std::fs::read(path), Ok) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the CA certificate");
            return Vec::new();
        }
    };
    match net::install_ca_cert(root, &pem) {
        Ok(env) => env,
        Err(e) => {
            tracing::error!(path = %path.display(), "CA installation failed: {}", crate::cli::error_chain(&e));
            Vec::new()
        }
    }
}

fn terminate_all(shared: &Shared, grace: Duration) {
    let pid1 = sys::getpid() == 1;
    let kill_all = |sig| {
        if pid1 {
            let _ = sys::kill(-1, sig);
        } else {
            for pid in shared.reaper.pids() {
                let _ = sys::kill(-pid, sig);
                let _ = sys::kill(pid, sig);
            }
        }
    };
    for (sig, wait) in [
        (libc::SIGTERM, grace),
        (libc::SIGKILL, Duration::from_secs(2)),
    ] {
        if !sys::has_children() {
            break;
        }
        kill_all(sig);
        let deadline = Instant::now() + wait;
        while sys::has_children() && Instant::now() < deadline {
            shared.reaper.reap();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    shared.reaper.reap();
    sys::sync();
}

/// Runs the agent until shutdown; returns the exit code for the process (or powers off).
///
/// Call this from the main thread before starting any other thread: it blocks the signals it
/// handles, and threads created earlier would keep them unblocked.
pub fn run(config: AgentConfig) -> Result<i32> {
    let sfd = sys::block_signals_and_signalfd().map_err(Error::io("signalfd"))?;
    if sys::getpid() != 1 {
        if let Err(e) = sys::set_child_subreaper() {
            tracing::warn!(error = %e, "cannot become a subreaper");
        }
    }
    // The CA file may live in the initramfs, which the switch to the root disk hides.
    let early_ca = config.ca_cert.as_ref().and_then(|p| std::fs::read(p).ok());
    if config.init {
        if !config.modules.is_empty() {
            let dir = config
                .modules_dir
                .clone()
                .ok_or_else(|| Error::Usage("modules need --modules-dir".into()))?;
            let names: Vec<&str> = config.modules.iter().map(String::as_str).collect();
            modules::load_modules(&dir, &names)?;
        }
        if let Some(root) = &config.switch_root {
            init::switch_root(root)?;
        }
        init::standard_mounts(config.dev)?;
        if let Some(h) = &config.hostname {
            init::set_hostname(h)?;
        }
    }
    crate::mounts::mount_all(&config.virtiofs)?;
    let mut env = guest_network(&config, early_ca, Path::new("/"));
    env.extend(config.env.iter().cloned());
    let shared = Arc::new(Shared {
        reaper: Reaper::default(),
        defaults: ExecDefaults {
            root: PathBuf::from("/"),
            env,
        },
        shutdown: Mutex::new(None),
        shutdown_cond: Condvar::new(),
        main_pid: AtomicI32::new(0),
        sessions: AtomicUsize::new(0),
    });
    {
        let sh = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sbx-signals".into())
            .spawn(move || signal_loop(sfd, sh))
            .map_err(Error::io("spawn the signal thread"))?;
    }
    let listeners = config
        .listen
        .iter()
        .map(open_listener)
        .collect::<Result<Vec<_>>>()?;

    for cmd in &config.startup {
        let argv: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), cmd.into()];
        match exec::start_plain(&argv, &shared.defaults, &shared.reaper) {
            Ok(h) => {
                let st = h.waiter.wait(None).map(ExitStatus::from_wait_status);
                if st != Some(ExitStatus::Code(0)) {
                    tracing::warn!(command = %cmd, status = ?st, "startup command failed");
                }
            }
            Err(e) => tracing::warn!(command = %cmd, error = %e, "cannot run startup command"),
        }
    }

    for l in listeners {
        let sh = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sbx-accept".into())
            .spawn(move || accept_loop(l, sh))
            .map_err(Error::io("spawn an accept thread"))?;
    }
    tracing::info!(listeners = config.listen.len(), "exec service ready");

    if !config.main.is_empty() {
        let h = exec::start_plain(&config.main, &shared.defaults, &shared.reaper)
            .map_err(Error::io("start the main command"))?;
        shared.main_pid.store(h.pid, Ordering::SeqCst);
        let sh = Arc::clone(&shared);
        let on_exit = config.on_main_exit;
        std::thread::Builder::new()
            .name("sbx-main".into())
            .spawn(move || {
                let status = h.waiter.wait(None).map(ExitStatus::from_wait_status);
                sh.main_pid.store(0, Ordering::SeqCst);
                tracing::info!(status = ?status, "main command ended");
                if on_exit == OnMainExit::Shutdown {
                    sh.request_shutdown(status.map_or(1, ExitStatus::shell_code));
                }
            })
            .map_err(Error::io("spawn the main-command thread"))?;
    }

    let code = shared.wait_shutdown();
    terminate_all(&shared, config.shutdown_grace);
    // Let sessions whose commands just died report the exit status before the agent goes.
    let deadline = Instant::now() + Duration::from_secs(2);
    while shared.sessions.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if config.power_off && sys::getpid() == 1 {
        let e = sys::power_off();
        return Err(Error::Io {
            what: "power off",
            source: e,
        });
    }
    Ok(code)
}
