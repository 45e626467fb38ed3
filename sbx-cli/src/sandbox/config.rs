//! A sandbox's configuration (`sandbox.json`): what `sbx create` decided once, so every later
//! start is the same sandbox. Kits are resolved at create time and stored resolved, so editing
//! or deleting a kit folder later does not change an existing sandbox.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Which isolation backend runs the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A KVM microVM (sbx-vmm): its own kernel behind hardware virtualization.
    Microvm,
    /// Linux namespaces (sbx-ns): shares the host kernel; the weaker boundary.
    Namespace,
}

impl Backend {
    /// `microvm` or `namespace`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Microvm => "microvm",
            Backend::Namespace => "namespace",
        }
    }
}

/// A command a kit asked for, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitCommand {
    /// Program and arguments (`sh -c LINE` for shell lines).
    pub argv: Vec<String>,
    /// `agent` or `root`.
    pub user: String,
    /// Start and do not wait (startup commands only).
    #[serde(default)]
    pub background: bool,
    /// The kit that asked for it (`template:shell`, `kit:python`).
    pub origin: String,
}

/// A file a kit writes into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitFile {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// Its text.
    pub content: String,
    /// Permission bits.
    pub mode: u32,
}

/// A placeholder the sandbox sees instead of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelEnv {
    /// The secret or service name (e.g. `github`).
    pub name: String,
    /// The variables that carry it.
    pub env: Vec<String>,
    /// The sentinel (not secret: the proxy swaps it for the real value on the host).
    pub sentinel: String,
}

/// `sandbox.json`. The fields `name`, `agent`, `kits`, `workspace` and `backend` are read by
/// other commands (`sbx policy ls SANDBOX`) and keep their names and meaning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// The sandbox's name (its folder name).
    pub name: String,
    /// The agent template (`shell`, `copilot`, ...).
    pub agent: String,
    /// Absolute kit folders applied at create, in order.
    pub kits: Vec<PathBuf>,
    /// The host workspace, bound at the same absolute path, or none.
    pub workspace: Option<PathBuf>,
    /// The isolation backend chosen at create.
    pub backend: Backend,
    /// Why the microVM backend was not used (namespace sandboxes only).
    #[serde(default)]
    pub backend_reason: Option<String>,
    /// vCPUs (microVM) or CPU bandwidth (namespace).
    pub cpus: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Creation time, seconds since the epoch.
    pub created_unix: u64,
    /// What `sbx run` starts.
    pub command: Vec<String>,
    /// Environment of every process (kits' `environment`).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Extra environment of the agent process (the template's `agent.env`).
    #[serde(default)]
    pub agent_env: Vec<(String, String)>,
    /// Sentinels for the credentials the agent and kits declare.
    #[serde(default)]
    pub sentinels: Vec<SentinelEnv>,
    /// Run once, at the first start.
    #[serde(default)]
    pub install: Vec<KitCommand>,
    /// Run at every start.
    #[serde(default)]
    pub startup: Vec<KitCommand>,
    /// Written at the first start.
    #[serde(default)]
    pub files: Vec<KitFile>,
    /// Extra folders, clone mode and the host owner (`"mounts"`, `"clone"`, `"owner"`).
    #[serde(flatten)]
    pub workspace_mode: super::workspace::WorkspaceOptions,
}

/// Where a sandbox without a workspace works.
pub const DEFAULT_WORKDIR: &str = "/home/agent/workspace";

impl SandboxConfig {
    /// The working directory of the agent and of `sbx exec`.
    pub fn workdir(&self) -> PathBuf {
        self.workspace
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WORKDIR))
    }

    /// Every variable a process in the sandbox gets: kit environment, then sentinels.
    pub fn full_env(&self) -> Vec<(String, String)> {
        let mut out = self.env.clone();
        for s in &self.sentinels {
            for var in &s.env {
                out.retain(|(k, _)| k != var);
                out.push((var.clone(), s.sentinel.clone()));
            }
        }
        out
    }
}

/// Checks a sandbox name: 1 to 63 letters, digits, `-`, `.`, `+`, starting with a letter or
/// digit (the same rule as secret scopes, so every sandbox can have its own secrets).
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    if sbx_secrets::SandboxName::new(name).is_err() {
        bail!(
            "invalid sandbox name {:?}: use 1 to 63 letters, digits, `-`, `.` or `+`, starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        );
    }
    Ok(())
}

/// `{agent}-{basename(PATH)}` (or `{agent}` without a path), with characters a name cannot
/// hold replaced by `-`.
pub fn default_name(agent: &str, workspace: Option<&Path>) -> String {
    let base = workspace
        .and_then(|p| p.file_name())
        .map(|b| b.to_string_lossy().into_owned());
    let raw = match base {
        Some(b) if !b.is_empty() => format!("{agent}-{b}"),
        _ => agent.to_owned(),
    };
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-.+".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(63);
    name
}

