//! `sbx create [--name N] [--kit DIR]... [--cpus N] [-m SIZE] [--isolation ...] AGENT [PATH]`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::exit::ExitStatus;
use crate::sandbox::config::Backend;
use crate::sandbox::lifecycle::{self, CreateOptions};
use crate::sandbox::state::Layout;

const EXAMPLES: &str = "\
Examples:
  sbx create shell .                      # a bash sandbox for this folder, named shell-<folder>
  sbx create --name api copilot ~/code/api
  sbx create --kit ./kits/python --cpus 2 -m 4g claude .
  sbx create --isolation namespace shell  # no workspace: works in /home/agent/workspace
  sbx create shell . ~/data:ro            # plus ~/data, read-only, at the same path
  sbx create --clone copilot .            # a private clone; `git fetch sandbox-copilot-<folder>`";

/// Flags that shape a new sandbox (shared by `create` and `run`).
#[derive(Debug, Clone, Args)]
pub struct CreateFlags {
    /// The sandbox's name (default: AGENT-<folder name of PATH>). Letters, digits, `-`, `.`, `+`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Apply a kit folder (a spec.yaml mixin); repeatable, applied in order.
    #[arg(long = "kit", value_name = "DIR")]
    pub kits: Vec<PathBuf>,
    /// CPUs (default: host CPUs minus one, at least 1).
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Memory, e.g. 512m or 4g (default: half the host's memory, at most 8g).
    #[arg(short = 'm', long = "memory", value_name = "SIZE")]
    pub memory: Option<String>,
    /// Force the isolation backend (default: microvm where KVM is hardware-assisted, else
    /// namespace).
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub isolation: Option<Backend>,
    /// Clone mode: the agent works on a private clone of the PATH repository on the
    /// sandbox's disk; the host gets the git remote `sandbox-<name>` (see docs/workspaces.md).
    #[arg(long)]
    pub clone: bool,
}

impl CreateFlags {
    /// As lifecycle options.
    pub fn options(&self) -> CreateOptions {
        CreateOptions {
            name: self.name.clone(),
            kits: self.kits.clone(),
            cpus: self.cpus,
            memory: self.memory.clone(),
            isolation: self.isolation,
            clone: self.clone,
            ..CreateOptions::default()
        }
    }
}

/// Arguments of `sbx create`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct CreateArgs {
    #[command(flatten)]
    pub flags: CreateFlags,
    /// The agent: shell, copilot, claude, codex or gemini.
    #[arg(value_name = "AGENT")]
    pub agent: String,
    /// The workspace folder, mounted read-write at the same path inside; more folders after
    /// it are mounted at their paths too, read-only with a `:ro` suffix.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Run `sbx create`.
pub fn run(args: CreateArgs) -> anyhow::Result<ExitStatus> {
    let layout = Layout::current()?;
    crate::policy_store::ensure_configured(&layout.data_dir)?;
    let (workspace, mounts) = crate::sandbox::workspace::parse_paths(&args.paths)?;
    let mut opts = args.flags.options();
    opts.mounts = mounts;
    let (dir, cfg) = lifecycle::create(&layout, &args.agent, workspace, &opts)?;
    lifecycle::ensure_images(&layout, cfg.backend)?;
    writeln!(std::io::stdout(), "{}", dir.name)?;
    let _ = writeln!(
        std::io::stderr(),
        "sbx: created {} ({}, {} CPUs, {}); start it with `sbx run {}`",
        dir.name,
        cfg.backend.as_str(),
        cfg.cpus,
        crate::sandbox::config::human_bytes(cfg.memory_bytes),
        dir.name
    );
    Ok(ExitStatus::Success)
}
