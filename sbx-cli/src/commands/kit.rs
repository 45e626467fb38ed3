//! `sbx kit validate|inspect|schema`: check a kit and show what it would do.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use sbx_kit::{Kind, Kit, ResolvedKit};

use crate::exit::ExitStatus;

/// Arguments of `sbx kit`.
#[derive(Debug, Args)]
pub struct KitArgs {
    /// What to do with the kit.
    #[command(subcommand)]
    pub command: KitCommand,
}

/// The `sbx kit` subcommands.
#[derive(Debug, Subcommand)]
pub enum KitCommand {
    /// Check a kit's spec.yaml and report every problem with its line, column and field.
    Validate {
        /// The kit folder (or its spec.yaml).
        dir: PathBuf,
    },
    /// Show what a kit would do: command, environment, domains, services, credentials, commands
    /// and files, each with the kit it came from.
    Inspect {
        /// The kit folder (or its spec.yaml), or `template:NAME` for a built-in agent.
        dir: String,
        /// Apply the kit (a mixin) to this built-in agent: shell, copilot, claude, codex, gemini.
        #[arg(long, value_name = "AGENT")]
        agent: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of spec.yaml, for editors.
    Schema,
}

/// Run `sbx kit ...`.
pub fn run(args: KitArgs) -> anyhow::Result<ExitStatus> {
    match args.command {
        KitCommand::Validate { dir } => validate(dir),
        KitCommand::Inspect { dir, agent, json } => inspect(&dir, agent.as_deref(), json),
        KitCommand::Schema => {
            std::io::stdout()
                .lock()
                .write_all(sbx_kit::json_schema_string().as_bytes())?;
            Ok(ExitStatus::Success)
        }
    }
}

/// Reads a kit; on validation errors prints every diagnostic (with its source line) to stderr
/// and returns the error for the one-line summary.
fn load(dir: &std::path::Path) -> anyhow::Result<Kit> {
    Kit::from_dir(dir).map_err(|e| {
        let mut err = std::io::stderr().lock();
        for d in e.diagnostics() {
            let _ = writeln!(err, "{}\n", d.render());
        }
        anyhow::Error::new(e)
    })
}

fn validate(dir: PathBuf) -> anyhow::Result<ExitStatus> {
    let kit = load(&dir)?;
    let s = kit.spec();
    let count = |n: usize, one: &str, many: &str| match n {
        0 => None,
        1 => Some(format!("1 {one}")),
        n => Some(format!("{n} {many}")),
    };
    let parts: Vec<String> = [
        count(
            s.network.allowed_domains.len(),
            "allowed domain",
            "allowed domains",
        ),
        count(
            s.network.denied_domains.len(),
            "denied domain",
            "denied domains",
        ),
        count(
            s.network.bypass_domains.len(),
            "bypass domain",
            "bypass domains",
        ),
        count(
            s.network.service_domains.len(),
            "service domain",
            "service domains",
        ),
        count(s.credentials.len(), "credential", "credentials"),
        count(
            s.environment.variables.len() + s.agent.as_ref().map_or(0, |a| a.env.len()),
            "variable",
            "variables",
        ),
        count(
            s.commands.install.len(),
            "install command",
            "install commands",
        ),
        count(
            s.commands.startup.len(),
            "startup command",
            "startup commands",
        ),
        count(s.files.len(), "file", "files"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let what = if parts.is_empty() {
        "adds nothing".to_owned()
    } else {
        parts.join(", ")
    };
    writeln!(
        std::io::stdout().lock(),
        "{}: valid {} `{}` ({what})",
        kit.file(),
        kit.kind().as_str(),
        kit.name()
    )?;
    Ok(ExitStatus::Success)
}

fn inspect(dir: &str, agent: Option<&str>, json: bool) -> anyhow::Result<ExitStatus> {
    let kit = match dir.strip_prefix("template:") {
        Some(name) => sbx_kit::template(name)?,
        None => load(std::path::Path::new(dir))?,
    };
    let resolved = match (kit.kind(), agent) {
        (Kind::Agent, None) => sbx_kit::merge(&kit, &[])?,
        (Kind::Agent, Some(_)) => bail!(
            "{} is an agent kit; --agent applies to mixins",
            kit.origin()
        ),
        (Kind::Mixin, None) => sbx_kit::merge_mixins(std::slice::from_ref(&kit))?,
        (Kind::Mixin, Some(a)) => {
            let base = sbx_kit::template(a)?;
            sbx_kit::merge(&base, std::slice::from_ref(&kit))
                .with_context(|| format!("cannot apply {} to {}", kit.origin(), base.origin()))?
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &resolved)?;
        writeln!(out)?;
    } else {
        out.write_all(human(&resolved).as_bytes())?;
    }
    Ok(ExitStatus::Success)
}

/// Rows with aligned columns, indented by two spaces.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::from(" ");
        for (c, cell) in r.iter().enumerate() {
            line.push(' ');
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c] - cell.chars().count() + 1;
                line.push_str(&" ".repeat(pad));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

fn section(out: &mut String, title: &str, rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        out.push_str(&format!("{title}: none\n"));
    } else {
        out.push_str(&format!("{title}:\n"));
        out.push_str(&table(&rows));
    }
}

/// One line of a possibly multi-line value, shortened for a table cell.
fn cell(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    let mut c: String = first.chars().take(60).collect();
    if c.len() < s.len() {
        c.push('…');
    }
    c.chars()
        .map(|ch| if ch.is_control() { '?' } else { ch })
        .collect()
}

fn human(r: &ResolvedKit) -> String {
    let mut out = String::new();
    let kits: Vec<String> = r.kits.iter().map(ToString::to_string).collect();
    out.push_str(&format!("kits:    {}\n", kits.join(" + ")));
    match &r.agent {
        Some(a) => out.push_str(&format!("agent:   {a}\n")),
        None => out.push_str("agent:   none (a mixin alone; use --agent to apply it)\n"),
    }
    if r.command.is_empty() {
        out.push_str("command: none\n");
    } else {
        let argv = sbx_kit::CommandLine::Argv(r.command.clone());
        out.push_str(&format!("command: {argv}\n"));
    }
    let env_rows = |vars: &[sbx_kit::EnvVar]| -> Vec<Vec<String>> {
        vars.iter()
            .map(|v| {
                vec![
                    format!("{}={}", v.name, cell(&v.value)),
                    v.origin.to_string(),
                ]
            })
            .collect()
    };
    section(&mut out, "agent env", env_rows(&r.agent_env));
    section(&mut out, "environment", env_rows(&r.environment));
    section(
        &mut out,
        "network",
        r.rules
            .iter()
            .map(|x| {
                vec![
                    x.action.as_str().to_owned(),
                    x.domain.to_string(),
                    x.origin.to_string(),
                ]
            })
            .collect(),
    );
    section(
        &mut out,
        "services",
        r.services
            .iter()
            .map(|b| {
                vec![
                    b.domain.to_string(),
                    b.service.clone(),
                    b.origin.to_string(),
                ]
            })
            .collect(),
    );
    section(
        &mut out,
        "credentials",
        r.credentials
            .iter()
            .map(|c| {
                vec![
                    c.service.clone(),
                    format!("sentinel in {}", c.env),
                    c.origin.to_string(),
                ]
            })
            .collect(),
    );
    for (title, cmds) in [("install", &r.install), ("startup", &r.startup)] {
        section(
            &mut out,
            title,
            cmds.iter()
                .map(|c| {
                    let mut user = c.spec.user.as_str().to_owned();
                    if c.spec.background {
                        user.push_str(" (background)");
                    }
                    vec![
                        user,
                        cell(&c.spec.command.to_string()),
                        c.origin.to_string(),
                    ]
                })
                .collect(),
        );
    }
    section(
        &mut out,
        "files",
        r.files
            .iter()
            .map(|f| {
                vec![
                    f.spec.path.clone(),
                    f.spec.mode.clone(),
                    format!("{} bytes", f.spec.content.len()),
                    f.origin.to_string(),
                ]
            })
            .collect(),
    );
    out
}
