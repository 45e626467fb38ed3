//! A sandbox's network: sbx-net's userspace stack behind the backend's frame device (the
//! namespace backend's TAP, the microVM's virtio-net socket), every flow handed to the
//! sandbox's own proxy, which enforces the effective policy, injects credentials on the
//! `forward` path and writes `policy.log`.
//!
//! The guest sees one interface with [`GUEST`]/24, the gateway [`GATEWAY`] answering DNS,
//! and the explicit proxy on [`GATEWAY`]:[`PROXY_PORT`] in its `HTTP(S)_PROXY` variables.
//! The policy files are polled while the sandbox runs, so `sbx policy allow|deny|rm|set-default`
//! apply to the next connection.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sbx_net::{
    CertificateAuthority, Credential, CredentialProvider, JsonLinesLog, NetStack, NetStackHandle,
    Proxy, ProxyConfig, SocketAddrOrIp, StackConfig,
};
use sbx_secrets::secrecy::SecretString;

use super::config::{Backend, SandboxConfig};
use super::state::SandboxDir;

/// The guest's address.
pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The gateway: the userspace stack itself (DNS, explicit proxy).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The guest network's prefix length.
pub const PREFIX_LEN: u8 = 24;
/// The explicit proxy's port on the gateway.
pub const PROXY_PORT: u16 = 3128;
/// The guest's MAC address (microVM).
pub const GUEST_MAC: [u8; 6] = [0x02, 0x5b, 0x78, 0x00, 0x00, 0x02];
/// The namespace backend's link MTU: a TAP takes large frames, and at pasta's default the
/// stack moves ~8x the bytes per second of MTU 1500 (`benches/benches/netstack.rs`).
pub const TAP_MTU: u32 = 65520;
/// The microVM's link MTU (virtio-net without the MTU feature or offloads).
pub const VIRTIO_MTU: u32 = 1500;

/// The guest link's MTU on `backend`.
pub fn link_mtu(backend: Backend) -> u32 {
    match backend {
        Backend::Namespace => TAP_MTU,
        Backend::Microvm => VIRTIO_MTU,
    }
}

/// Where the sandbox CA appears in the guest (read-only).
pub const CA_GUEST_PATH: &str = "/etc/sbx/ca.pem";
/// How often the policy files are checked for changes.
const POLICY_POLL: Duration = Duration::from_millis(250);

/// `SBX_NET_RESOLVE`: `host=IP[:PORT]` overrides, comma separated, like curl's `--resolve`
/// (names that should reach a host-local service, e.g. a registry mirror; the tests' upstreams).
pub const RESOLVE_ENV: &str = "SBX_NET_RESOLVE";
/// `SBX_NET_UPSTREAM_CA`: a PEM file of extra roots trusted for upstream TLS (a corporate CA).
pub const UPSTREAM_CA_ENV: &str = "SBX_NET_UPSTREAM_CA";

/// The variables every process in the guest gets: the explicit proxy and the trust store.
pub fn guest_env() -> Vec<(String, String)> {
    let proxy = format!("http://{GATEWAY}:{PROXY_PORT}");
    let no_proxy = "localhost,127.0.0.1,::1".to_owned();
    let bundle = sbx_guest::CA_BUNDLE_PATH.to_owned();
    vec![
        ("HTTP_PROXY".into(), proxy.clone()),
        ("HTTPS_PROXY".into(), proxy.clone()),
        ("http_proxy".into(), proxy.clone()),
        ("https_proxy".into(), proxy),
        ("NO_PROXY".into(), no_proxy.clone()),
        ("no_proxy".into(), no_proxy),
        ("SSL_CERT_FILE".into(), bundle.clone()),
        ("REQUESTS_CA_BUNDLE".into(), bundle.clone()),
        ("CURL_CA_BUNDLE".into(), bundle.clone()),
        ("GIT_SSL_CAINFO".into(), bundle),
        ("NODE_EXTRA_CA_CERTS".into(), sbx_guest::CA_CERT_PATH.into()),
    ]
}

