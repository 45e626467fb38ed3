//! `sbx policy`: the default preset, global and per-sandbox allow/deny rules, and (in
//! `policy_log`) the request log.
//!
//! Rules are stored by [`crate::policy_store`]; a running sandbox's supervisor re-reads them
//! when the files change, so an edit applies at the next connection.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use sbx_net::{Action, Host, Pattern, Preset, Resource, Rule, BALANCED_ALLOWLIST};

use crate::exit::ExitStatus;
use crate::policy_store as store;

/// Arguments of `sbx policy`.
#[derive(Debug, Args)]
#[command(after_help = "\
Rules: deny beats allow, wherever each comes from (preset, global, the sandbox's agent
template and kits, the sandbox). `example.com` does not match subdomains; `*.example.com`
matches subdomains but not example.com; `**` matches everything; a port limits a rule to it.

Examples:
  sbx policy ls                                      # preset, global and sandbox rules
  sbx policy allow network my-sandbox pypi.org,files.pythonhosted.org
  sbx policy deny network -g '*.tracker.example'
  sbx policy rm network my-sandbox --resource pypi.org
  sbx policy set-default deny-all
  sbx policy log --blocked")]
pub struct PolicyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The `sbx policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Change the preset every sandbox starts from (overrides the `sbx login` choice).
    #[command(after_help = "\
Presets:
  allow-all  every public host is reachable unless a rule denies it
  balanced   blocked unless allowed, with AI APIs, package registries and code hosts allowed
  deny-all   nothing is reachable unless a rule allows it

Running sandboxes switch at their next connection.

Examples:
  sbx policy set-default deny-all
  sbx policy set-default balanced")]
    SetDefault(SetDefaultArgs),
    /// Allow destinations, for all sandboxes (-g) or one.
    #[command(
        override_usage = "sbx policy allow network [-g | SANDBOX] RES[,RES...]",
        after_help = RULE_HELP_ALLOW
    )]
    Allow(RuleArgs),
    /// Deny destinations, for all sandboxes (-g) or one. Deny beats every allow.
    #[command(
        override_usage = "sbx policy deny network [-g | SANDBOX] RES[,RES...]",
        after_help = RULE_HELP_DENY
    )]
    Deny(RuleArgs),
    /// Remove a rule added with `allow` or `deny`.
    #[command(
        override_usage = "sbx policy rm network [-g | SANDBOX] --resource RES",
        after_help = "\
Only global and sandbox rules can be removed. Rules from the preset, an agent template or a kit
stay; deny them instead.

Examples:
  sbx policy rm network -g --resource '*.tracker.example'
  sbx policy rm network my-sandbox --resource pypi.org,files.pythonhosted.org"
    )]
    Rm(RmArgs),
    /// List the rules with their origin, and the preset in force.
    #[command(after_help = "\
ORIGIN is where a rule comes from: `preset:NAME` (built into the preset), `global` (-g rules),
`sandbox:NAME`, `template:AGENT` (the sandbox's agent) or `kit:NAME` (a kit it was created with).
Without SANDBOX, the preset, global and every sandbox's own rules are listed.

Examples:
  sbx policy ls
  sbx policy ls my-sandbox
  sbx policy ls my-sandbox --json")]
    Ls(LsArgs),
    /// Show the request log: what sandboxes reached or tried to reach.
    #[command(after_help = crate::commands::policy_log::HELP)]
    Log(crate::commands::policy_log::LogArgs),
}

const RULE_HELP_ALLOW: &str = "\
RES forms: example.com (exactly that name), *.example.com (subdomains only), example.com:443
(one port), ** (everything), 192.0.2.7:8080 (an address; a bare IP allows every port),
10.0.0.0/8 or 10.0.0.0/8:5432 (a range). Private and local addresses are reachable only
through a rule that names the address or its range.

Examples:
  sbx policy allow network my-sandbox pypi.org,files.pythonhosted.org
  sbx policy allow network -g '*.example.com'
  sbx policy allow network my-sandbox 10.0.0.5:5432";

const RULE_HELP_DENY: &str = "\
RES forms: example.com (exactly that name), *.example.com (subdomains only), example.com:443
(one port), ** (everything), 192.0.2.7:8080 (an address), 10.0.0.0/8 (a range).

Examples:
  sbx policy deny network -g '*.tracker.example'
  sbx policy deny network my-sandbox github.com,api.github.com";

/// A preset as `set-default` takes it (the `sbx login` names work too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// Every public host is reachable unless denied.
    #[value(alias = "open")]
    AllowAll,
    /// Deny by default plus AI APIs, package registries and code hosts.
    Balanced,
    /// Nothing is reachable unless allowed.
    #[value(alias = "locked-down")]
    DenyAll,
}

impl PresetArg {
    fn preset(self) -> Preset {
        match self {
            PresetArg::AllowAll => Preset::AllowAll,
            PresetArg::Balanced => Preset::Balanced,
            PresetArg::DenyAll => Preset::DenyAll,
        }
    }
}

/// What a rule applies to. Only `network` exists today.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuleType {
    /// Outbound connections, by host name, address and port.
    Network,
}

/// Arguments of `sbx policy set-default`.
#[derive(Debug, Args)]
pub struct SetDefaultArgs {
    /// The preset.
    #[arg(value_enum, value_name = "PRESET")]
    pub preset: PresetArg,
}

/// Arguments of `sbx policy allow|deny`.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// The rule type.
    #[arg(value_enum, value_name = "TYPE")]
    pub kind: RuleType,
    /// For all sandboxes.
    #[arg(short = 'g', long = "global")]
    pub global: bool,
    /// `SANDBOX RES[,RES...]`, or `RES[,RES...]` with -g.
    #[arg(value_name = "ARGS", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
}

/// Arguments of `sbx policy rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The rule type.
    #[arg(value_enum, value_name = "TYPE")]
    pub kind: RuleType,
    /// A global rule.
    #[arg(short = 'g', long = "global")]
    pub global: bool,
    /// The sandbox (unless -g).
    #[arg(value_name = "SANDBOX")]
    pub sandbox: Option<String>,
    /// The rule's resource, exactly as listed by `sbx policy ls` (several: RES,RES).
    #[arg(long = "resource", value_name = "RES", required = true)]
    pub resource: String,
}

