//! `sbx login`: first-run setup, the default network policy of every sandbox.

use std::io::{IsTerminal, Write};

use anyhow::bail;
use clap::Args;

use crate::exit::ExitStatus;
use crate::policy_store::{self, DefaultPolicy};

/// Arguments of `sbx login`.
#[derive(Debug, Args)]
#[command(after_help = "\
Private, loopback and cloud-metadata addresses are blocked under every policy unless a rule
names them. `sbx policy set-default` changes the preset later, `sbx policy ls` shows it.

Examples:
  sbx login                        # choose from a menu (on a terminal)
  sbx login --policy balanced      # non-interactive, e.g. in scripts
  sbx login --policy locked-down")]
pub struct LoginArgs {
    /// The default network policy; asked interactively when omitted on a terminal.
    #[arg(long, value_name = "POLICY", value_enum)]
    pub policy: Option<DefaultPolicy>,
}

/// Run `sbx login`.
pub fn run(args: LoginArgs) -> anyhow::Result<ExitStatus> {
    let data_dir = crate::paths::data_dir()?;
    let previous = policy_store::read_default_policy(&data_dir).ok().flatten();
    let choice = match args.policy {
        Some(p) => p,
        None if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            policy_store::prompt_default_policy(&mut input, &mut std::io::stderr().lock())?
        }
        None => bail!("not a terminal: choose with `sbx login --policy open|balanced|locked-down`"),
    };

    let _lock = policy_store::lock_for_edit(&data_dir)?;
    policy_store::write_default_policy(&data_dir, choice)?;
    // The login choice is the default; a preset set later with `sbx policy set-default`
    // would hide it, so a new login replaces that override.
    let mut global = policy_store::read_global(&data_dir)?;
    let replaced = global.preset.take();
    // Always (re)written: running sandboxes watch this file's mtime, not config.json's.
    policy_store::write_global(&data_dir, &global)?;

    let mut out = std::io::stdout().lock();
    match previous {
        Some(p) if p == choice => writeln!(out, "default network policy: {choice} (unchanged)")?,
        _ => writeln!(out, "default network policy: {choice}")?,
    }
    writeln!(out, "  {}", choice.describe())?;
    if let Some(old) = replaced {
        if old != choice.preset() {
            writeln!(
                out,
                "  (replaces the preset {old} set with `sbx policy set-default`)"
            )?;
        }
    }
    Ok(ExitStatus::Success)
}