/// Agent flags that set up the guest side: name server, the CA in the trust store, the
/// variables; `with_interface` also brings up `eth0` (the microVM; sbx-ns configures the TAP).
pub fn agent_args(with_interface: bool) -> Vec<String> {
    let mut args = Vec::new();
    if with_interface {
        args.push("--net".into());
        args.push(format!("{GUEST}/{PREFIX_LEN},{GATEWAY}"));
    }
    args.push("--nameserver".into());
    args.push(GATEWAY.to_string());
    if !with_interface {
        // The namespace backend binds the CA file in; a microVM gets it by exec after boot.
        args.push("--ca-cert".into());
        args.push(CA_GUEST_PATH.into());
    }
    for (k, v) in guest_env() {
        args.push("--env".into());
        args.push(format!("{k}={v}"));
    }
    args
}

/// The sandbox's CA (created on first use, kept in `<sandbox>/ca/`).
pub fn sandbox_ca(dir: &SandboxDir) -> anyhow::Result<Arc<CertificateAuthority>> {
    let ca_dir = ca_dir(dir);
    let ca = CertificateAuthority::load_or_create(&ca_dir)
        .with_context(|| format!("loading the sandbox CA in {}", ca_dir.display()))?;
    Ok(Arc::new(ca))
}

/// `<sandbox>/ca/`.
pub fn ca_dir(dir: &SandboxDir) -> PathBuf {
    dir.dir.join("ca")
}

/// `<sandbox>/ca/ca.pem`: the certificate only (bound into the namespace sandbox).
pub fn ca_cert_file(dir: &SandboxDir) -> PathBuf {
    ca_dir(dir).join("ca.pem")
}

/// `<sandbox>/policy.log`.
pub fn policy_log_path(dir: &SandboxDir) -> PathBuf {
    dir.dir.join("policy.log")
}

/// A shell script (run as root in the guest, the PEM in `$SBX_CA_PEM`) that installs the CA where
/// the agent's `--ca-cert` would: for a microVM, whose disk the host does not touch.
pub const INSTALL_CA_SCRIPT: &str = r#"set -e
pem="$SBX_CA_PEM"
mkdir -p /etc/sbx /usr/local/share/ca-certificates
printf '%s\n' "$pem" > /etc/sbx/ca.pem
printf '%s\n' "$pem" > /usr/local/share/ca-certificates/sbx-sandbox-ca.crt
b=/etc/ssl/certs/ca-certificates.crt
if [ -f "$b" ] && ! grep -qF "$(printf '%s\n' "$pem" | sed -n 2p)" "$b"; then
  printf '%s\n' "$pem" >> "$b"
fi
"#;

/// The running network: the stack, the proxy and the policy watcher. Dropping it stops all.
pub struct Network {
    stack: NetStackHandle,
    proxy: Arc<Proxy>,
    watcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("stack", &self.stack.stats())
            .finish_non_exhaustive()
    }
}

