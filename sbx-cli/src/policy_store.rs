//! The persistent network policy: the default chosen at `sbx login`, the global rules and
//! preset override of `sbx policy`, and each sandbox's own rules.
//!
//! Layout under the data directory `D` (all JSON, written atomically: temp file, fsync,
//! rename, fsync of the folder):
//! - `D/config.json`: `{"default_policy": "open"|"balanced"|"locked-down"}` (`sbx login`);
//!   other keys are kept untouched.
//! - `D/policy/global.json`: `{"preset": "allow-all"|"balanced"|"deny-all", "rules": [...]}`;
//!   `preset` is present only after `sbx policy set-default` and then wins over the login
//!   choice.
//! - `D/sandboxes/<name>/policy.json`: `{"rules": [...]}`.
//!
//! A rule is sbx-net's `{"action": "allow"|"deny"|"bypass", "resource": "..."}`; resources
//! are validated by sbx-net's parser when read, so a hand-edited file with a bad rule is an
//! error naming the file rather than a rule that silently never matches. Edits take an
//! exclusive `flock` on `D/policy/.lock`, so two `sbx policy` commands never lose each
//! other's change. Readers (the supervisor) need no lock: files are replaced by rename.
//!
//! [`effective_policy`] combines the preset, the global rules, the rules of the sandbox's agent
//! template and kits, and the sandbox's own rules into one [`sbx_net::Policy`] (deny wins, as
//! sbx-net evaluates).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use sbx_net::{Action, Policy, Preset, Resource, Rule, Scope};
use serde::{Deserialize, Serialize};

/// The resource forms `sbx policy allow|deny` accepts, for error messages and help.
pub const RESOURCE_FORMS: &str =
    "example.com (exactly that name), *.example.com (subdomains, not the name itself), \
example.com:443 (one port), ** (everything), 192.0.2.7 or 192.0.2.7:8080 (an address), \
10.0.0.0/8 or 10.0.0.0/8:5432 (a range)";

/// The default policy chosen at `sbx login`, as the user names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DefaultPolicy {
    /// Everything public is reachable (deny rules still apply).
    Open,
    /// Deny by default, plus AI APIs, package registries and code hosts.
    Balanced,
    /// Nothing is reachable until a rule allows it.
    LockedDown,
}

impl DefaultPolicy {
    /// Every choice, in menu order.
    pub const ALL: [DefaultPolicy; 3] = [
        DefaultPolicy::Open,
        DefaultPolicy::Balanced,
        DefaultPolicy::LockedDown,
    ];

    /// The name stored in `config.json` and given to `--policy`.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Open => "open",
            DefaultPolicy::Balanced => "balanced",
            DefaultPolicy::LockedDown => "locked-down",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(s: &str) -> Option<DefaultPolicy> {
        DefaultPolicy::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The sbx-net preset: open is `allow-all`, locked-down is `deny-all`.
    pub fn preset(self) -> Preset {
        match self {
            DefaultPolicy::Open => Preset::AllowAll,
            DefaultPolicy::Balanced => Preset::Balanced,
            DefaultPolicy::LockedDown => Preset::DenyAll,
        }
    }

    /// One line on what it means.
    pub fn describe(self) -> &'static str {
        match self {
            DefaultPolicy::Open => {
                "every public host is reachable; only your deny rules block (private and local addresses stay blocked)"
            }
            DefaultPolicy::Balanced => {
                "blocked by default, except AI APIs, package registries and code hosts (HTTPS); add more with `sbx policy allow`"
            }
            DefaultPolicy::LockedDown => {
                "nothing is reachable until you allow it with `sbx policy allow` (agent templates and kits still add their own domains)"
            }
        }
    }
}

impl std::fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the preset in force comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresetSource {
    /// `sbx policy set-default`, stored in `D/policy/global.json`.
    SetDefault,
    /// `sbx login` (or the first-run default), stored in `D/config.json`.
    Login,
    /// Nothing stored yet: `balanced`.
    BuiltIn,
}

