//! The namespace backend: sbx-ns on the default image's root directory, with the sandbox's
//! own writable layer in `<sandbox>/ns/upper` (kept across stop/start, deleted by `rm`) and
//! `sbx` itself as the guest agent (PID 1).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use sbx_ns::{AgentOptions, Bind, Config, Init, Ipv4Config, Limits, Sandbox};

use super::config::SandboxConfig;
use super::network;
use super::state::SandboxDir;

/// Process limit of a namespace sandbox (fork bombs hit it, not the host).
const PIDS: u64 = 16384;

/// The sbx-ns configuration of a sandbox.
pub fn ns_config(cfg: &SandboxConfig, dir: &SandboxDir, rootfs: &Path, network: bool) -> Config {
    // The agent replaces this init program (see sbx-ns AgentOptions).
    let init = Init::new("/bin/sh", Vec::<String>::new());
    let limits = Limits::default()
        .with_memory_bytes(cfg.memory_bytes)
        .with_cpus(f64::from(cfg.cpus))
        .with_pids(PIDS);
    let mut c = Config::new(rootfs, dir.ns_dir(), init)
        .with_hostname(&cfg.name)
        .with_limits(limits)
        .with_network(network)
        .with_setuid(true);
    c = super::workspace::apply_ns(c, cfg);
    if network {
        c = c
            .with_ipv4(
                Ipv4Config::new(network::GUEST, network::PREFIX_LEN, Some(network::GATEWAY))
                    .with_mtu(network::TAP_MTU),
            )
            .with_bind(Bind::new(
                network::ca_cert_file(dir),
                network::CA_GUEST_PATH,
                true,
            ));
    }
    c
}

/// The agent flags: the sandbox stays up whatever its commands do, until `sbx stop`; with a
/// network, the name server, the sandbox CA and the proxy variables.
pub fn agent_options(network: bool) -> AgentOptions {
    let mut args: Vec<String> = vec!["--on-main-exit".into(), "stay".into()];
    if network {
        args.extend(network::agent_args(false));
    }
    AgentOptions::default().with_args(args)
}

/// A running namespace sandbox.
#[derive(Debug)]
pub struct NsRunning {
    sandbox: Option<Sandbox>,
    pid: i32,
    client: sbx_exec::Client,
}

/// Starts the sandbox with PID 1's output in `console.log`; the agent is installed in (or
/// reused from) `agent_dir`, shared by all sandboxes of the data directory.
pub fn start(
    cfg: &SandboxConfig,
    dir: &SandboxDir,
    rootfs: &Path,
    agent_dir: &Path,
    network: bool,
) -> anyhow::Result<NsRunning> {
    std::fs::create_dir_all(dir.ns_dir())
        .with_context(|| format!("creating {}", dir.ns_dir().display()))?;
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.console_log())
        .with_context(|| format!("opening {}", dir.console_log().display()))?;
    let console2 = console.try_clone()?;
    let config = ns_config(cfg, dir, rootfs, network);
    let sandbox = Sandbox::builder(config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(console))
        .stderr(Stdio::from(console2))
        .agent(agent_options(network).with_install_dir(agent_dir))
        .timeout(Duration::from_secs(30))
        .start()
        .context("starting the namespace sandbox")?;
    let client = sandbox.client().context("the sandbox has no exec socket")?;
    for (what, state) in [
        ("memory", &sandbox.limits().memory),
        ("cpu", &sandbox.limits().cpu),
        ("pids", &sandbox.limits().pids),
    ] {
        tracing::info!("limit {what}: {state:?}");
    }
    Ok(NsRunning {
        pid: sandbox.pid() as i32,
        sandbox: Some(sandbox),
        client,
    })
}

impl NsRunning {
    /// The exec client.
    pub fn client(&self) -> sbx_exec::Client {
        self.client.clone()
    }

    /// The sandbox, e.g. to take its TAP device for the network.
    pub fn sandbox_mut(&mut self) -> Option<&mut Sandbox> {
        self.sandbox.as_mut()
    }

    /// How it ended, if PID 1 is gone.
    pub fn try_exit(&mut self) -> Option<String> {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), None).is_ok()
            && !is_zombie(self.pid);
        if alive {
            return None;
        }
        let mut sb = self.sandbox.take()?;
        Some(match sb.wait() {
            Ok(e) => describe(e),
            Err(e) => format!("lost the sandbox: {e}"),
        })
    }

    /// Asks the agent to end everything, kills after `grace`.
    pub fn shutdown(mut self, grace: Duration) -> String {
        match self.sandbox.take() {
            Some(sb) => match sb.shutdown(grace) {
                Ok(e) => describe(e),
                Err(e) => format!("stopped with an error: {e}"),
            },
            None => "already ended".into(),
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn describe(e: sbx_ns::Exit) -> String {
    match e {
        sbx_ns::Exit::Code(c) => format!("PID 1 exited with code {c}"),
        sbx_ns::Exit::Signal(s) => format!("PID 1 was killed by signal {s}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::config::{resolve_kits, Backend};

    #[test]
    fn config_binds_the_workspace_and_sets_limits() {
        let r = resolve_kits("shell", &[]).unwrap();
        let mut cfg = SandboxConfig {
            name: "shell-ws".into(),
            agent: "shell".into(),
            kits: vec![],
            workspace: Some("/srv/ws".into()),
            backend: Backend::Namespace,
            backend_reason: None,
            cpus: 2,
            memory_bytes: 1 << 30,
            created_unix: 0,
            command: vec![],
            env: vec![],
            agent_env: vec![],
            sentinels: vec![],
            install: vec![],
            startup: vec![],
            files: vec![],
            workspace_mode: Default::default(),
        };
        crate::sandbox::config::apply_kit(&mut cfg, &r.kit);
        let dir = SandboxDir {
            name: "shell-ws".into(),
            dir: "/d/sandboxes/shell-ws".into(),
        };
        let c = ns_config(&cfg, &dir, Path::new("/img/rootfs"), false);
        assert_eq!(c.hostname, "shell-ws");
        assert_eq!(c.state_dir, Path::new("/d/sandboxes/shell-ws/ns"));
        assert_eq!(c.upper_dir(), Path::new("/d/sandboxes/shell-ws/ns/upper"));
        assert_eq!(c.binds, [Bind::new("/srv/ws", "/srv/ws", false)]);
        assert_eq!(c.limits.memory_bytes, Some(1 << 30));
        assert_eq!(c.limits.cpus, Some(2.0));
        assert!(c.allow_setuid && !c.network);
        assert_eq!(agent_options(false).args, ["--on-main-exit", "stay"]);
        let with_net = ns_config(&cfg, &dir, Path::new("/img/rootfs"), true);
        assert!(with_net.network);
        assert!(with_net.binds.contains(&Bind::new(
            "/d/sandboxes/shell-ws/ca/ca.pem",
            "/etc/sbx/ca.pem",
            true
        )));
        let args = agent_options(true).args;
        assert!(args.windows(2).any(|w| w == ["--nameserver", "10.77.0.1"]));
    }
}
