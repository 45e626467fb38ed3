//! `sbx secret`: API tokens kept on the host (OS keychain or an encrypted file); sandboxes
//! only ever see sentinels.
//!
//! Store selection (`SBX_SECRET_STORE`): `secret-service` (the desktop keyring over D-Bus; the
//! default when a session bus offers one that answers), `keyring` (the Linux kernel keyring;
//! the default otherwise; lost at reboot), `file` (an encrypted file in the data directory; passphrase from
//! `SBX_SECRET_PASSPHRASE` or a prompt, after which the derived key is cached in the kernel
//! keyring until reboot), `memory` (nothing persists; for trying things out).
//! `SBX_SECRET_NAMESPACE` (default `sbx`) separates installations in the keyring.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use sbx_secrets::secrecy::SecretString;
use sbx_secrets::{
    Catalog, CustomSecret, FileKey, FileStore, FileStoreConfig, KeyringStore, Listed, Masked,
    MemoryStore, Placeholder, Scope, SecretStore, Secrets, Service, StoreKind, Unlock,
};

use crate::exit::ExitStatus;

/// Arguments of `sbx secret`.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SecretCommand,
}

/// The `sbx secret` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store the token of a built-in service (github, copilot, anthropic, openai, google,
    /// mistral, groq, xai, aws).
    #[command(override_usage = "sbx secret set [-g | SANDBOX] SERVICE [-t TOKEN] [-f]")]
    Set(SetArgs),
    /// Store a token for any API, bound to the hosts you name.
    #[command(
        override_usage = "sbx secret set-custom [-g | SANDBOX] --host H [--host H2]... --env VAR [--placeholder PATTERN] [--name NAME] [-t TOKEN] [-f]"
    )]
    SetCustom(SetCustomArgs),
    /// List secrets with masked values and the store holding each.
    Ls(LsArgs),
    /// Remove a secret.
    #[command(override_usage = "sbx secret rm [-g | SANDBOX] NAME")]
    Rm(RmArgs),
}

/// Arguments of `sbx secret set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// For all sandboxes.
    #[arg(short = 'g', long = "global")]
    pub global: bool,
    /// `SANDBOX SERVICE`, or `SERVICE` with `-g`.
    #[arg(value_name = "ARGS", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
    /// The token (visible in the process list and shell history: prefer stdin or the prompt).
    #[arg(short = 't', long = "token", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Replace an existing secret without asking.
    #[arg(short = 'f', long = "force")]
    pub force: bool,
}

/// Arguments of `sbx secret set-custom`.
#[derive(Debug, Args)]
pub struct SetCustomArgs {
    /// For all sandboxes.
    #[arg(short = 'g', long = "global")]
    pub global: bool,
    /// The sandbox (unless `-g`).
    #[arg(value_name = "SANDBOX")]
    pub sandbox: Option<String>,
    /// A host the token may be sent to (`api.example.com`, `*.example.com`, with an optional
    /// `:port`). Repeat for more.
    #[arg(long = "host", value_name = "H", required = true)]
    pub hosts: Vec<String>,
    /// The environment variable that carries the placeholder in the sandbox.
    #[arg(long = "env", value_name = "VAR")]
    pub env: String,
    /// The placeholder's shape: `{rand}` is 32 random alphanumerics, `{rand:N}` is N.
    #[arg(
        long = "placeholder",
        value_name = "PATTERN",
        default_value = "sbx-{rand}"
    )]
    pub placeholder: String,
    /// The secret's name (default: from VAR, e.g. `MY_API_KEY` -> `my-api-key`).
    #[arg(long = "name", value_name = "NAME")]
    pub name: Option<String>,
    /// The token (visible in the process list and shell history: prefer stdin or the prompt).
    #[arg(short = 't', long = "token", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Replace an existing secret without asking.
    #[arg(short = 'f', long = "force")]
    pub force: bool,
}

