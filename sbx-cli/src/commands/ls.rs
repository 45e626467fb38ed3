//! `sbx ls [--json] [-q]`.

use std::io::Write;

use clap::Args;

use crate::exit::ExitStatus;
use crate::sandbox::lifecycle;
use crate::sandbox::state::{now_unix, Layout, Status};

const EXAMPLES: &str = "\
Examples:
  sbx ls                 # NAME AGENT BACKEND STATUS WORKSPACE CREATED
  sbx ls -q              # names only
  sbx ls --json | jq '.[] | select(.status == \"running\") | .name'

STATUS is running, starting, stopping, stopped, failed (ended on its own; `sbx run` starts it
again) or broken (created only in part; `sbx rm` removes it).";

/// Arguments of `sbx ls`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct LsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print names only.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// One row.
#[derive(Debug, serde::Serialize)]
struct Row {
    name: String,
    agent: Option<String>,
    backend: Option<String>,
    status: &'static str,
    workspace: Option<String>,
    created_unix: Option<u64>,
    cpus: Option<u32>,
    memory_bytes: Option<u64>,
    supervisor_pid: Option<i32>,
    error: Option<String>,
}

fn ago(t: u64) -> String {
    let s = now_unix().saturating_sub(t);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// Run `sbx ls`.
pub fn run(args: LsArgs) -> anyhow::Result<ExitStatus> {
    let layout = Layout::current()?;
    lifecycle::sweep(&layout);
    let mut rows = Vec::new();
    for name in layout.names()? {
        let dir = layout.sandbox(&name);
        let status = dir.status();
        let cfg = dir.read_config().ok();
        let running = matches!(
            status,
            Status::Running | Status::Starting | Status::Stopping
        );
        let state = dir.read_state();
        rows.push(Row {
            agent: cfg.as_ref().map(|c| c.agent.clone()),
            backend: cfg.as_ref().map(|c| c.backend.as_str().to_owned()),
            status: status.as_str(),
            workspace: cfg.as_ref().and_then(crate::sandbox::workspace::describe),
            created_unix: cfg.as_ref().map(|c| c.created_unix),
            cpus: cfg.as_ref().map(|c| c.cpus),
            memory_bytes: cfg.as_ref().map(|c| c.memory_bytes),
            supervisor_pid: if running { dir.supervisor_pid() } else { None },
            error: if status == Status::Failed {
                state.and_then(|s| s.error)
            } else {
                None
            },
            name,
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitStatus::Success);
    }
    if args.quiet {
        for r in &rows {
            writeln!(out, "{}", r.name)?;
        }
        return Ok(ExitStatus::Success);
    }
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    writeln!(
        out,
        "{:<w$}  {:<8}  {:<9}  {:<8}  {:<30}  CREATED",
        "NAME", "AGENT", "BACKEND", "STATUS", "WORKSPACE"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<w$}  {:<8}  {:<9}  {:<8}  {:<30}  {}",
            r.name,
            r.agent.as_deref().unwrap_or("-"),
            r.backend.as_deref().unwrap_or("-"),
            r.status,
            r.workspace.as_deref().unwrap_or("-"),
            r.created_unix.map_or("-".into(), ago),
        )?;
    }
    Ok(ExitStatus::Success)
}