impl PresetSource {
    /// How `sbx policy ls` explains it.
    pub fn describe(self) -> &'static str {
        match self {
            PresetSource::SetDefault => "set with `sbx policy set-default`",
            PresetSource::Login => "chosen at `sbx login`",
            PresetSource::BuiltIn => "built-in default; run `sbx login` to choose",
        }
    }

    /// A short machine-readable name.
    pub fn as_str(self) -> &'static str {
        match self {
            PresetSource::SetDefault => "set-default",
            PresetSource::Login => "login",
            PresetSource::BuiltIn => "built-in",
        }
    }
}

/// `D/policy/global.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalPolicy {
    /// The preset override of `sbx policy set-default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Rules for every sandbox.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// `D/sandboxes/<name>/policy.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPolicy {
    /// Rules for this sandbox only.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// `D/config.json`.
pub fn config_path(data_dir: &Path) -> PathBuf {
    data_dir.join("config.json")
}

/// `D/policy/global.json`.
pub fn global_path(data_dir: &Path) -> PathBuf {
    data_dir.join("policy").join("global.json")
}

/// `D/sandboxes/<name>`.
pub fn sandbox_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("sandboxes").join(name)
}

/// `D/sandboxes/<name>/policy.json`.
pub fn sandbox_policy_path(data_dir: &Path, name: &str) -> PathBuf {
    sandbox_dir(data_dir, name).join("policy.json")
}

/// The files [`effective_policy`] reads for a sandbox: poll their modification times to
/// notice a change (a missing file is part of the state too).
pub fn policy_files(data_dir: &Path, sandbox: Option<&str>) -> Vec<PathBuf> {
    let mut files = vec![config_path(data_dir), global_path(data_dir)];
    if let Some(s) = sandbox {
        files.push(sandbox_policy_path(data_dir, s));
    }
    files
}

/// The login choice stored in `D/config.json`, if any.
pub fn read_default_policy(data_dir: &Path) -> anyhow::Result<Option<DefaultPolicy>> {
    let path = config_path(data_dir);
    let Some(doc) = read_json_value(&path)? else {
        return Ok(None);
    };
    match doc.get("default_policy") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => DefaultPolicy::parse(s).map(Some).ok_or_else(|| {
            anyhow!(
                "{}: unknown default_policy {s:?}; run `sbx login --policy open|balanced|locked-down`",
                path.display()
            )
        }),
        Some(_) => bail!(
            "{}: default_policy is not a string; run `sbx login --policy open|balanced|locked-down`",
            path.display()
        ),
    }
}

/// Stores the login choice in `D/config.json`, keeping any other keys.
pub fn write_default_policy(data_dir: &Path, choice: DefaultPolicy) -> anyhow::Result<()> {
    let path = config_path(data_dir);
    let mut doc = match read_json_value(&path) {
        Ok(Some(serde_json::Value::Object(map))) => map,
        // A broken or foreign file is replaced: login is how users repair it.
        _ => serde_json::Map::new(),
    };
    doc.insert("default_policy".into(), choice.as_str().into());
    let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(doc))?;
    text.push('\n');
    write_atomic(&path, text.as_bytes())
}

/// The default policy, for commands that need one: the stored choice, or on first use a
/// prompt (when stdin and stderr are terminals) or `balanced` with a one-line notice on
/// stderr. The choice is stored either way.
pub fn ensure_configured(data_dir: &Path) -> anyhow::Result<Preset> {
    if let Some(choice) = read_default_policy(data_dir)? {
        return Ok(choice.preset());
    }
    let choice = if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        prompt_default_policy(&mut input, &mut std::io::stderr().lock())?
    } else {
        let _ = writeln!(
            std::io::stderr().lock(),
            "sbx: note: no default network policy chosen yet; using `balanced` (change it with `sbx login --policy open|balanced|locked-down`)"
        );
        DefaultPolicy::Balanced
    };
    write_default_policy(data_dir, choice)?;
    Ok(choice.preset())
}