/// Arguments of `sbx secret ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sbx secret rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// A global secret.
    #[arg(short = 'g', long = "global")]
    pub global: bool,
    /// `SANDBOX NAME`, or `NAME` with `-g`.
    #[arg(value_name = "ARGS", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
}

/// Run `sbx secret ...`.
pub fn run(args: SecretArgs) -> anyhow::Result<ExitStatus> {
    match args.command {
        SecretCommand::Set(a) => set(a),
        SecretCommand::SetCustom(a) => set_custom(a),
        SecretCommand::Ls(a) => ls(a),
        SecretCommand::Rm(a) => rm(a),
    }
}

/// `[-g | SANDBOX] NAME` -> scope and name.
fn scope_and_name(global: bool, args: &[String], what: &str) -> anyhow::Result<(Scope, String)> {
    match (global, args) {
        (true, [name]) => Ok((Scope::Global, name.clone())),
        (true, [_, _]) => bail!("give either -g or a SANDBOX, not both"),
        (false, [sandbox, name]) => Ok((sandbox_scope(sandbox)?, name.clone())),
        (false, [_]) => {
            bail!("say where the secret applies: -g {what} for all sandboxes, or SANDBOX {what}")
        }
        _ => bail!("expected [-g | SANDBOX] {what}"),
    }
}

fn custom_scope(global: bool, sandbox: Option<&str>) -> anyhow::Result<Scope> {
    match (global, sandbox) {
        (true, None) => Ok(Scope::Global),
        (true, Some(_)) => bail!("give either -g or a SANDBOX, not both"),
        (false, Some(s)) => sandbox_scope(s),
        (false, None) => bail!("say where the secret applies: -g for all sandboxes, or SANDBOX"),
    }
}

/// A sandbox scope; `global` is refused so that listings cannot confuse the two.
fn sandbox_scope(name: &str) -> anyhow::Result<Scope> {
    if name == "global" {
        bail!("`global` is not a sandbox name here; use -g for all sandboxes");
    }
    Ok(Scope::sandbox(name)?)
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Global => "all sandboxes".into(),
        Scope::Sandbox(n) => format!("sandbox {}", n.as_str()),
    }
}

fn set(a: SetArgs) -> anyhow::Result<ExitStatus> {
    let (scope, service) = scope_and_name(a.global, &a.args, "SERVICE")?;
    let service = Service::lookup(&service)?.name;
    let secrets = open()?;
    let overwrite = confirm_overwrite(&secrets, &scope, service, a.force)?;
    let token = read_token(a.token, &format!("Token for {service} ({scope}): "))?;
    let entry = secrets.set_service(&scope, service, &token, overwrite)?;
    report_set(&secrets, &entry.name, &scope)
}

fn set_custom(a: SetCustomArgs) -> anyhow::Result<ExitStatus> {
    let scope = custom_scope(a.global, a.sandbox.as_deref())?;
    let mut custom = CustomSecret::new(&a.env).placeholder(Placeholder::parse(&a.placeholder)?);
    if let Some(n) = &a.name {
        custom = custom.name(n);
    }
    for h in &a.hosts {
        custom = custom.host(h);
    }
    // Check names and hosts before asking for anything.
    sbx_secrets::validate_env(&a.env)?;
    sbx_secrets::validate_name(&custom.name).context("name it with --name")?;
    if Service::get(&custom.name).is_some() {
        return Err(sbx_secrets::Error::ReservedName(custom.name).into());
    }
    for h in &a.hosts {
        sbx_secrets::normalize_host(h)?;
    }
    let secrets = open()?;
    let name = custom.name.clone();
    let overwrite = confirm_overwrite(&secrets, &scope, &name, a.force)?;
    let token = read_token(a.token, &format!("Token for {name} ({scope}): "))?;
    let entry = secrets.set_custom(&scope, custom, &token, overwrite)?;
    report_set(&secrets, &entry.name, &scope)
}