impl Network {
    /// The sandbox's proxy.
    #[allow(dead_code)]
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Secrets as sbx-net's credential source: values are read from the keychain when a request
/// to a bound host needs them, never stored here.
struct KeychainCredentials(sbx_secrets::SandboxSecrets);

impl CredentialProvider for KeychainCredentials {
    fn secret(&self, name: &str) -> Option<SecretString> {
        self.0.secret(name)
    }
}

/// Starts the stack on `frame_fd` with the sandbox's proxy, on the runtime of `rt`.
pub fn start(
    rt: &tokio::runtime::Handle,
    data_dir: &Path,
    cfg: &SandboxConfig,
    dir: &SandboxDir,
    ca: Arc<CertificateAuthority>,
    frame_fd: OwnedFd,
) -> anyhow::Result<Network> {
    let kit_rules = crate::policy_store::sandbox_kit_rules(data_dir, &cfg.name)?;
    let policy = crate::policy_store::effective_policy(data_dir, Some(&cfg.name), &kit_rules)
        .context("reading the sandbox's network policy")?;
    let log_path = policy_log_path(dir);
    let log = JsonLinesLog::open(&log_path)
        .with_context(|| format!("opening the policy log {}", log_path.display()))?;
    let mut config = ProxyConfig::new(ca)
        .with_sandbox(&cfg.name)
        .with_policy(policy)
        .with_log(Arc::new(log));
    config = with_credentials(config, cfg)?;
    config = with_overrides(
        config,
        std::env::var(RESOLVE_ENV).ok().as_deref(),
        std::env::var_os(UPSTREAM_CA_ENV)
            .map(PathBuf::from)
            .as_deref(),
    )?;
    let proxy = Arc::new(Proxy::new(config).context("starting the sandbox's proxy")?);
    let _guard = rt.enter();
    let stack_config = StackConfig::default()
        .with_addresses(GATEWAY, GUEST, PREFIX_LEN)
        .with_proxy_port(PROXY_PORT)
        .with_mtu(link_mtu(cfg.backend) as usize);
    let stack = NetStack::spawn(stack_config, frame_fd, proxy.clone())
        .context("starting the userspace network stack")?;
    let watcher = rt.spawn(watch_policy(
        data_dir.to_owned(),
        cfg.name.clone(),
        kit_rules,
        proxy.clone(),
    ));
    Ok(Network {
        stack,
        proxy,
        watcher,
    })
}

fn with_credentials(mut config: ProxyConfig, cfg: &SandboxConfig) -> anyhow::Result<ProxyConfig> {
    if cfg.sentinels.is_empty() {
        return Ok(config);
    }
    let secrets = match crate::commands::secret::open_secrets() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            // The sandbox still runs; its requests carry the placeholders unreplaced.
            tracing::warn!("secrets are not injected: the secret store did not open: {e:#}");
            log_line(&format!(
                "warning: credentials are not injected: the secret store did not open: {e:#}"
            ));
            return Ok(config);
        }
    };
    let name = sbx_secrets::SandboxName::new(&cfg.name)?;
    for s in &cfg.sentinels {
        let hosts = credential_hosts(&secrets, &name, &s.name);
        if hosts.is_empty() {
            tracing::info!(credential = %s.name, "bound to no host: never injected");
            continue;
        }
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let sentinel = sbx_net::Sentinel::new(s.sentinel.clone())
            .with_context(|| format!("the placeholder of {}", s.name))?;
        match Credential::new(&s.name, sentinel, &refs) {
            Ok(c) => config = config.with_credential(c),
            Err(e) => log_line(&format!("warning: credential {} skipped: {e}", s.name)),
        }
    }
    Ok(config.with_provider(Arc::new(KeychainCredentials(
        sbx_secrets::SandboxSecrets::new(secrets, name),
    ))))
}

/// The hosts a secret may be sent to: a custom secret's own hosts (sandbox scope first), else
/// the built-in service's.
fn credential_hosts(
    secrets: &sbx_secrets::Secrets,
    sandbox: &sbx_secrets::SandboxName,
    name: &str,
) -> Vec<String> {
    if let Ok(entries) = secrets.effective(sandbox) {
        if let Some(e) = entries.iter().find(|e| e.name == name) {
            return e.hosts();
        }
    }
    sbx_secrets::Service::get(name)
        .map(|s| s.hosts.iter().map(|h| h.to_string()).collect())
        .unwrap_or_default()
}

/// Applies [`RESOLVE_ENV`]'s `resolve` overrides and [`UPSTREAM_CA_ENV`]'s extra roots.
fn with_overrides(
    mut config: ProxyConfig,
    resolve: Option<&str>,
    upstream_ca: Option<&Path>,
) -> anyhow::Result<ProxyConfig> {
    if let Some(spec) = resolve {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, target) = item.split_once('=').with_context(|| {
                format!("{RESOLVE_ENV}: {item:?} is not HOST=IP or HOST=IP:PORT")
            })?;
            let target: SocketAddrOrIp = target
                .parse()
                .with_context(|| format!("{RESOLVE_ENV}: {item:?}"))?;
            config = config
                .with_override(host, target)
                .with_context(|| format!("{RESOLVE_ENV}: {item:?}"))?;
        }
    }
    if let Some(path) = upstream_ca.filter(|p| !p.as_os_str().is_empty()) {
        let pem = std::fs::read(path)
            .with_context(|| format!("{UPSTREAM_CA_ENV}: reading {}", path.display()))?;
        config = config
            .with_upstream_roots_pem(&pem)
            .with_context(|| format!("{UPSTREAM_CA_ENV}: {}", path.display()))?;
    }
    Ok(config)
}

