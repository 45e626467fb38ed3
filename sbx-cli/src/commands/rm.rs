//! `sbx rm [-f] [--all] SANDBOX...`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use clap::Args;

use crate::exit::ExitStatus;
use crate::sandbox::lifecycle;
use crate::sandbox::state::Layout;

const EXAMPLES: &str = "\
Examples:
  sbx rm shell-app          # asks first on a terminal
  sbx rm -f shell-app other
  sbx rm -f --all

Stops the sandbox first, then deletes its folder: its writable layer or disk, logs, sockets
and settings. The workspace folder on the host is never touched.";

/// Arguments of `sbx rm`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RmArgs {
    /// Do not ask.
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Remove every sandbox.
    #[arg(long, conflicts_with = "sandboxes")]
    pub all: bool,
    /// The sandboxes to remove.
    #[arg(value_name = "SANDBOX", required_unless_present = "all")]
    pub sandboxes: Vec<String>,
}

/// Run `sbx rm`.
pub fn run(args: RmArgs) -> anyhow::Result<ExitStatus> {
    let layout = Layout::current()?;
    lifecycle::sweep(&layout);
    let names = if args.all {
        layout.names()?
    } else {
        args.sandboxes.clone()
    };
    for name in &names {
        // A half-created folder has no config; it is still removable.
        if crate::sandbox::config::validate_name(name).is_err()
            || !layout.sandbox(name).dir.is_dir()
        {
            return Err(lifecycle::not_found(&layout, name));
        }
    }
    if names.is_empty() {
        return Ok(ExitStatus::Success);
    }
    for name in &names {
        if let Ok(cfg) = layout.sandbox(name).read_config() {
            crate::sandbox::clone::warn_before_rm(&layout, &cfg);
        }
    }
    if !args.force && std::io::stdin().is_terminal() {
        let mut err = std::io::stderr().lock();
        write!(
            err,
            "Remove {} and everything in {} (files written inside, logs)? [y/N] ",
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" }
        )?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("nothing removed");
        }
    }
    let mut status = ExitStatus::Success;
    for name in &names {
        let cfg = layout.sandbox(name).read_config().ok();
        match lifecycle::remove(&layout.sandbox(name)) {
            Ok(()) => {
                if let Some(e) = cfg.and_then(|c| crate::sandbox::clone::remove_remote(&c).err()) {
                    crate::exit::print_error(&e);
                }
                writeln!(std::io::stdout(), "{name}")?
            }
            Err(e) => {
                crate::exit::print_error(&e);
                status = ExitStatus::Failure;
            }
        }
    }
    Ok(status)
}
