//! Command-line flags, logging, and the multi-call entry points.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::{self, AgentConfig, Listen, OnMainExit};
use crate::error::{Error, Result};
use crate::init::{DevMode, SwitchRoot};
use crate::net::NetSetup;

/// The name under which any binary acts as the agent (`argv[0]`'s file name).
pub const AGENT_NAME: &str = "sbx-guest";
/// Set to `1` to make a binary calling [`run_if_agent`] act as the agent whatever its name.
pub const AGENT_ENV: &str = "SBX_GUEST_AGENT";

/// Help text for the flags.
pub const USAGE: &str = "\
sbx-guest [OPTIONS] [-- MAIN_COMMAND [ARGS...]]

  --listen PATH          serve exec requests on a new Unix socket at PATH (repeatable)
  --listen-fd N          serve on inherited listening socket fd N (repeatable)
  --vsock-port P         serve on AF_VSOCK port P (microVM; repeatable)
  --init | --no-init     PID-1 setup (mounts, hostname); default: on when PID 1
  --dev MODE             /dev: minimal (default), devtmpfs (microVM), keep
  --hostname NAME        set the hostname
  --startup CMD          run `/bin/sh -c CMD` before serving (repeatable, in order)
  --env KEY=VALUE        environment for every command (repeatable)
  --on-main-exit WHAT    shutdown (default) or stay
  --poweroff             power off at shutdown (microVM PID 1)
  --modules-dir DIR      /lib/modules/<version> with modules.dep
  --load-module NAME     load a kernel module and its dependencies (repeatable)
  --root-device DEV      switch_root to DEV after loading modules
  --root-fstype TYPE     filesystem of --root-device (default ext4)
  --shutdown-grace-ms N  SIGTERM-to-SIGKILL delay at shutdown (default 5000)
  --net ADDR/PREFIX[,GW] bring up lo and the interface with this IPv4 address, MTU 1500,
                         and a default route through GW (waits up to 5 s for the interface)
  --net-if NAME          the interface --net configures (default eth0)
  --nameserver IP        write /etc/resolv.conf naming IP
  --ca-cert PATH         install this PEM CA into the trust store and point SSL_CERT_FILE,
                         NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE, GIT_SSL_CAINFO and
                         CURL_CA_BUNDLE at it for every command
  --mount-virtiofs TAG:PATH[:ro]
                         mount the virtio-fs share TAG at PATH (after the root switch)
  --log LEVEL            error, warn (default), info, debug, trace
";