/// Asks for the default policy with a numbered menu (empty answer: `balanced`). Accepts the
/// number or the name; asks again on anything else; fails at end of input.
pub fn prompt_default_policy(
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<DefaultPolicy> {
    writeln!(
        out,
        "Choose the default network policy for your sandboxes:\n"
    )?;
    for (i, p) in DefaultPolicy::ALL.iter().enumerate() {
        let tag = if *p == DefaultPolicy::Balanced {
            " (default)"
        } else {
            ""
        };
        writeln!(
            out,
            "  {}) {}{tag}\n     {}",
            i + 1,
            p.as_str(),
            p.describe()
        )?;
    }
    writeln!(
        out,
        "\nChange it later with `sbx login --policy ...` or `sbx policy set-default`."
    )?;
    for _ in 0..5 {
        write!(out, "Policy [1-3, default 2]: ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            writeln!(out)?;
            bail!("no default policy chosen (end of input); run `sbx login --policy open|balanced|locked-down`");
        }
        let answer = line.trim().to_ascii_lowercase();
        let choice = match answer.as_str() {
            "" => Some(DefaultPolicy::Balanced),
            "1" => Some(DefaultPolicy::Open),
            "2" => Some(DefaultPolicy::Balanced),
            "3" => Some(DefaultPolicy::LockedDown),
            other => DefaultPolicy::parse(other),
        };
        match choice {
            Some(c) => return Ok(c),
            None => writeln!(out, "Please answer 1, 2 or 3.")?,
        }
    }
    bail!("no default policy chosen; run `sbx login --policy open|balanced|locked-down`")
}

/// The preset in force and where it comes from: `set-default` over the login choice over
/// `balanced`.
pub fn effective_preset(data_dir: &Path) -> anyhow::Result<(Preset, PresetSource)> {
    if let Some(p) = read_global(data_dir)?.preset {
        return Ok((p, PresetSource::SetDefault));
    }
    Ok(match read_default_policy(data_dir)? {
        Some(choice) => (choice.preset(), PresetSource::Login),
        None => (Preset::Balanced, PresetSource::BuiltIn),
    })
}

/// `D/policy/global.json` (empty when missing).
pub fn read_global(data_dir: &Path) -> anyhow::Result<GlobalPolicy> {
    read_policy_file(&global_path(data_dir))
}

/// Replaces `D/policy/global.json`.
pub fn write_global(data_dir: &Path, global: &GlobalPolicy) -> anyhow::Result<()> {
    write_policy_file(&global_path(data_dir), global)
}

/// `D/sandboxes/<name>/policy.json` (empty when missing).
pub fn read_sandbox(data_dir: &Path, name: &str) -> anyhow::Result<SandboxPolicy> {
    validate_sandbox_name(name)?;
    read_policy_file(&sandbox_policy_path(data_dir, name))
}

/// Replaces `D/sandboxes/<name>/policy.json` (the sandbox folder must exist).
pub fn write_sandbox(data_dir: &Path, name: &str, policy: &SandboxPolicy) -> anyhow::Result<()> {
    validate_sandbox_name(name)?;
    let dir = sandbox_dir(data_dir, name);
    if !dir.is_dir() {
        bail!("sandbox {name:?} does not exist");
    }
    write_policy_file(&sandbox_policy_path(data_dir, name), policy)
}

/// Holds the store's edit lock until dropped.
#[derive(Debug)]
pub struct EditLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Takes the exclusive edit lock (`D/policy/.lock`), waiting for another `sbx policy`.
pub fn lock_for_edit(data_dir: &Path) -> anyhow::Result<EditLock> {
    let dir = data_dir.join("policy");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("cannot lock {}: {e}", path.display()))?;
    Ok(EditLock { _lock: lock })
}

/// Parses a rule resource with sbx-net's parser; the error lists the valid forms.
pub fn parse_resource(input: &str) -> anyhow::Result<Resource> {
    Resource::parse(input).map_err(|e| anyhow!("{e}\nvalid forms: {RESOURCE_FORMS}"))
}

