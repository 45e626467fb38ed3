//! A standalone default-deny egress proxy built on `sbx-net`.
//!
//! ```text
//! cargo run --release -p sbx-examples --example egress_proxy -- \
//!   --listen 127.0.0.1:0 --ca-dir DIR --preset deny-all \
//!   [--allow RES]... [--deny RES]... [--bypass RES]... \
//!   [--secret NAME=ENVVAR@HOST[,HOST...]]... [--resolve HOST:ADDR]... \
//!   [--upstream-ca PEM]... [--log FILE]
//! ```
//!
//! Prints `listening ADDR`, then one `sentinel NAME VALUE` line per secret, on stdout. Writes
//! `DIR/ca.pem` (creating the CA, and `DIR/ca-key.pem` mode 0600, if missing). Each secret's
//! value is read from the named environment variable; the sandboxed process gets the sentinel
//! instead and the proxy swaps it for the secret in HTTPS requests to the bound hosts.
//! Any process can then use it with `HTTPS_PROXY=http://ADDR` and `--cacert DIR/ca.pem`.
//!
//! `--resolve HOST:ADDR` points a name at an address (`127.0.0.1` or `127.0.0.1:8443`), like
//! curl's `--resolve`, but in the proxy: the proxy, not the client, resolves names.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use sbx_net::{
    CertificateAuthority, Credential, JsonLinesLog, Policy, Preset, Proxy, ProxyConfig, Scope,
    Sentinel, SocketAddrOrIp, StaticCredentials,
};
use secrecy::SecretString;

const USAGE: &str =
    "usage: egress_proxy --listen ADDR --ca-dir DIR [--preset allow-all|balanced|deny-all] \
[--allow RES]... [--deny RES]... [--bypass RES]... [--secret NAME=ENVVAR@HOST[,HOST...]]... \
[--resolve HOST:ADDR]... [--upstream-ca PEM]... [--log FILE]";

#[derive(Default)]
struct Args {
    listen: Option<String>,
    ca_dir: Option<PathBuf>,
    preset: Option<String>,
    allow: Vec<String>,
    deny: Vec<String>,
    bypass: Vec<String>,
    secrets: Vec<String>,
    resolve: Vec<String>,
    upstream_ca: Vec<PathBuf>,
    log: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = Some(value()?),
            "--ca-dir" => args.ca_dir = Some(value()?.into()),
            "--preset" => args.preset = Some(value()?),
            "--allow" => args.allow.push(value()?),
            "--deny" => args.deny.push(value()?),
            "--bypass" => args.bypass.push(value()?),
            "--secret" => args.secrets.push(value()?),
            "--resolve" => args.resolve.push(value()?),
            "--upstream-ca" => args.upstream_ca.push(value()?.into()),
            "--log" => args.log = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// `NAME=ENVVAR@HOST[,HOST...]`
fn parse_secret(spec: &str) -> Result<(String, String, Vec<String>), String> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or("--secret wants NAME=ENVVAR@HOST[,HOST...]")?;
    let (var, hosts) = rest
        .split_once('@')
        .ok_or("--secret wants NAME=ENVVAR@HOST[,HOST...]")?;
    let hosts: Vec<String> = hosts.split(',').map(str::to_string).collect();
    Ok((name.to_string(), var.to_string(), hosts))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let listen: std::net::SocketAddr = args
        .listen
        .as_deref()
        .ok_or("--listen is required")?
        .parse()?;
    let ca_dir = args.ca_dir.ok_or("--ca-dir is required")?;
    let preset: Preset = args.preset.as_deref().unwrap_or("deny-all").parse()?;
    let ca = Arc::new(CertificateAuthority::load_or_create(&ca_dir)?);

    let mut policy = Policy::new(preset);
    for r in &args.allow {
        policy.allow(&Scope::Global, r)?;
    }
    for r in &args.deny {
        policy.deny(&Scope::Global, r)?;
    }
    for r in &args.bypass {
        policy.bypass(&Scope::Global, r)?;
    }
    let mut config = ProxyConfig::new(ca)
        .with_sandbox("egress-proxy")
        .with_policy(policy);

    let mut store = StaticCredentials::new();
    let mut sentinels = Vec::new();
    for spec in &args.secrets {
        let (name, var, hosts) = parse_secret(spec)?;
        let value =
            std::env::var(&var).map_err(|_| format!("environment variable {var} is not set"))?;
        let secret = SecretString::from(value);
        let sentinel = if name == "github" {
            Sentinel::github()
        } else {
            Sentinel::format_preserving(&secret)
        };
        let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        config = config.with_credential(Credential::new(&name, sentinel.clone(), &host_refs)?);
        store.insert(name.clone(), secret);
        sentinels.push((name, sentinel));
    }
    config = config.with_provider(Arc::new(store));

    for spec in &args.resolve {
        let (host, addr) = spec.split_once(':').ok_or("--resolve wants HOST:ADDR")?;
        config = config.with_override(host, addr.parse::<SocketAddrOrIp>()?)?;
    }
    for path in &args.upstream_ca {
        config = config.with_upstream_roots_pem(&std::fs::read(path)?)?;
    }
    if let Some(path) = &args.log {
        config = config.with_log(Arc::new(JsonLinesLog::open(path)?));
    }

    let proxy = Proxy::bind(listen, config).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {}", proxy.local_addr())?;
    for (name, sentinel) in &sentinels {
        writeln!(out, "sentinel {name} {sentinel}")?;
    }
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    drop(proxy);
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("egress_proxy: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("egress_proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("egress_proxy: {msg}");
            ExitCode::FAILURE
        }
    }
}
