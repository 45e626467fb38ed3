//! `sbx exec [-i] [-t] [-e K=V]... [-w DIR] [-u USER] SANDBOX CMD [ARG...]`.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::exit::ExitStatus;
use crate::sandbox::lifecycle;
use crate::sandbox::state::Layout;
use crate::sandbox::supervisor;
use crate::sandbox::terminal::{self, AttachOptions, Attached};

const EXAMPLES: &str = "\
Examples:
  sbx exec -it shell-app bash             # a second shell in the same sandbox
  sbx exec shell-app git status           # exit code passes through
  sbx exec -u root shell-app apt-get install -y jq
  echo hi | sbx exec -i -e GREETING=x shell-app sh -c 'cat; echo $GREETING'

A stopped sandbox is started first. Commands run as `agent` in the workspace folder unless
-u / -w say otherwise.";

/// Arguments of `sbx exec`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ExecArgs {
    /// Keep stdin open and forward it.
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Run on a terminal (PTY), with raw mode and resizes when ours is one.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Set an environment variable (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside (default: the workspace folder).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// User inside (default: agent).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// The sandbox.
    #[arg(value_name = "SANDBOX")]
    pub sandbox: String,
    /// The command and its arguments.
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub cmd: Vec<String>,
}

/// Run `sbx exec`.
pub fn run(args: ExecArgs) -> anyhow::Result<ExitStatus> {
    let layout = Layout::current()?;
    crate::policy_store::ensure_configured(&layout.data_dir)?;
    let (dir, cfg) = lifecycle::find(&layout, &args.sandbox)?;
    let mut extra = Vec::new();
    for kv in &args.env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => extra.push((k.to_owned(), v.to_owned())),
            _ => bail!("-e {kv:?}: use KEY=VALUE"),
        }
    }
    let client = lifecycle::ensure_running(&layout, &dir, &cfg)?;
    let cwd = args.workdir.clone().unwrap_or_else(|| cfg.workdir());
    let user = args.user.as_deref().unwrap_or("agent");
    let mut req = supervisor::request(&cfg, &args.cmd, user, &cwd);
    for (k, v) in extra {
        req = req.env(k, v);
    }
    let opts = AttachOptions {
        stdin: args.interactive,
        tty: args.tty,
        detach_keys: false,
    };
    match terminal::attach(&client, req, opts) {
        Ok(Attached::Exited(st)) => Ok(ExitStatus::Code(terminal::exit_code(st))),
        Ok(Attached::Detached) => Ok(ExitStatus::Success),
        Err(e) => Err(super::run::died_or(e, &dir)),
    }
}