/// A kit or template rule as an sbx-net rule.
pub fn kit_rule(rule: &sbx_kit::NetworkRule) -> anyhow::Result<Rule> {
    let action = match rule.action {
        sbx_kit::RuleAction::Allow => Action::Allow,
        sbx_kit::RuleAction::Deny => Action::Deny,
        sbx_kit::RuleAction::Bypass => Action::Bypass,
        other => bail!("unsupported kit rule action {other:?}"),
    };
    Rule::new(action, &rule.domain.to_string())
        .with_context(|| format!("rule from {}", rule.origin))
}

/// The policy that applies to `sandbox` (or, with `None`, to any sandbox without rules of its
/// own): the preset in force ([`effective_preset`]), the global rules, `kit_rules` (the
/// sandbox's agent template and kits, e.g. [`sandbox_kit_rules`]) and the sandbox's own rules.
///
/// Kit and sandbox rules go into the sandbox's scope (into the global scope when `sandbox` is
/// `None`), so they never leak to another sandbox. Deny beats allow across all of them, as
/// [`sbx_net::Policy::evaluate`] decides. Never prompts: with no login choice stored the
/// preset is `balanced`.
pub fn effective_policy(
    data_dir: &Path,
    sandbox: Option<&str>,
    kit_rules: &[sbx_kit::NetworkRule],
) -> anyhow::Result<Policy> {
    let (preset, _) = effective_preset(data_dir)?;
    let mut policy = Policy::new(preset);
    for rule in read_global(data_dir)?.rules {
        policy.add(&Scope::Global, rule)?;
    }
    let scope = match sandbox {
        Some(name) => {
            validate_sandbox_name(name)?;
            Scope::Sandbox(name.to_owned())
        }
        None => Scope::Global,
    };
    for rule in kit_rules {
        policy.add(&scope, kit_rule(rule)?)?;
    }
    if let Some(name) = sandbox {
        for rule in read_sandbox(data_dir, name)?.rules {
            policy.add(&scope, rule)?;
        }
    }
    Ok(policy)
}

/// The network rules of a sandbox's agent template and kits, from
/// `D/sandboxes/<name>/sandbox.json` (`"agent"`, `"kits"`: kit folders). Empty when the
/// sandbox has no config. A kit that cannot be read is an error naming it.
pub fn sandbox_kit_rules(data_dir: &Path, name: &str) -> anyhow::Result<Vec<sbx_kit::NetworkRule>> {
    validate_sandbox_name(name)?;
    let path = sandbox_dir(data_dir, name).join("sandbox.json");
    let Some(doc) = read_json_value(&path)? else {
        return Ok(Vec::new());
    };
    let agent = doc.get("agent").and_then(|v| v.as_str());
    let mut mixins = Vec::new();
    if let Some(kits) = doc.get("kits").and_then(|v| v.as_array()) {
        for dir in kits.iter().filter_map(|v| v.as_str()) {
            let kit = sbx_kit::Kit::from_dir(dir)
                .with_context(|| format!("sandbox {name:?} uses kit {dir}"))?;
            mixins.push(kit);
        }
    }
    let resolved = match agent {
        Some(agent) => {
            let base = sbx_kit::template(agent)
                .with_context(|| format!("sandbox {name:?} uses agent {agent:?}"))?;
            sbx_kit::merge(&base, &mixins)?
        }
        None => sbx_kit::merge_mixins(&mixins)?,
    };
    Ok(resolved.rules)
}

