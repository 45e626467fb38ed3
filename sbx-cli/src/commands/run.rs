//! `sbx run [flags] AGENT|SANDBOX [PATH] [-- AGENT_ARGS...]`: create if missing, start in the
//! background, attach the agent's terminal. The sandbox keeps running when the agent exits
//! or the user detaches.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::create::CreateFlags;
use crate::exit::ExitStatus;
use crate::sandbox::config::{self, SandboxConfig};
use crate::sandbox::lifecycle;
use crate::sandbox::state::{closest, Layout, SandboxDir, Status};
use crate::sandbox::supervisor;
use crate::sandbox::terminal::{self, AttachOptions, Attached};
use crate::sandbox::workspace;

const EXAMPLES: &str = "\
Examples:
  sbx run shell .                  # bash as `agent` in a sandbox for this folder
  sbx run copilot ~/code/app       # create copilot-app if needed, start it, attach Copilot
  sbx run shell-app                # back into an existing sandbox
  sbx run shell . -- -c 'make test'  # arguments after -- go to the agent's command
  sbx run shell . ../lib:ro        # ../lib mounted read-only at its own path

Detach with Ctrl-P Ctrl-Q: the sandbox keeps running (as it does when the agent exits).";

/// Arguments of `sbx run`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RunArgs {
    #[command(flatten)]
    pub flags: CreateFlags,
    /// An agent (shell, copilot, claude, codex, gemini) or an existing sandbox's name.
    #[arg(value_name = "AGENT|SANDBOX")]
    pub target: String,
    /// The workspace folder (when creating), then more folders (`PATH:ro` read-only).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Arguments for the agent's command.
    #[arg(last = true, value_name = "AGENT_ARGS")]
    pub agent_args: Vec<String>,
}

/// The sandbox `sbx run` means: an existing one by name, or the agent's (created if missing).
fn resolve(layout: &Layout, args: &RunArgs) -> anyhow::Result<(SandboxDir, SandboxConfig)> {
    let is_agent = sbx_kit::TEMPLATE_NAMES.contains(&args.target.as_str());
    let existing = config::validate_name(&args.target).is_ok()
        && layout.sandbox(&args.target).dir.is_dir()
        && args.flags.name.is_none();
    if existing && (!is_agent || args.paths.is_empty()) {
        let (dir, cfg) = lifecycle::find(layout, &args.target)?;
        if !args.paths.is_empty() {
            let (ws, _) = workspace::parse_paths(&args.paths)?;
            if ws != cfg.workspace {
                bail!(
                    "sandbox {} already exists with workspace {}: run it without PATH, or create another with --name",
                    dir.name,
                    cfg.workspace.as_ref().map_or("(none)".into(), |w| w.display().to_string())
                );
            }
        }
        return Ok((dir, cfg));
    }
    if !is_agent {
        let names = layout.names().unwrap_or_default();
        let mut msg = format!(
            "{:?} is neither an agent ({}) nor a sandbox",
            args.target,
            sbx_kit::TEMPLATE_NAMES.join(", ")
        );
        let mut candidates: Vec<String> = sbx_kit::TEMPLATE_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect();
        candidates.extend(names);
        if let Some(s) = closest(&args.target, &candidates) {
            msg.push_str(&format!(": did you mean {s:?}?"));
        }
        bail!(msg);
    }
    let (workspace, mounts) = workspace::parse_paths(&args.paths)?;
    let name = args
        .flags
        .name
        .clone()
        .unwrap_or_else(|| config::default_name(&args.target, workspace.as_deref()));
    let dir = layout.sandbox(&name);
    if config::validate_name(&name).is_ok() && dir.dir.is_dir() {
        let (dir, cfg) = lifecycle::find(layout, &name)?;
        if cfg.agent != args.target || cfg.workspace != workspace {
            bail!(
                "a sandbox named {name} already exists (agent {}, workspace {}): run it with `sbx run {name}`, or pick another name with --name",
                cfg.agent,
                cfg.workspace.as_ref().map_or("(none)".into(), |w| w.display().to_string())
            );
        }
        return Ok((dir, cfg));
    }
    let mut opts = args.flags.options();
    opts.mounts = mounts;
    lifecycle::create(layout, &args.target, workspace, &opts)
}

/// Run `sbx run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitStatus> {
    let layout = Layout::current()?;
    crate::policy_store::ensure_configured(&layout.data_dir)?;
    let (dir, cfg) = resolve(&layout, &args)?;
    let client = lifecycle::ensure_running(&layout, &dir, &cfg)?;
    let mut argv = cfg.command.clone();
    argv.extend(args.agent_args.iter().cloned());
    if argv.is_empty() {
        argv = vec!["bash".into(), "--login".into()];
    }
    let mut req = supervisor::request(&cfg, &argv, "agent", &cfg.workdir());
    for (k, v) in &cfg.agent_env {
        req = req.env(k, v);
    }
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let opts = AttachOptions {
        stdin: true,
        tty,
        detach_keys: true,
    };
    match terminal::attach(&client, req, opts) {
        Ok(Attached::Exited(st)) => {
            if tty {
                let _ = writeln!(
                    std::io::stderr(),
                    "sbx: the agent exited ({st}); {}",
                    lifecycle::back_in_hint(&dir.name)
                );
            }
            Ok(ExitStatus::Code(terminal::exit_code(st)))
        }
        Ok(Attached::Detached) => {
            let _ = writeln!(
                std::io::stderr(),
                "\r\nsbx: detached; {}",
                lifecycle::back_in_hint(&dir.name)
            );
            Ok(ExitStatus::Success)
        }
        Err(e) => Err(died_or(e, &dir)),
    }
}

/// When a command's connection drops because the sandbox died, say so with its logs.
pub fn died_or(e: anyhow::Error, dir: &SandboxDir) -> anyhow::Error {
    // The supervisor records the end a moment after the connection drops.
    for _ in 0..50 {
        if matches!(dir.status(), Status::Failed | Status::Stopped) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    match dir.status() {
        Status::Failed | Status::Stopped => {
            let how = dir
                .read_state()
                .and_then(|s| s.exit.or(s.error))
                .unwrap_or_else(|| "its supervisor is gone".into());
            anyhow::anyhow!(
                "sandbox {} stopped while the command ran: {how}{}\n  its state is kept; start it again with `sbx run {}` or remove it with `sbx rm {}`",
                dir.name,
                supervisor::log_excerpt(dir),
                dir.name,
                dir.name
            )
        }
        _ => e,
    }
}
