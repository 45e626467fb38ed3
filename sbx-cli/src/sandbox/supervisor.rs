//! The per-sandbox supervisor: a detached `sbx __supervise NAME` process that outlives the
//! terminal. It holds the sandbox's lock for its whole life, starts the backend, runs the
//! kits' first-start and startup work, records `state.json`, and stops the backend on SIGTERM
//! (the agent's orderly shutdown, then a forced stop after a timeout).
//!
//! The `sbx` that starts it waits until the sandbox answers an exec, or reports the
//! supervisor's error with the log path and its last lines.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sbx_exec::{Client, ExecRequest, User};
use sbx_image::{ImageKind, Store};

use super::backend_ns::{self, NsRunning};
use super::backend_vm::{self, BootFiles, VmRunning};
use super::config::{Backend, KitCommand, SandboxConfig, DEFAULT_WORKDIR};
use super::lock::SandboxLock;
use super::network;
use super::state::{atomic_write, now_unix, Layout, RunState, RunStatus, SandboxDir};
use crate::exit::ExitStatus;

/// The supervisor's exit code when another supervisor already holds the lock.
pub const EXIT_BUSY: u8 = 75;
/// How long the agent gets to end everything before the backend is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long `sbx stop` waits for the supervisor before killing it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether backends create a network device (the TAP device or virtio-net behind sbx-net's
/// userspace stack, see [`super::network`]).
pub const NETWORK: bool = true;

/// A started backend.
#[derive(Debug)]
pub enum Running {
    /// sbx-ns.
    Namespace(Box<NsRunning>),
    /// sbx-vmm.
    Microvm(VmRunning),
}

impl Running {
    /// The exec client.
    pub fn client(&self) -> Client {
        match self {
            Running::Namespace(r) => r.client(),
            Running::Microvm(r) => r.client(),
        }
    }

    fn try_exit(&mut self) -> Option<String> {
        match self {
            Running::Namespace(r) => r.try_exit(),
            Running::Microvm(r) => r.try_exit(),
        }
    }

    fn shutdown(self, grace: Duration) -> String {
        match self {
            Running::Namespace(r) => r.shutdown(grace),
            Running::Microvm(r) => r.shutdown(grace),
        }
    }

    /// The guest's frame device (TAP fd or the virtio-net socket), once.
    fn take_frame_fd(&mut self) -> Option<std::os::fd::OwnedFd> {
        match self {
            Running::Namespace(r) => r
                .sandbox_mut()
                .and_then(|sb| sb.take_tap())
                .map(sbx_ns::Tap::into_fd),
            Running::Microvm(r) => r.take_net_fd(),
        }
    }
}

/// The sandbox's network while it runs (stack, proxy, policy watcher); stops on drop.
#[derive(Debug, Default)]
pub struct Network {
    /// Absent when the backend has no network device.
    pub inner: Option<network::Network>,
}

/// Sets up the sandbox's network once the backend runs: sbx-net's userspace stack on the
/// backend's frame device, the sandbox's proxy with the effective policy, its secrets and
/// its `policy.log`. Tasks run on `rt` (the supervisor's 2-worker runtime).
pub fn start_network(
    rt: &tokio::runtime::Handle,
    data_dir: &Path,
    cfg: &SandboxConfig,
    dir: &SandboxDir,
    running: &mut Running,
) -> anyhow::Result<Network> {
    let Some(fd) = running.take_frame_fd() else {
        tracing::info!(sandbox = %cfg.name, "no network device");
        return Ok(Network::default());
    };
    let ca = network::sandbox_ca(dir)?;
    let net = network::start(rt, data_dir, cfg, dir, ca, fd)?;
    Ok(Network { inner: Some(net) })
}