/// Names of the existing sandboxes (folders with a `sandbox.json`), sorted.
pub fn sandbox_names(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("sandboxes")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("sandbox.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Fails unless the sandbox exists, suggesting the closest existing name.
pub fn require_sandbox(data_dir: &Path, name: &str) -> anyhow::Result<()> {
    validate_sandbox_name(name)?;
    if sandbox_dir(data_dir, name).join("sandbox.json").is_file() {
        return Ok(());
    }
    let names = sandbox_names(data_dir);
    match closest(name, &names) {
        Some(best) => bail!("no sandbox named {name:?}; did you mean {best:?}?"),
        None if names.is_empty() => {
            bail!("no sandbox named {name:?}; there are no sandboxes yet (create one with `sbx create`)")
        }
        None => bail!(
            "no sandbox named {name:?}; existing sandboxes: {}",
            names.join(", ")
        ),
    }
}

/// The candidate nearest to `name` by edit distance, if near enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= limit || c.starts_with(name))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Sandbox names as the state layout allows them (they are folder names): letters, digits,
/// `-`, `.`, `+`, `_`, 1 to 128 characters, not starting with a dot.
pub fn validate_sandbox_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.+_".contains(&b));
    if !ok {
        let shown: String = name.chars().take(40).collect();
        bail!("invalid sandbox name {shown:?}: use letters, digits, `-`, `.`, `+`");
    }
    Ok(())
}

fn read_json_value(path: &Path) -> anyhow::Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("cannot parse {}", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn read_policy_file<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "cannot use the policy file {}: {e} (fix or remove the file)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_policy_file<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to `path` so readers see the old or the new file, never a mix: a temp file
/// in the same folder, fsync, rename over `path`, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sbx_net::{Host, Verdict};

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn make_sandbox(d: &Path, name: &str, config: serde_json::Value) {
        let dir = sandbox_dir(d, name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sandbox.json"), config.to_string()).unwrap();
    }

    fn allowed(p: &Policy, sandbox: &str, host: &str, port: u16) -> bool {
        p.evaluate(sandbox, &Host::parse(host).unwrap(), port)
            .verdict
            == Verdict::Allow
    }

    fn add(d: &Path, scope: Option<&str>, action: Action, res: &str) {
        let rule = Rule::new(action, res).unwrap();
        match scope {
            None => {
                let mut g = read_global(d).unwrap();
                g.rules.push(rule);
                write_global(d, &g).unwrap();
            }
            Some(s) => {
                let mut p = read_sandbox(d, s).unwrap();
                p.rules.push(rule);
                write_sandbox(d, s, &p).unwrap();
            }
        }
    }

    #[test]
    fn config_round_trip_keeps_other_keys() {
        let h = home();
        assert_eq!(read_default_policy(h.path()).unwrap(), None);
        std::fs::write(config_path(h.path()), r#"{"other": 1}"#).unwrap();
        write_default_policy(h.path(), DefaultPolicy::LockedDown).unwrap();
        assert_eq!(
            read_default_policy(h.path()).unwrap(),
            Some(DefaultPolicy::LockedDown)
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(config_path(h.path())).unwrap()).unwrap();
        assert_eq!(doc["other"], 1);
        assert_eq!(doc["default_policy"], "locked-down");
        std::fs::write(config_path(h.path()), r#"{"default_policy": "wide-open"}"#).unwrap();
        let err = read_default_policy(h.path()).unwrap_err().to_string();
        assert!(
            err.contains("unknown default_policy \"wide-open\""),
            "{err}"
        );
    }

    #[test]
    fn ensure_configured_stores_balanced_without_a_terminal() {
        // Under `cargo test` stdin is not a terminal.
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            return;
        }
        let h = home();
        assert_eq!(ensure_configured(h.path()).unwrap(), Preset::Balanced);
        assert_eq!(
            read_default_policy(h.path()).unwrap(),
            Some(DefaultPolicy::Balanced)
        );
        write_default_policy(h.path(), DefaultPolicy::Open).unwrap();
        assert_eq!(ensure_configured(h.path()).unwrap(), Preset::AllowAll);
    }

    #[test]
    fn prompt_accepts_numbers_names_and_empty() {
        let ask = |input: &str| {
            let mut out = Vec::new();
            let r = prompt_default_policy(&mut input.as_bytes(), &mut out);
            (r, String::from_utf8(out).unwrap())
        };
        assert_eq!(ask("\n").0.unwrap(), DefaultPolicy::Balanced);
        assert_eq!(ask("1\n").0.unwrap(), DefaultPolicy::Open);
        assert_eq!(ask(" Locked-Down \n").0.unwrap(), DefaultPolicy::LockedDown);
        let (r, out) = ask("9\nopen\n");
        assert_eq!(r.unwrap(), DefaultPolicy::Open);
        assert!(out.contains("Please answer 1, 2 or 3."), "{out}");
        assert!(out.contains("2) balanced (default)"), "{out}");
        assert!(ask("").0.is_err());
        assert!(ask("x\nx\nx\nx\nx\nx\n").0.is_err());
    }

    #[test]
    fn preset_sources() {
        let h = home();
        let d = h.path();
        assert_eq!(
            effective_preset(d).unwrap(),
            (Preset::Balanced, PresetSource::BuiltIn)
        );
        write_default_policy(d, DefaultPolicy::Open).unwrap();
        assert_eq!(
            effective_preset(d).unwrap(),
            (Preset::AllowAll, PresetSource::Login)
        );
        write_global(
            d,
            &GlobalPolicy {
                preset: Some(Preset::DenyAll),
                rules: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(
            effective_preset(d).unwrap(),
            (Preset::DenyAll, PresetSource::SetDefault)
        );
    }

    #[test]
    fn global_deny_beats_sandbox_allow() {
        let h = home();
        let d = h.path();
        make_sandbox(d, "a", serde_json::json!({"name": "a"}));
        add(d, None, Action::Deny, "*.example.com");
        add(d, Some("a"), Action::Allow, "api.example.com");
        add(d, Some("a"), Action::Allow, "example.org:443");
        let p = effective_policy(d, Some("a"), &[]).unwrap();
        assert!(!allowed(&p, "a", "api.example.com", 443));
        assert!(allowed(&p, "a", "example.org", 443));
        assert!(!allowed(&p, "a", "example.org", 80));
        let rule = p
            .evaluate("a", &Host::parse("api.example.com").unwrap(), 443)
            .rule;
        assert_eq!(rule.as_deref(), Some("global:deny *.example.com"));
    }

    #[test]
    fn sandbox_rules_do_not_leak_to_other_sandboxes() {
        let h = home();
        let d = h.path();
        make_sandbox(d, "a", serde_json::json!({}));
        make_sandbox(d, "b", serde_json::json!({}));
        add(d, Some("a"), Action::Allow, "example.org");
        let pa = effective_policy(d, Some("a"), &[]).unwrap();
        let pb = effective_policy(d, Some("b"), &[]).unwrap();
        assert!(allowed(&pa, "a", "example.org", 443));
        assert!(!allowed(&pb, "b", "example.org", 443));
        // Even when evaluated for another sandbox name on a's policy.
        assert!(!allowed(&pa, "b", "example.org", 443));
        let global = effective_policy(d, None, &[]).unwrap();
        assert!(!allowed(&global, "a", "example.org", 443));
    }

    #[test]
    fn set_default_changes_the_base() {
        let h = home();
        let d = h.path();
        make_sandbox(d, "a", serde_json::json!({}));
        let p = effective_policy(d, Some("a"), &[]).unwrap();
        assert_eq!(p.preset(), Preset::Balanced);
        assert!(allowed(&p, "a", "pypi.org", 443));
        assert!(!allowed(&p, "a", "example.com", 443));
        write_global(
            d,
            &GlobalPolicy {
                preset: Some(Preset::AllowAll),
                rules: vec![Rule::new(Action::Deny, "tracker.example").unwrap()],
            },
        )
        .unwrap();
        let p = effective_policy(d, Some("a"), &[]).unwrap();
        assert!(allowed(&p, "a", "example.com", 443));
        assert!(!allowed(&p, "a", "tracker.example", 443));
        let mut g = read_global(d).unwrap();
        g.preset = Some(Preset::DenyAll);
        write_global(d, &g).unwrap();
        let p = effective_policy(d, Some("a"), &[]).unwrap();
        assert!(!allowed(&p, "a", "pypi.org", 443));
        // The login choice applies when there is no override.
        write_global(d, &GlobalPolicy::default()).unwrap();
        write_default_policy(d, DefaultPolicy::LockedDown).unwrap();
        assert_eq!(
            effective_policy(d, None, &[]).unwrap().preset(),
            Preset::DenyAll
        );
    }

    #[test]
    fn kit_rules_apply_to_their_sandbox_and_lose_to_denies() {
        let h = home();
        let d = h.path();
        write_default_policy(d, DefaultPolicy::LockedDown).unwrap();
        make_sandbox(d, "cp", serde_json::json!({"agent": "copilot", "kits": []}));
        make_sandbox(d, "other", serde_json::json!({"agent": "shell"}));
        let rules = sandbox_kit_rules(d, "cp").unwrap();
        assert!(rules
            .iter()
            .any(|r| r.origin.to_string() == "template:copilot"));
        let p = effective_policy(d, Some("cp"), &rules).unwrap();
        assert!(allowed(&p, "cp", "api.github.com", 443));
        assert!(!allowed(&p, "other", "api.github.com", 443));
        add(d, Some("cp"), Action::Deny, "api.github.com");
        let p = effective_policy(d, Some("cp"), &rules).unwrap();
        assert!(!allowed(&p, "cp", "api.github.com", 443));
    }

    #[test]
    fn sandbox_kit_rules_reads_kit_folders() {
        let h = home();
        let d = h.path();
        let kit = d.join("mykit");
        std::fs::create_dir_all(&kit).unwrap();
        std::fs::write(
            kit.join("spec.yaml"),
            "schemaVersion: \"1\"\nkind: mixin\nname: my-kit\nnetwork:\n  allowedDomains: [\"*.example.net\"]\n  deniedDomains: [bad.example.net]\n",
        )
        .unwrap();
        make_sandbox(
            d,
            "s",
            serde_json::json!({"agent": "shell", "kits": [kit.to_str().unwrap()]}),
        );
        let rules = sandbox_kit_rules(d, "s").unwrap();
        let kit_rules: Vec<String> = rules
            .iter()
            .filter(|r| r.origin.to_string() == "kit:my-kit")
            .map(|r| format!("{} {}", r.action.as_str(), r.domain))
            .collect();
        assert_eq!(kit_rules, ["allow *.example.net", "deny bad.example.net"]);
        assert!(sandbox_kit_rules(d, "missing").unwrap().is_empty());
        make_sandbox(
            d,
            "broken",
            serde_json::json!({"kits": ["/nonexistent/kit"]}),
        );
        let err = format!("{:#}", sandbox_kit_rules(d, "broken").unwrap_err());
        assert!(err.contains("/nonexistent/kit"), "{err}");
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let h = home();
        let d = h.path();
        std::fs::create_dir_all(d.join("policy")).unwrap();
        std::fs::write(
            global_path(d),
            r#"{"rules":[{"action":"allow","resource":"a.*.com"}]}"#,
        )
        .unwrap();
        let err = effective_policy(d, None, &[]).unwrap_err().to_string();
        assert!(err.contains("global.json"), "{err}");
        assert!(err.contains("a.*.com"), "{err}");
    }

    #[test]
    fn names_and_suggestions() {
        assert!(validate_sandbox_name("copilot-my.proj+1").is_ok());
        for bad in ["", ".", "..", "../x", "a/b", "a b", ".hidden"] {
            assert!(validate_sandbox_name(bad).is_err(), "{bad}");
        }
        let names = vec!["copilot-web".to_string(), "shell-api".to_string()];
        assert_eq!(closest("copilot-wbe", &names), Some("copilot-web"));
        assert_eq!(closest("shell", &names), Some("shell-api"));
        assert_eq!(closest("zzz", &names), None);
        let h = home();
        make_sandbox(h.path(), "copilot-web", serde_json::json!({}));
        let err = require_sandbox(h.path(), "copilot-wb")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no sandbox named \"copilot-wb\"; did you mean \"copilot-web\"?"
        );
        assert!(require_sandbox(h.path(), "copilot-web").is_ok());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let h = home();
        let path = h.path().join("x").join("f.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
    }

    #[test]
    fn resource_errors_list_the_forms() {
        let err = parse_resource("https://x.com").unwrap_err().to_string();
        assert!(err.contains("valid forms: example.com"), "{err}");
        assert!(parse_resource("10.0.0.0/8:5432").is_ok());
    }
}