fn report_set(secrets: &Secrets, name: &str, scope: &Scope) -> anyhow::Result<ExitStatus> {
    let store = secrets.store();
    writeln!(
        std::io::stdout().lock(),
        "stored {name} for {} in the {} store",
        scope_text(scope),
        store.kind()
    )?;
    if store.kind() == StoreKind::Keyring {
        note("the kernel keyring forgets secrets at reboot; SBX_SECRET_STORE=file keeps them in an encrypted file");
    }
    Ok(ExitStatus::Success)
}

fn rm(a: RmArgs) -> anyhow::Result<ExitStatus> {
    let (scope, name) = scope_and_name(a.global, &a.args, "NAME")?;
    sbx_secrets::validate_name(&name)?;
    let secrets = open()?;
    let entry = secrets.remove(&scope, &name)?;
    writeln!(
        std::io::stdout().lock(),
        "removed {} for {} from the {} store",
        entry.name,
        scope_text(&scope),
        entry.store
    )?;
    Ok(ExitStatus::Success)
}

fn ls(a: LsArgs) -> anyhow::Result<ExitStatus> {
    let secrets = open()?;
    let rows = secrets.list()?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let list: Vec<serde_json::Value> = rows.iter().map(json_row).collect();
        let doc = serde_json::json!({
            "store": {
                "kind": secrets.store().kind().as_str(),
                "description": secrets.store().describe(),
                "persistence": secrets.store().kind().persistence(),
            },
            "secrets": list,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitStatus::Success);
    }
    if rows.is_empty() {
        writeln!(out, "no secrets; add one with `sbx secret set -g SERVICE`")?;
    } else {
        let table: Vec<[String; 6]> = rows
            .iter()
            .map(|r| {
                [
                    r.entry.scope.to_string(),
                    r.entry.type_name().to_string(),
                    r.entry.name.clone(),
                    short_hosts(&r.entry.hosts()),
                    r.secret.to_string(),
                    r.entry.store.to_string(),
                ]
            })
            .collect();
        let head = ["SCOPE", "TYPE", "NAME", "HOSTS", "SECRET", "STORE"].map(String::from);
        let mut widths = [0usize; 6];
        for row in std::iter::once(&head).chain(table.iter()) {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        for row in std::iter::once(&head).chain(table.iter()) {
            let mut line = String::new();
            for (i, (w, c)) in widths.iter().zip(row).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  "));
                }
            }
            writeln!(out, "{line}")?;
        }
    }
    // Say which store holds what.
    writeln!(out)?;
    let mut kinds: Vec<StoreKind> = rows.iter().map(|r| r.entry.store).collect();
    kinds.push(secrets.store().kind());
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        let desc = secrets
            .stores()
            .find(|s| s.kind() == k)
            .map(|s| s.describe())
            .unwrap_or_else(|| format!("not open (select it with SBX_SECRET_STORE={k})"));
        let new = if k == secrets.store().kind() {
            "; new secrets go here"
        } else {
            ""
        };
        writeln!(out, "{k}: {desc}{new}")?;
    }
    if rows.iter().any(|r| r.secret == Masked::Missing) {
        writeln!(
            out,
            "(missing): the store has no value (the kernel keyring is cleared at reboot); set it again"
        )?;
    }
    Ok(ExitStatus::Success)
}

fn short_hosts(hosts: &[String]) -> String {
    match hosts {
        [] => "-".into(),
        [a] => a.clone(),
        [a, b] => format!("{a},{b}"),
        [a, b, rest @ ..] => format!("{a},{b},+{}", rest.len()),
    }
}

fn json_row(r: &Listed) -> serde_json::Value {
    let (secret, status, reason) = match &r.secret {
        Masked::Value(v) => (Some(v.clone()), "ok", None),
        Masked::Missing => (None, "missing", None),
        Masked::Unavailable(why) => (None, "unavailable", Some(why.clone())),
        _ => (None, "unknown", None),
    };
    serde_json::json!({
        "scope": r.entry.scope.to_string(),
        "type": r.entry.type_name(),
        "name": r.entry.name,
        "hosts": r.entry.hosts(),
        "env": r.entry.env(),
        "placeholder": r.entry.placeholder().as_str(),
        "secret": secret,
        "status": status,
        "reason": reason,
        "store": r.entry.store.as_str(),
        "updated": r.entry.updated,
    })
}