/// Resolves the agent template and kit folders into the parts of a config they decide.
pub struct Resolved {
    /// Absolute kit folders.
    pub kits: Vec<PathBuf>,
    /// The merged kits.
    pub kit: sbx_kit::ResolvedKit,
}

/// Reads `--kit` folders and merges them onto the agent's template.
pub fn resolve_kits(agent: &str, kit_dirs: &[PathBuf]) -> anyhow::Result<Resolved> {
    let base = sbx_kit::template(agent).map_err(|_| {
        anyhow::anyhow!(
            "unknown agent {agent:?}: use one of {} (or the name of an existing sandbox)",
            sbx_kit::TEMPLATE_NAMES.join(", ")
        )
    })?;
    let mut kits = Vec::new();
    let mut dirs = Vec::new();
    for d in kit_dirs {
        let abs = std::path::absolute(d).with_context(|| format!("kit folder {}", d.display()))?;
        let kit = sbx_kit::Kit::from_dir(&abs)
            .with_context(|| format!("reading the kit in {}", abs.display()))?;
        kits.push(kit);
        dirs.push(abs);
    }
    let kit = sbx_kit::merge(&base, &kits).context("applying the kits")?;
    Ok(Resolved { kits: dirs, kit })
}

fn command(c: &sbx_kit::Command) -> KitCommand {
    KitCommand {
        argv: c.spec.command.argv(),
        user: c.spec.user.as_str().to_owned(),
        background: c.spec.background,
        origin: c.origin.to_string(),
    }
}

/// The config parts that come from the kits.
pub fn apply_kit(cfg: &mut SandboxConfig, kit: &sbx_kit::ResolvedKit) {
    cfg.command = kit.command.clone();
    cfg.env = kit
        .environment
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    cfg.agent_env = kit
        .agent_env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    cfg.install = kit.install.iter().map(command).collect();
    cfg.startup = kit.startup.iter().map(command).collect();
    cfg.files = kit
        .files
        .iter()
        .map(|f| KitFile {
            path: f.spec.path.clone(),
            content: f.spec.content.clone(),
            mode: f.spec.mode_bits(),
        })
        .collect();
}

/// Sentinels for the credentials the kits declare (a built-in service's token shape, or a
/// generic one) and for the user's custom secrets that apply to this sandbox. Never reads a
/// secret's value.
pub fn sentinels(
    name: &str,
    kit: &sbx_kit::ResolvedKit,
    catalog: &sbx_secrets::Catalog,
) -> anyhow::Result<Vec<SentinelEnv>> {
    use sbx_secrets::{Placeholder, Scope, SecretKind, Sentinel, Service};
    let mut out: Vec<SentinelEnv> = Vec::new();
    let mut add = |name: &str, env: Vec<String>, pattern: &str| -> anyhow::Result<()> {
        if let Some(s) = out.iter_mut().find(|s| s.name == name) {
            for e in env {
                if !s.env.contains(&e) {
                    s.env.push(e);
                }
            }
            return Ok(());
        }
        let placeholder = Placeholder::parse(pattern)?;
        let sentinel = Sentinel::generate(&placeholder)?;
        out.push(SentinelEnv {
            name: name.to_owned(),
            env,
            sentinel: sentinel.as_str().to_owned(),
        });
        Ok(())
    };
    for c in &kit.credentials {
        let pattern = Service::get(&c.service).map_or("sbx-{rand}", |s| s.placeholder);
        add(&c.service, vec![c.env.clone()], pattern)?;
    }
    // Custom secrets (`sbx secret set-custom`) name their own variables; the sandbox gets
    // them whether or not a kit mentions them. Service secrets reach it through kits only.
    let own = Scope::sandbox(name).ok();
    let entries = catalog.list().unwrap_or_default();
    for e in &entries {
        let applies = e.scope == Scope::Global || Some(&e.scope) == own.as_ref();
        if !applies || e.kind == SecretKind::Service {
            continue;
        }
        let overridden = e.scope == Scope::Global
            && entries
                .iter()
                .any(|o| o.name == e.name && Some(&o.scope) == own.as_ref());
        if overridden {
            continue;
        }
        let pattern = e.placeholder();
        add(&e.name, e.env(), pattern.as_str())?;
    }
    Ok(out)
}

/// Parses `-m` values: `512m`, `2g`, `1.5G`, `2048MiB`; a bare number is MiB.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .with_context(|| format!("invalid memory size {s:?}: use e.g. 512m or 2g"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "k" | "kb" | "kib" => 1 << 10,
        "t" | "tb" | "tib" => 1 << 40,
        _ => bail!("invalid memory size {s:?}: use e.g. 512m or 2g"),
    };
    Ok((n * mul as f64) as u64)
}