/// Parses agent flags (without `argv[0]`). Returns the config and the log level.
pub fn parse_args<I>(args: I) -> Result<(AgentConfig, tracing::Level)>
where
    I: IntoIterator<Item = OsString>,
{
    let mut c = AgentConfig::default();
    let mut level = tracing::Level::WARN;
    let mut root_device: Option<PathBuf> = None;
    let mut root_fstype = "ext4".to_owned();
    let mut net_if: Option<String> = None;
    let mut it = args.into_iter();
    let usage = |m: String| Error::Usage(m);
    while let Some(a) = it.next() {
        let flag = a.to_string_lossy().into_owned();
        if flag == "--" {
            c.main = it.by_ref().collect();
            break;
        }
        let mut value = || {
            it.next()
                .ok_or_else(|| usage(format!("{flag} needs a value")))
        };
        let text = |v: OsString| {
            v.into_string()
                .map_err(|_| usage(format!("{flag}: not UTF-8")))
        };
        let num = |v: OsString| -> Result<u64> {
            v.to_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| usage(format!("{flag}: not a number")))
        };
        match flag.as_str() {
            "--listen" => c.listen.push(Listen::Path(value()?.into())),
            "--listen-fd" => {
                let n = num(value()?)?;
                let fd = i32::try_from(n)
                    .ok()
                    .filter(|&f| f > 2)
                    .ok_or_else(|| usage("--listen-fd must be above 2".into()))?;
                c.listen.push(Listen::Fd(fd));
            }
            "--vsock-port" => {
                let p = u32::try_from(num(value()?)?)
                    .map_err(|_| usage("--vsock-port too large".into()))?;
                c.listen.push(Listen::Vsock(p));
            }
            "--init" => c.init = true,
            "--no-init" => c.init = false,
            "--dev" => {
                c.dev = match text(value()?)?.as_str() {
                    "minimal" => DevMode::Minimal,
                    "devtmpfs" => DevMode::Devtmpfs,
                    "keep" => DevMode::Keep,
                    other => return Err(usage(format!("--dev {other}: unknown mode"))),
                }
            }
            "--hostname" => c.hostname = Some(text(value()?)?),
            "--startup" => c.startup.push(text(value()?)?),
            "--env" => {
                let v = value()?;
                let b = std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec();
                let eq = b
                    .iter()
                    .position(|&x| x == b'=')
                    .filter(|&p| p > 0)
                    .ok_or_else(|| usage("--env needs KEY=VALUE".into()))?;
                use std::os::unix::ffi::OsStringExt;
                c.env.push((
                    OsString::from_vec(b[..eq].to_vec()),
                    OsString::from_vec(b[eq + 1..].to_vec()),
                ));
            }
            "--on-main-exit" => {
                c.on_main_exit = match text(value()?)?.as_str() {
                    "shutdown" => OnMainExit::Shutdown,
                    "stay" => OnMainExit::Stay,
                    other => return Err(usage(format!("--on-main-exit {other}: unknown"))),
                }
            }
            "--poweroff" => c.power_off = true,
            "--modules-dir" => c.modules_dir = Some(value()?.into()),
            "--load-module" => c.modules.push(text(value()?)?),
            "--root-device" => root_device = Some(value()?.into()),
            "--root-fstype" => root_fstype = text(value()?)?,
            "--net" => c.net = Some(NetSetup::parse(&text(value()?)?)?),
            "--net-if" => net_if = Some(text(value()?)?),
            "--nameserver" => {
                c.nameserver = Some(
                    text(value()?)?
                        .parse()
                        .map_err(|_| usage("--nameserver: not an IP address".into()))?,
                )
            }
            "--ca-cert" => c.ca_cert = Some(value()?.into()),
            "--mount-virtiofs" => c
                .virtiofs
                .push(crate::mounts::VirtiofsMount::parse(&text(value()?)?)?),
            "--shutdown-grace-ms" => c.shutdown_grace = Duration::from_millis(num(value()?)?),
            "--log" => {
                level = text(value()?)?
                    .parse()
                    .map_err(|_| usage("--log: unknown level".into()))?
            }
            "-h" | "--help" => return Err(usage(USAGE.to_owned())),
            other => return Err(usage(format!("unknown flag {other}\n\n{USAGE}"))),
        }
    }
    match (net_if, c.net.as_mut()) {
        (Some(name), Some(net)) => net.iface = name,
        (Some(_), None) => return Err(usage("--net-if needs --net".into())),
        (None, _) => {}
    }
    if let Some(dev) = root_device {
        c.switch_root = Some(SwitchRoot::new(dev, root_fstype));
    }
    Ok((c, level))
}

/// Runs the agent with these flags (without `argv[0]`) and returns the process exit code:
/// the main command's, 0 after a shutdown request, 1 on an agent error, 2 on bad flags.
pub fn main_with_args<I>(args: I) -> i32
where
    I: IntoIterator<Item = OsString>,
{
    let (config, level) = match parse_args(args) {
        Ok(x) => x,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("sbx-guest: {e}");
            }
            return 2;
        }
    };
    // The agent is a program of its own even when it lives inside another binary, so it
    // installs its own log subscriber (stderr, i.e. the console in a VM).
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    match agent::run(config) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{}", error_chain(&e));
            1
        }
    }
}