/// Arguments of `sbx policy ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Show what applies to this sandbox, including its agent template's and kits' rules.
    #[arg(value_name = "SANDBOX")]
    pub sandbox: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `sbx policy ...`.
pub fn run(args: PolicyArgs) -> anyhow::Result<ExitStatus> {
    let data_dir = crate::paths::data_dir()?;
    let result = match args.command {
        PolicyCommand::SetDefault(a) => set_default(&data_dir, a.preset.preset()),
        PolicyCommand::Allow(a) => add_rules(&data_dir, Action::Allow, a),
        PolicyCommand::Deny(a) => add_rules(&data_dir, Action::Deny, a),
        PolicyCommand::Rm(a) => rm(&data_dir, a),
        PolicyCommand::Ls(a) => ls(&data_dir, a),
        PolicyCommand::Log(a) => crate::commands::policy_log::run(&data_dir, a),
    };
    match result {
        // `sbx policy ls | head`: the reader is gone, which is fine.
        Err(e) if crate::commands::policy_log::is_broken_pipe(&e) => Ok(ExitStatus::Success),
        other => other,
    }
}

fn set_default(data_dir: &Path, preset: Preset) -> anyhow::Result<ExitStatus> {
    let _lock = store::lock_for_edit(data_dir)?;
    let mut global = store::read_global(data_dir)?;
    let (before, _) = store::effective_preset(data_dir)?;
    global.preset = Some(preset);
    store::write_global(data_dir, &global)?;
    let mut out = std::io::stdout().lock();
    if before == preset {
        writeln!(out, "default preset: {preset} (unchanged)")?;
    } else {
        writeln!(out, "default preset: {preset} (was {before})")?;
    }
    writeln!(out, "  {}", preset_summary(preset))?;
    Ok(ExitStatus::Success)
}