/// What this host has.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Online CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
}

impl Host {
    /// Reads `/proc/meminfo` and the CPU count.
    pub fn detect() -> Host {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(2 << 30, |kb| kb * 1024);
        Host { cpus, memory_bytes }
    }

    /// Host CPUs minus one, at least 1.
    pub fn default_cpus(&self) -> u32 {
        self.cpus.saturating_sub(1).max(1)
    }

    /// Half the host's memory, at most 8 GiB, at least 512 MiB (or all of a tiny host).
    pub fn default_memory(&self) -> u64 {
        (self.memory_bytes / 2)
            .clamp(512 << 20, 8 << 30)
            .min(self.memory_bytes)
    }
}

/// Smallest memory a sandbox may have.
pub const MIN_MEMORY: u64 = 128 << 20;

/// Validates `--cpus` and `-m` against the host and fills in the defaults.
pub fn resources(
    host: Host,
    cpus: Option<u32>,
    memory: Option<&str>,
) -> anyhow::Result<(u32, u64)> {
    let cpus = match cpus {
        None => host.default_cpus(),
        Some(0) => bail!("--cpus must be at least 1"),
        Some(n) if n > host.cpus => bail!(
            "--cpus {n} is more than this host has ({}): use at most {}",
            host.cpus,
            host.cpus
        ),
        Some(n) => n,
    };
    let mem = match memory {
        None => host.default_memory(),
        Some(s) => {
            let m = parse_size(s)?;
            if m < MIN_MEMORY {
                bail!("-m {s} is too small: a sandbox needs at least 128m");
            }
            if m > host.memory_bytes {
                bail!(
                    "-m {s} is more than this host's memory ({}): use at most {}m",
                    human_bytes(host.memory_bytes),
                    host.memory_bytes >> 20
                );
            }
            m
        }
    };
    Ok((cpus, mem))
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            default_name("shell", Some(Path::new("/home/u/my project"))),
            "shell-my-project"
        );
        assert_eq!(default_name("copilot", None), "copilot");
        assert!(validate_name("a.b+c-1").is_ok());
        for bad in ["", "-a", "a/b", "a b", ".x", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("256").unwrap(), 256 << 20);
        assert_eq!(parse_size("2048MiB").unwrap(), 2 << 30);
        for bad in ["", "x", "-1g", "1q", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resources_are_checked_against_the_host() {
        let host = Host {
            cpus: 4,
            memory_bytes: 8 << 30,
        };
        assert_eq!(resources(host, None, None).unwrap(), (3, 4 << 30));
        assert_eq!(resources(host, Some(4), Some("1g")).unwrap(), (4, 1 << 30));
        assert!(resources(host, Some(5), None).is_err());
        assert!(resources(host, Some(0), None).is_err());
        assert!(resources(host, None, Some("64m")).is_err());
        assert!(resources(host, None, Some("9g")).is_err());
        let one = Host {
            cpus: 1,
            memory_bytes: 256 << 20,
        };
        assert_eq!(resources(one, None, None).unwrap(), (1, 256 << 20));
    }

    #[test]
    fn kit_credentials_become_sentinels_shaped_like_tokens() {
        let r = resolve_kits("copilot", &[]).unwrap();
        let s = sentinels("copilot-x", &r.kit, &sbx_secrets::Catalog::in_memory()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "github");
        assert_eq!(s[0].env, ["GH_TOKEN"]);
        assert!(s[0].sentinel.starts_with("gho_") && s[0].sentinel.len() == 40);
        assert!(resolve_kits("nope", &[]).is_err());
    }

    #[test]
    fn full_env_puts_sentinels_over_kit_values() {
        let r = resolve_kits("shell", &[]).unwrap();
        let mut cfg = SandboxConfig {
            name: "n".into(),
            agent: "shell".into(),
            kits: vec![],
            workspace: None,
            backend: Backend::Namespace,
            backend_reason: None,
            cpus: 1,
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
        apply_kit(&mut cfg, &r.kit);
        assert_eq!(cfg.command, ["bash", "--login"]);
        cfg.env = vec![("A".into(), "1".into()), ("T".into(), "real".into())];
        cfg.sentinels = vec![SentinelEnv {
            name: "x".into(),
            env: vec!["T".into()],
            sentinel: "sent".into(),
        }];
        assert_eq!(
            cfg.full_env(),
            [("A".into(), "1".into()), ("T".into(), "sent".into())]
        );
        assert_eq!(cfg.workdir(), PathBuf::from(DEFAULT_WORKDIR));
    }
}