/// `e` and its causes, joined with `: `.
pub(crate) fn error_chain(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Whether this process was started as the agent: `argv[0]` named [`AGENT_NAME`],
/// [`AGENT_ENV`]`=1`, or PID 1 started as `init` (an initramfs `/init`).
pub fn invoked_as_agent() -> bool {
    if std::env::var_os(AGENT_ENV).is_some_and(|v| v == "1") {
        return true;
    }
    let Some(argv0) = std::env::args_os().next() else {
        return false;
    };
    let name = Path::new(&argv0).file_name().unwrap_or(OsStr::new(""));
    name == AGENT_NAME || (crate::sys::getpid() == 1 && name == "init")
}

/// The multi-call hook: call first thing in `main` of any binary (the `sbx` CLI, test
/// harnesses, benches). When the process was started as the agent ([`invoked_as_agent`]), runs
/// the agent and exits; otherwise returns at once.
pub fn run_if_agent() {
    if invoked_as_agent() {
        std::process::exit(main_with_args(std::env::args_os().skip(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<(AgentConfig, tracing::Level)> {
        parse_args(a.iter().map(OsString::from))
    }

    #[test]
    fn flags() {
        let (c, l) = parse(&[
            "--listen-fd",
            "3",
            "--listen",
            "/run/x.sock",
            "--vsock-port",
            "52",
            "--no-init",
            "--dev",
            "keep",
            "--hostname",
            "box",
            "--startup",
            "echo hi",
            "--env",
            "A=b=c",
            "--on-main-exit",
            "stay",
            "--log",
            "debug",
            "--",
            "sleep",
            "--listen",
        ])
        .unwrap();
        assert_eq!(
            c.listen,
            vec![
                Listen::Fd(3),
                Listen::Path("/run/x.sock".into()),
                Listen::Vsock(52)
            ]
        );
        assert!(!c.init);
        assert_eq!(c.dev, DevMode::Keep);
        assert_eq!(c.hostname.as_deref(), Some("box"));
        assert_eq!(c.startup, vec!["echo hi"]);
        assert_eq!(c.env, vec![("A".into(), "b=c".into())]);
        assert_eq!(c.on_main_exit, OnMainExit::Stay);
        assert_eq!(c.main, vec![OsString::from("sleep"), "--listen".into()]);
        assert_eq!(l, tracing::Level::DEBUG);
    }

    #[test]
    fn bad_flags() {
        for a in [
            &["--listen-fd"][..],
            &["--listen-fd", "1"],
            &["--listen-fd", "x"],
            &["--dev", "weird"],
            &["--env", "=x"],
            &["--bogus"],
        ] {
            assert!(matches!(parse(a), Err(Error::Usage(_))), "{a:?}");
        }
    }

    #[test]
    fn network_flags() {
        let (c, _) = parse(&[
            "--net",
            "10.77.0.2/24,10.77.0.1",
            "--net-if",
            "ens3",
            "--nameserver",
            "10.77.0.1",
            "--ca-cert",
            "/run/sbx/ca.pem",
        ])
        .unwrap();
        let net = c.net.unwrap();
        assert_eq!(net.iface, "ens3");
        assert_eq!(net.address, std::net::Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(net.gateway, Some(std::net::Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(c.nameserver, Some("10.77.0.1".parse().unwrap()));
        assert_eq!(c.ca_cert, Some(PathBuf::from("/run/sbx/ca.pem")));
        let (c, _) = parse(&[]).unwrap();
        assert!(c.net.is_none() && c.nameserver.is_none() && c.ca_cert.is_none());
        for a in [
            &["--net", "10.77.0.2"][..],
            &["--net", "10.77.0.2/24,10.9.0.1"],
            &["--net-if", "eth1"],
            &["--nameserver", "gateway"],
            &["--net"],
        ] {
            assert!(matches!(parse(a), Err(Error::Usage(_))), "{a:?}");
        }
    }

    #[test]
    fn root_device_makes_switch_root() {
        let (c, _) = parse(&["--root-device", "/dev/vda", "--root-fstype", "ext4"]).unwrap();
        assert_eq!(c.switch_root, Some(SwitchRoot::new("/dev/vda", "ext4")));
    }
}