fn preset_summary(preset: Preset) -> &'static str {
    match preset {
        Preset::AllowAll => "every public host is reachable unless a rule denies it",
        Preset::Balanced => {
            "blocked unless allowed; AI APIs, package registries and code hosts are allowed"
        }
        Preset::DenyAll => "nothing is reachable unless a rule allows it",
    }
}

/// Where `allow|deny|rm` act.
enum Target {
    Global,
    Sandbox(String),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Global => "all sandboxes".into(),
            Target::Sandbox(s) => format!("sandbox {s}"),
        }
    }

    fn origin(&self) -> String {
        match self {
            Target::Global => "global".into(),
            Target::Sandbox(s) => format!("sandbox:{s}"),
        }
    }
}

fn target(data_dir: &Path, global: bool, sandbox: Option<&str>) -> anyhow::Result<Target> {
    match (global, sandbox) {
        (true, None) => Ok(Target::Global),
        (true, Some(_)) => bail!("give either -g or a SANDBOX, not both"),
        (false, Some(name)) => {
            store::require_sandbox(data_dir, name)?;
            Ok(Target::Sandbox(name.to_owned()))
        }
        (false, None) => bail!("say where the rule applies: -g for all sandboxes, or a SANDBOX"),
    }
}

/// `RES[,RES...]` parsed with sbx-net's parser; the first bad one fails with the valid forms.
fn parse_list(list: &str) -> anyhow::Result<Vec<Resource>> {
    let mut out: Vec<Resource> = Vec::new();
    for piece in list.split(',') {
        if piece.trim().is_empty() {
            bail!(
                "empty resource in {list:?}; separate resources with commas, without spaces\nvalid forms: {}",
                store::RESOURCE_FORMS
            );
        }
        let r = store::parse_resource(piece)?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

fn rules_of(data_dir: &Path, target: &Target) -> anyhow::Result<Vec<Rule>> {
    Ok(match target {
        Target::Global => store::read_global(data_dir)?.rules,
        Target::Sandbox(s) => store::read_sandbox(data_dir, s)?.rules,
    })
}

fn save_rules(data_dir: &Path, target: &Target, rules: Vec<Rule>) -> anyhow::Result<()> {
    match target {
        Target::Global => {
            let mut g = store::read_global(data_dir)?;
            g.rules = rules;
            store::write_global(data_dir, &g)
        }
        Target::Sandbox(s) => store::write_sandbox(data_dir, s, &store::SandboxPolicy { rules }),
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Bypass => "bypass",
    }
}

fn add_rules(data_dir: &Path, action: Action, a: RuleArgs) -> anyhow::Result<ExitStatus> {
    let RuleType::Network = a.kind;
    let (sandbox, list) = match (a.global, a.args.as_slice()) {
        (_, [sandbox, list]) => (Some(sandbox.as_str()), list.as_str()),
        (true, [list]) => (None, list.as_str()),
        (false, [_]) => {
            bail!("say where the rule applies: `-g RES` for all sandboxes, or `SANDBOX RES`")
        }
        _ => bail!("expected [-g | SANDBOX] RES[,RES...]"),
    };
    let resources = parse_list(list)?;
    let target = target(data_dir, a.global, sandbox)?;
    store::ensure_configured(data_dir)?;

    let _lock = store::lock_for_edit(data_dir)?;
    let mut rules = rules_of(data_dir, &target)?;
    let mut lines = Vec::new();
    let verb = if action == Action::Deny {
        "denied"
    } else {
        "allowed"
    };
    for res in &resources {
        if rules
            .iter()
            .any(|r| r.action == action && &r.resource == res)
        {
            lines.push(format!("{res}: already {verb} for {}", target.describe()));
            continue;
        }
        // The opposite rule on the same resource would make this one moot (deny wins) or
        // contradict it: replace it.
        let before = rules.len();
        rules.retain(|r| &r.resource != res);
        let replaced = before != rules.len();
        rules.push(Rule {
            action,
            resource: res.clone(),
        });
        lines.push(if replaced {
            format!(
                "{verb} {res} for {} (replaces the {} rule)",
                target.describe(),
                if action == Action::Deny {
                    "allow"
                } else {
                    "deny"
                }
            )
        } else {
            format!("{verb} {res} for {}", target.describe())
        });
    }
    save_rules(data_dir, &target, rules)?;
    drop(_lock);

    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    if action == Action::Allow {
        for note in still_denied(data_dir, &target, &resources) {
            let _ = writeln!(std::io::stderr().lock(), "sbx: note: {note}");
        }
    }
    Ok(ExitStatus::Success)
}

/// For allowed names and addresses that a deny rule elsewhere still blocks (deny wins), a
/// note naming that rule.
fn still_denied(data_dir: &Path, target: &Target, resources: &[Resource]) -> Vec<String> {
    let (sandbox, kit_rules) = match target {
        Target::Global => (None, Vec::new()),
        Target::Sandbox(s) => (
            Some(s.as_str()),
            store::sandbox_kit_rules(data_dir, s).unwrap_or_default(),
        ),
    };
    let Ok(policy) = store::effective_policy(data_dir, sandbox, &kit_rules) else {
        return Vec::new();
    };
    // A name no sandbox uses, for the global view.
    let eval_as = sandbox.unwrap_or(".global");
    let mut notes = Vec::new();
    for res in resources {
        let host = match res.pattern() {
            Pattern::Exact(name) => Host::parse(name).ok(),
            Pattern::Ip(ip) => Some(Host::Ip(*ip)),
            _ => None,
        };
        let Some(host) = host else { continue };
        let port = res.port().unwrap_or(443);
        let d = policy.evaluate(eval_as, &host, port);
        if !d.is_allowed() {
            if let Some(rule) = d.rule {
                notes.push(format!(
                    "{res} is still blocked by `{rule}` (deny beats allow)"
                ));
            }
        }
    }
    notes
}

fn rm(data_dir: &Path, a: RmArgs) -> anyhow::Result<ExitStatus> {
    let RuleType::Network = a.kind;
    let resources = parse_list(&a.resource)?;
    let target = target(data_dir, a.global, a.sandbox.as_deref())?;
    let _lock = store::lock_for_edit(data_dir)?;
    let mut rules = rules_of(data_dir, &target)?;
    let missing: Vec<&Resource> = resources
        .iter()
        .filter(|res| !rules.iter().any(|r| &r.resource == *res))
        .collect();
    if let Some(res) = missing.first() {
        return Err(not_found(data_dir, &target, res, &rules));
    }
    let mut removed = Vec::new();
    for res in &resources {
        for r in rules.iter().filter(|r| &r.resource == res) {
            removed.push(format!(
                "removed {} {} for {}",
                action_name(r.action),
                r.resource,
                target.describe()
            ));
        }
        rules.retain(|r| &r.resource != res);
    }
    save_rules(data_dir, &target, rules)?;
    drop(_lock);
    let mut out = std::io::stdout().lock();
    for l in removed {
        writeln!(out, "{l}")?;
    }
    Ok(ExitStatus::Success)
}

fn not_found(data_dir: &Path, target: &Target, res: &Resource, rules: &[Rule]) -> anyhow::Error {
    let mut msg = format!("no rule for {res} in {}", target.origin());
    // Rules that cannot be removed, said plainly.
    let mut elsewhere: Vec<String> = Vec::new();
    if let Target::Sandbox(s) = target {
        if let Ok(kit) = store::sandbox_kit_rules(data_dir, s) {
            for r in kit {
                if store::kit_rule(&r).is_ok_and(|k| &k.resource == res) {
                    elsewhere.push(r.origin.to_string());
                }
            }
        }
    }
    if let Ok((preset, _)) = store::effective_preset(data_dir) {
        if preset == Preset::Balanced
            && BALANCED_ALLOWLIST
                .iter()
                .any(|b| Resource::parse(b).is_ok_and(|b| &b == res))
        {
            elsewhere.push(format!("preset:{preset}"));
        }
    }
    if !elsewhere.is_empty() {
        let deny_target = match target {
            Target::Global => "-g".to_string(),
            Target::Sandbox(s) => s.clone(),
        };
        msg.push_str(&format!(
            "\nit comes from {}, which cannot be removed; block it with `sbx policy deny network {deny_target} {res}`",
            elsewhere.join(", ")
        ));
    }
    if rules.is_empty() {
        msg.push_str(&format!("\n{} has no rules", target.origin()));
    } else {
        msg.push_str(&format!("\nrules in {}:", target.origin()));
        for r in rules {
            msg.push_str(&format!("\n  {} {}", action_name(r.action), r.resource));
        }
    }
    anyhow!(msg)
}

/// One listed rule.
struct Listed {
    origin: String,
    action: &'static str,
    resource: String,
}

fn ls(data_dir: &Path, a: LsArgs) -> anyhow::Result<ExitStatus> {
    if let Some(s) = &a.sandbox {
        store::require_sandbox(data_dir, s)?;
    }
    store::ensure_configured(data_dir)?;
    let (preset, source) = store::effective_preset(data_dir)?;
    let mut rows: Vec<Listed> = Vec::new();
    let push = |rows: &mut Vec<Listed>, origin: &str, rule: &Rule| {
        rows.push(Listed {
            origin: origin.to_owned(),
            action: action_name(rule.action),
            resource: rule.resource.to_string(),
        });
    };
    for r in &store::read_global(data_dir)?.rules {
        push(&mut rows, "global", r);
    }
    let mut warnings = Vec::new();
    match &a.sandbox {
        Some(s) => {
            for r in &store::read_sandbox(data_dir, s)?.rules {
                push(&mut rows, &format!("sandbox:{s}"), r);
            }
            match store::sandbox_kit_rules(data_dir, s) {
                Ok(kit) => {
                    for r in &kit {
                        rows.push(Listed {
                            origin: r.origin.to_string(),
                            action: r.action.as_str(),
                            resource: r.domain.to_string(),
                        });
                    }
                }
                Err(e) => warnings.push(format!("cannot read the kits of {s}: {e:#}")),
            }
        }
        None => {
            for s in store::sandbox_names(data_dir) {
                match store::read_sandbox(data_dir, &s) {
                    Ok(p) => {
                        for r in &p.rules {
                            push(&mut rows, &format!("sandbox:{s}"), r);
                        }
                    }
                    Err(e) => warnings.push(format!("{e:#}")),
                }
            }
        }
    }
    if preset == Preset::Balanced {
        for b in BALANCED_ALLOWLIST {
            rows.push(Listed {
                origin: format!("preset:{preset}"),
                action: "allow",
                resource: (*b).to_owned(),
            });
        }
    }

    for w in warnings {
        let _ = writeln!(std::io::stderr().lock(), "sbx: warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        let doc = serde_json::json!({
            "preset": preset.as_str(),
            "preset_source": source.as_str(),
            "sandbox": a.sandbox,
            "rules": rows.iter().map(|r| serde_json::json!({
                "origin": r.origin,
                "action": r.action,
                "resource": r.resource,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitStatus::Success);
    }
    writeln!(
        out,
        "preset: {preset} ({}): {}",
        source.describe(),
        preset_summary(preset)
    )?;
    writeln!(out)?;
    let mut table = vec![vec![
        "ORIGIN".to_owned(),
        "ACTION".to_owned(),
        "RESOURCE".to_owned(),
    ]];
    table.extend(
        rows.iter()
            .map(|r| vec![r.origin.clone(), r.action.to_owned(), r.resource.clone()]),
    );
    out.write_all(crate::commands::policy_log::render_table(&table).as_bytes())?;
    if a.sandbox.is_none() {
        writeln!(
            out,
            "\n`sbx policy ls SANDBOX` also shows the rules a sandbox's agent template and kits add."
        )?;
    }
    Ok(ExitStatus::Success)
}