/// Re-reads the effective policy whenever a policy file changes and swaps it in.
async fn watch_policy(
    data_dir: PathBuf,
    name: String,
    kit_rules: Vec<sbx_kit::NetworkRule>,
    proxy: Arc<Proxy>,
) {
    let files = {
        let mut f = crate::policy_store::policy_files(&data_dir, Some(&name));
        f.push(crate::policy_store::config_path(&data_dir));
        f
    };
    let stamp = |files: &[PathBuf]| -> Vec<Option<(SystemTime, u64)>> {
        files
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    };
    let mut last = stamp(&files);
    loop {
        tokio::time::sleep(POLICY_POLL).await;
        let now = stamp(&files);
        if now == last {
            continue;
        }
        last = now;
        match crate::policy_store::effective_policy(&data_dir, Some(&name), &kit_rules) {
            Ok(p) => {
                proxy.set_policy(p);
                log_line("policy changed: applied to new connections");
            }
            // A half-edited or broken file keeps the running policy (never fails open).
            Err(e) => log_line(&format!(
                "warning: policy not applied, keeping the old one: {e:#}"
            )),
        }
    }
}

/// The proxy's address as the guest sees it.
#[allow(dead_code)]
pub fn proxy_addr() -> SocketAddr {
    SocketAddr::from((GATEWAY, PROXY_PORT))
}

#[allow(clippy::print_stderr)]
fn log_line(line: &str) {
    eprintln!("[{}] {line}", super::state::now_unix());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_env_points_at_the_gateway_proxy_and_the_bundle() {
        let env = guest_env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTPS_PROXY"), Some("http://10.77.0.1:3128"));
        assert_eq!(get("http_proxy"), Some("http://10.77.0.1:3128"));
        assert_eq!(get("NO_PROXY"), Some("localhost,127.0.0.1,::1"));
        assert_eq!(
            get("SSL_CERT_FILE"),
            Some("/etc/ssl/certs/ca-certificates.crt")
        );
    }

    #[test]
    fn agent_args_configure_the_interface_only_for_a_microvm() {
        let vm = agent_args(true);
        assert_eq!(vm[..2], ["--net", "10.77.0.2/24,10.77.0.1"]);
        assert!(!vm.iter().any(|a| a == "--ca-cert"));
        let ns = agent_args(false);
        assert!(!ns.iter().any(|a| a == "--net"));
        let i = ns.iter().position(|a| a == "--ca-cert").unwrap();
        assert_eq!(ns[i + 1], CA_GUEST_PATH);
        assert!(ns
            .windows(2)
            .any(|w| w[0] == "--env" && w[1] == "HTTPS_PROXY=http://10.77.0.1:3128"));
    }

    #[test]
    fn resolve_overrides_are_parsed_and_bad_ones_say_what_is_wrong() {
        let ca = Arc::new(CertificateAuthority::generate().unwrap());
        let spec = "a.test=127.0.0.1:8443, b.test=127.0.0.2";
        let c = with_overrides(ProxyConfig::new(ca.clone()), Some(spec), None).unwrap();
        assert_eq!(c.overrides.len(), 2);
        let e = with_overrides(ProxyConfig::new(ca.clone()), Some("a.test"), None).unwrap_err();
        assert!(format!("{e:#}").contains("HOST=IP"), "{e:#}");
        let e = with_overrides(
            ProxyConfig::new(ca),
            None,
            Some(Path::new("/nonexistent.pem")),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("SBX_NET_UPSTREAM_CA"), "{e:#}");
    }
}