fn note(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "note: {msg}");
}

/// Whether an existing secret may be replaced: `-f`, or a yes on a terminal. Without a
/// terminal an existing secret is an error (the message says to pass `-f`).
fn confirm_overwrite(
    secrets: &Secrets,
    scope: &Scope,
    name: &str,
    force: bool,
) -> anyhow::Result<bool> {
    if force || secrets.entry(scope, name)?.is_none() {
        return Ok(force);
    }
    let exists = || {
        anyhow!(
            "secret `{name}` already exists for {}; pass -f to replace it",
            scope_text(scope)
        )
    };
    if !std::io::stdin().is_terminal() {
        return Err(exists());
    }
    let mut err = std::io::stderr().lock();
    write!(
        err,
        "Replace the existing secret {name} for {}? [y/N] ",
        scope_text(scope)
    )?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
        Ok(true)
    } else {
        Err(exists())
    }
}

/// The token from `-t`, from stdin when it is not a terminal, else from a hidden prompt.
fn read_token(flag: Option<String>, prompt: &str) -> anyhow::Result<SecretString> {
    if let Some(t) = flag {
        note("a token given with -t shows in the process list and shell history; prefer stdin or the prompt");
        return Ok(SecretString::from(t));
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut raw = String::new();
        let limit = sbx_secrets::MAX_TOKEN_LEN as u64 + 3;
        stdin
            .lock()
            .take(limit)
            .read_to_string(&mut raw)
            .map_err(|_| anyhow!("cannot read the token from stdin (is it UTF-8 text?)"))?;
        return Ok(sbx_secrets::token_from_input(raw));
    }
    let t =
        rpassword::prompt_password(prompt).context("cannot read the token from the terminal")?;
    Ok(SecretString::from(t))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn secrets_dir() -> anyhow::Result<PathBuf> {
    Ok(crate::paths::data_dir()?.join("secrets"))
}

fn namespace() -> String {
    env("SBX_SECRET_NAMESPACE").unwrap_or_else(|| "sbx".into())
}

/// The store named by `SBX_SECRET_STORE`, else the default for this host: the desktop Secret
/// Service when a session bus offers one that answers, else the kernel keyring.
pub(crate) fn chosen_kind() -> anyhow::Result<StoreKind> {
    match env("SBX_SECRET_STORE") {
        Some(v) if v != "auto" => Ok(v.parse::<StoreKind>()?),
        _ if secret_service().is_ok_and(|s| s.probe().is_ok()) => Ok(StoreKind::SecretService),
        _ => Ok(StoreKind::Keyring),
    }
}

/// [`open`] for the sandbox supervisor, which injects the values the proxy needs.
pub(crate) fn open_secrets() -> anyhow::Result<Secrets> {
    open()
}

/// The catalog and the chosen store, plus the other stores the catalog mentions when they
/// open without asking anything.
fn open() -> anyhow::Result<Secrets> {
    let kind = chosen_kind()?;
    let dir = secrets_dir()?;
    if kind == StoreKind::Memory {
        return Ok(Secrets::new(
            Catalog::in_memory(),
            Arc::new(MemoryStore::new()),
        ));
    }
    let catalog = Catalog::file(dir.join("catalog.json"));
    let others: Vec<StoreKind> = sbx_secrets::kinds_in(&catalog.list()?)
        .into_iter()
        .filter(|k| *k != kind)
        .collect();
    let mut secrets = Secrets::new(catalog, open_store(kind, true)?);
    for k in others {
        match open_store(k, false) {
            Ok(s) => secrets = secrets.with_store(s),
            Err(e) => tracing::debug!(store = %k, "not opened: {e:#}"),
        }
    }
    Ok(secrets)
}

fn open_store(kind: StoreKind, interactive: bool) -> anyhow::Result<Arc<dyn SecretStore>> {
    match kind {
        StoreKind::Keyring => {
            let store = kernel_keyring(&namespace())?;
            store.probe()?;
            Ok(Arc::new(store))
        }
        StoreKind::File => Ok(Arc::new(open_file_store(interactive)?)),
        StoreKind::SecretService => {
            let store = secret_service()?;
            store.probe()?;
            Ok(Arc::new(store))
        }
        StoreKind::Keychain => {
            bail!("this build of sbx has no {kind} support; use SBX_SECRET_STORE=keyring or file")
        }
        _ => bail!("the {kind} store cannot be opened from the command line"),
    }
}

#[cfg(target_os = "linux")]
fn kernel_keyring(ns: &str) -> anyhow::Result<KeyringStore> {
    Ok(KeyringStore::kernel(ns)?)
}

#[cfg(target_os = "linux")]
fn secret_service() -> anyhow::Result<KeyringStore> {
    Ok(KeyringStore::secret_service(&namespace())?)
}

#[cfg(not(target_os = "linux"))]
fn secret_service() -> anyhow::Result<KeyringStore> {
    bail!("this build of sbx has no secret-service support; use SBX_SECRET_STORE=file")
}

#[cfg(not(target_os = "linux"))]
fn kernel_keyring(_ns: &str) -> anyhow::Result<KeyringStore> {
    bail!("the kernel keyring exists only on Linux; use SBX_SECRET_STORE=file")
}

/// Unlocks the file store: a key cached in the kernel keyring, else `SBX_SECRET_PASSPHRASE`,
/// else (interactively) a prompt whose derived key is then cached until reboot.
fn open_file_store(interactive: bool) -> anyhow::Result<FileStore> {
    let path = secrets_dir()?.join("secrets.enc");
    let config = FileStoreConfig::new(&path);
    let cache = kernel_keyring(&format!("{}.file-key", namespace()))
        .ok()
        .filter(|c| c.probe().is_ok());
    if let (Some(id), Some(cache)) = (FileStore::key_id_of(&path)?, &cache) {
        let cached = cache.get(&Scope::Global, &id).ok().flatten();
        if let Some(key) = cached.as_ref().and_then(FileKey::from_base64) {
            match FileStore::open(config.clone(), Unlock::Key(key)) {
                Ok(s) => return Ok(s),
                Err(e) => tracing::debug!("cached file key rejected: {e}"),
            }
        }
    }
    if let Some(p) = env("SBX_SECRET_PASSPHRASE") {
        return Ok(FileStore::open(
            config,
            Unlock::Passphrase(SecretString::from(p)),
        )?);
    }
    let tty = std::io::stdin().is_terminal() || std::io::stderr().is_terminal();
    if !interactive || !tty {
        bail!(
            "the file store {} is locked: set SBX_SECRET_PASSPHRASE, or run on a terminal to be asked",
            path.display()
        );
    }
    let new = !path.exists();
    let pass = rpassword::prompt_password(format!("Passphrase for {}: ", path.display()))?;
    if new {
        let mut again = rpassword::prompt_password("Repeat the passphrase: ")?;
        let same = again == pass;
        sbx_secrets::secrecy::zeroize::Zeroize::zeroize(&mut again);
        if !same {
            bail!("the passphrases differ; nothing was written");
        }
    }
    let store = FileStore::open(config, Unlock::Passphrase(SecretString::from(pass)))?;
    if let Some(cache) = cache {
        if cache
            .set(&Scope::Global, &store.key_id(), &store.key().to_base64())
            .is_ok()
        {
            note("the file store's key is cached in the kernel keyring until reboot");
        }
    }
    Ok(store)
}