/// A microVM's disk is not touched by the host: the sandbox CA goes in by exec after boot
/// (the namespace backend binds it in and the agent installs it at start).
fn install_ca_by_exec(
    cfg: &SandboxConfig,
    dir: &SandboxDir,
    client: &Client,
) -> anyhow::Result<()> {
    let ca = network::sandbox_ca(dir)?;
    let argv: Vec<String> = vec!["sh".into(), "-c".into(), network::INSTALL_CA_SCRIPT.into()];
    let req = request(cfg, &argv, "root", Path::new("/")).env("SBX_CA_PEM", ca.cert_pem());
    let out = client.output(req).context("installing the sandbox CA")?;
    if !out.status.success() {
        bail!(
            "installing the sandbox CA failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// An exec client for a sandbox, whether or not this process started it.
pub fn client_for(cfg: &SandboxConfig, dir: &SandboxDir) -> Client {
    match cfg.backend {
        Backend::Namespace => Client::unix(dir.exec_socket()),
        Backend::Microvm => Client::new(sbx_exec::HybridVsockTransport::new(
            dir.vsock_socket(),
            backend_vm::EXEC_PORT,
        )),
    }
}

/// A request with the sandbox's environment (kit variables and sentinels).
pub fn request(cfg: &SandboxConfig, argv: &[String], user: &str, cwd: &Path) -> ExecRequest {
    let mut req = ExecRequest::new(argv)
        .user(User::Name(user.to_owned()))
        .cwd(cwd);
    for (k, v) in cfg.full_env() {
        req = req.env(k, v);
    }
    req
}

/// Spawns the supervisor detached, its output in `supervisor.log`.
pub fn spawn(dir: &SandboxDir, layout: &Layout) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the sbx executable")?;
    let log_path = dir.supervisor_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log2 = log.try_clone()?;
    Command::new(exe)
        .args(["__supervise", &dir.name])
        .env("SBX_HOME", &layout.data_dir)
        .env("SBX_IMAGES_DIR", layout.images())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .context("starting the sandbox supervisor")
}

/// Waits until the sandbox answers, or fails with what the supervisor said.
pub fn wait_ready(
    dir: &SandboxDir,
    cfg: &SandboxConfig,
    mut child: Child,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let child_pid = child.id();
    let mut child_done = false;
    loop {
        if !child_done {
            if let Some(st) = child.try_wait()? {
                child_done = true;
                if st.code() != Some(i32::from(EXIT_BUSY)) {
                    return Err(start_failure(dir, &format!("the supervisor exited ({st})")));
                }
                // Another `sbx` started it first; wait for that supervisor instead.
            }
        }
        let held = SandboxLock::try_acquire(&dir.lock_path())?.is_none();
        // Only a state written by our supervisor (or, when another one won the race, by the
        // one holding the lock) counts: an old `failed` from before this start does not.
        let current = |s: &RunState| {
            s.pid == Some(child_pid)
                || (child_done && s.pid.and_then(|p| i32::try_from(p).ok()) == dir.supervisor_pid())
        };
        match dir.read_state().filter(current) {
            Some(s)
                if s.status == RunStatus::Running
                    && held
                    && client_for(cfg, dir)
                        .start_timeout(Duration::from_secs(5))
                        .output(ExecRequest::new(["true"]))
                        .is_ok() =>
            {
                return Ok(());
            }
            Some(s) if s.status == RunStatus::Failed && !held => {
                return Err(start_failure(dir, "it failed to start"));
            }
            _ if child_done && !held => {
                return Err(start_failure(dir, "the supervisor is gone"));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(start_failure(
                dir,
                &format!("it did not answer within {}s", timeout.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// "sandbox X failed to start: ..." with the recorded error and the logs' last lines.
pub fn start_failure(dir: &SandboxDir, what: &str) -> anyhow::Error {
    let mut msg = format!("sandbox {} failed to start: {what}", dir.name);
    if let Some(e) = dir.read_state().and_then(|s| s.error.or(s.exit)) {
        msg.push_str(&format!("\n  error: {e}"));
    }
    msg.push_str(&log_excerpt(dir));
    msg.push_str(&format!(
        "\n  its state is kept; remove it with `sbx rm {}`",
        dir.name
    ));
    anyhow::anyhow!(msg)
}

/// The logs' paths and last lines, indented.
pub fn log_excerpt(dir: &SandboxDir) -> String {
    let mut msg = String::new();
    for path in [dir.supervisor_log(), dir.console_log()] {
        let lines = SandboxDir::tail(&path, 8);
        if lines.is_empty() {
            continue;
        }
        msg.push_str(&format!("\n  last lines of {}:", path.display()));
        for l in lines {
            msg.push_str(&format!("\n    {l}"));
        }
    }
    msg
}

fn boot_files(store: &Store) -> anyhow::Result<BootFiles> {
    let kernel = store
        .current(ImageKind::Kernel, "default")?
        .context("no kernel image: run `sbx image build`")?;
    let rootfs = store
        .current(ImageKind::Rootfs, "default")?
        .context("no root filesystem image: run `sbx image build`")?;
    Ok(BootFiles {
        kernel: kernel.kernel(),
        initramfs: kernel.initramfs(),
        module_args: kernel.init_module_args(),
        rootfs_ext4: rootfs
            .rootfs_ext4()
            .context("the root filesystem image has no ext4 disk: run `sbx image build --force`")?,
    })
}

fn start_backend(
    cfg: &SandboxConfig,
    dir: &SandboxDir,
    layout: &Layout,
) -> anyhow::Result<Running> {
    let store = Store::new(layout.images());
    match cfg.backend {
        Backend::Namespace => {
            let rootfs = store
                .current(ImageKind::Rootfs, "default")?
                .context("no root filesystem image: run `sbx image build --only rootfs`")?;
            if NETWORK {
                // The agent installs it from the bind at start.
                network::sandbox_ca(dir)?;
            }
            backend_ns::start(cfg, dir, &rootfs.rootfs_dir(), &layout.agent_dir(), NETWORK)
                .map(|r| Running::Namespace(Box::new(r)))
        }
        Backend::Microvm => {
            let boot = boot_files(&store)?;
            backend_vm::start(cfg, dir, &boot).map(Running::Microvm)
        }
    }
}

/// Waits until the agent answers an exec.
fn wait_agent(client: &Client, running: &mut Running, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match client
            .clone()
            .start_timeout(Duration::from_secs(5))
            .output(ExecRequest::new(["true"]))
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                if let Some(how) = running.try_exit() {
                    bail!("the sandbox ended before its agent answered: {how}");
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the agent did not answer within {}s: {e}",
                        timeout.as_secs()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_logged(client: &Client, req: ExecRequest, what: &str) -> anyhow::Result<()> {
    let out = client
        .output(req)
        .with_context(|| format!("running {what}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    tracing::info!("{what}: {}", out.status);
    eprint_lines(&text);
    eprint_lines(&err);
    if !out.status.success() {
        let last: Vec<&str> = err.lines().chain(text.lines()).rev().take(5).collect();
        bail!(
            "{what} failed ({}){}",
            out.status,
            last.iter()
                .rev()
                .map(|l| format!("\n    {l}"))
                .collect::<String>()
        );
    }
    Ok(())
}

#[allow(clippy::print_stderr)]
fn eprint_lines(text: &str) {
    for l in text.lines() {
        eprintln!("  | {l}");
    }
}

fn user_for_path(path: &str) -> &'static str {
    if path == "/home/agent" || path.starts_with("/home/agent/") {
        "agent"
    } else {
        "root"
    }
}

/// First start: the workspace folder, the kits' files, their install commands.
fn first_start(cfg: &SandboxConfig, dir: &SandboxDir, client: &Client) -> anyhow::Result<()> {
    let root = Path::new("/");
    // sudo and friends look the host name up.
    let hosts = "grep -qwF -- \"$1\" /etc/hosts || printf '127.0.1.1\\t%s\\n' \"$1\" >> /etc/hosts"
        .to_owned();
    let argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        hosts,
        "sh".into(),
        cfg.name.clone(),
    ];
    run_logged(
        client,
        request(cfg, &argv, "root", root),
        "adding the host name to /etc/hosts",
    )?;
    if cfg.workspace.is_none() {
        let argv: Vec<String> = [
            "install",
            "-d",
            "-o",
            "agent",
            "-g",
            "agent",
            DEFAULT_WORKDIR,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run_logged(
            client,
            request(cfg, &argv, "root", root),
            "creating the workspace folder",
        )?;
    }
    super::workspace::first_start(cfg, client)?;
    for f in &cfg.files {
        let script = "mkdir -p \"$(dirname \"$1\")\" && printf '%s' \"$SBX_FILE_CONTENT\" > \"$1\" && chmod \"$2\" \"$1\"";
        let argv: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            f.path.clone(),
            format!("{:o}", f.mode),
        ];
        let req =
            request(cfg, &argv, user_for_path(&f.path), root).env("SBX_FILE_CONTENT", &f.content);
        run_logged(client, req, &format!("writing {}", f.path))?;
    }
    for c in &cfg.install {
        run_command(cfg, client, c, "install")?;
    }
    atomic_write(
        &dir.installed_path(),
        format!("{}\n", now_unix()).as_bytes(),
    )
}

fn run_command(
    cfg: &SandboxConfig,
    client: &Client,
    c: &KitCommand,
    phase: &str,
) -> anyhow::Result<()> {
    let what = format!("{phase} command `{}` ({})", c.argv.join(" "), c.origin);
    let argv = if c.background {
        let mut v: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            "nohup \"$@\" >/dev/null 2>&1 &".into(),
            "sh".into(),
        ];
        v.extend(c.argv.iter().cloned());
        v
    } else {
        c.argv.clone()
    };
    run_logged(client, request(cfg, &argv, &c.user, &cfg.workdir()), &what)
}

enum Outcome {
    Stop,
    Died(String),
}

/// `sbx __supervise NAME`: the supervisor's main.
pub fn main(name: &str) -> anyhow::Result<ExitStatus> {
    // A session of its own: no controlling terminal, so closing the user's terminal (SIGHUP
    // to its session) does not reach the sandbox.
    let _ = nix::unistd::setsid();
    let layout = Layout::current()?;
    let dir = layout.sandbox(name);
    let Some(lock) = SandboxLock::try_acquire(&dir.lock_path())? else {
        tracing::info!("another supervisor runs {name}");
        return Ok(ExitStatus::Code(EXIT_BUSY));
    };
    let pid = std::process::id();
    atomic_write(&dir.pid_path(), format!("{pid}\n").as_bytes())?;
    let cfg = dir.read_config()?;
    let started = now_unix();
    let state = |status: RunStatus, exit: Option<String>, error: Option<String>| RunState {
        status,
        pid: Some(pid),
        backend: cfg.backend,
        started_unix: started,
        exit,
        error,
    };
    dir.write_state(&state(RunStatus::Starting, None, None))?;
    log_line(&format!(
        "supervisor {pid} starting {name} ({})",
        cfg.backend.as_str()
    ));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sbx-supervisor")
        .build()
        .context("starting the supervisor runtime")?;
    // Signals are caught from here on; one that arrives during the start is handled once the
    // sandbox is up.
    let (mut term, mut int) = {
        let _g = rt.enter();
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };

    let started_backend = (|| -> anyhow::Result<(Running, Network)> {
        let mut running = start_backend(&cfg, &dir, &layout)?;
        let network = start_network(rt.handle(), &layout.data_dir, &cfg, &dir, &mut running)?;
        let client = running.client();
        let boot_timeout = match cfg.backend {
            Backend::Namespace => Duration::from_secs(30),
            Backend::Microvm => Duration::from_secs(120),
        };
        wait_agent(&client, &mut running, boot_timeout)?;
        if network.inner.is_some() && cfg.backend == Backend::Microvm {
            install_ca_by_exec(&cfg, &dir, &client)?;
        }
        if !dir.installed_path().exists() {
            first_start(&cfg, &dir, &client)?;
        }
        for c in &cfg.startup {
            if let Err(e) = run_command(&cfg, &client, c, "startup") {
                log_line(&format!("warning: {e:#}"));
            }
        }
        Ok((running, network))
    })();
    let (mut running, network) = match started_backend {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("{e:#}");
            dir.write_state(&state(RunStatus::Failed, None, Some(msg)))?;
            drop(lock);
            return Err(e);
        }
    };
    dir.write_state(&state(RunStatus::Running, None, None))?;
    log_line(&format!("{name} is running"));

    let outcome = rt.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break Outcome::Stop,
                _ = int.recv() => break Outcome::Stop,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if let Some(how) = running.try_exit() {
                        break Outcome::Died(how);
                    }
                }
            }
        }
    });
    let result = match outcome {
        Outcome::Stop => {
            dir.write_state(&state(RunStatus::Stopping, None, None))?;
            let how = running.shutdown(SHUTDOWN_GRACE);
            log_line(&format!("{name} stopped: {how}"));
            dir.write_state(&state(RunStatus::Stopped, Some(how), None))?;
            Ok(ExitStatus::Success)
        }
        Outcome::Died(how) => {
            log_line(&format!("{name} ended on its own: {how}"));
            dir.write_state(&state(
                RunStatus::Failed,
                Some(how.clone()),
                Some(format!("the sandbox ended on its own: {how}")),
            ))?;
            Ok(ExitStatus::Failure)
        }
    };
    drop(network);
    rt.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_file(dir.pid_path());
    drop(lock);
    result
}

#[allow(clippy::print_stderr)]
fn log_line(line: &str) {
    eprintln!("[{}] {line}", now_unix());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kit_files_run_as_the_owner_of_their_folder() {
        assert_eq!(user_for_path("/home/agent/.config/x"), "agent");
        assert_eq!(user_for_path("/home/agent"), "agent");
        assert_eq!(user_for_path("/home/agentx/f"), "root");
        assert_eq!(user_for_path("/etc/motd"), "root");
    }
}
