//! The sbx guest agent: PID 1 of a sandbox and its exec service.
//!
//! One binary serves both isolation backends. In a namespace sandbox it is PID 1 of a fresh
//! pid + mount (+ uts...) namespace and serves the exec protocol ([`sbx_exec`]) on a Unix
//! socket the launcher created and passed in (`--listen-fd`). In a microVM it is the
//! initramfs's `/init`: it loads the virtio modules in dependency order, switches to the root
//! disk and serves on a vsock port.
//!
//! As PID 1 it mounts `/proc`, `/sys`, `/dev` (a minimal tmpfs, or devtmpfs in a VM),
//! `/dev/pts`, `/dev/shm`, `/run`, `/tmp`; sets the hostname; reaps every zombie; forwards
//! SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the main command; runs startup commands;
//! and shuts down (SIGTERM, grace, SIGKILL, sync, exit or power off) on request or when the
//! main command ends ([`OnMainExit`]).
//!
//! Each exec runs in its own session (`setsid`), on a new PTY (with the requested window size
//! and resizes) or with three pipes; as a user looked up in the root's `/etc/passwd` and
//! `/etc/group` directly (no NSS), or as numeric ids; with the request's env and cwd. If the
//! host connection drops before the command ends, its process group is killed.
//!
//! # Starting the agent (a launcher's view)
//!
//! ```no_run
//! use std::os::unix::net::UnixListener;
//! use std::path::Path;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let root = Path::new("/var/lib/sbx/sandboxes/demo/rootfs");
//! // Copies the running binary (which calls `sbx_guest::run_if_agent()` first thing in
//! // `main`) and its libraries into <root>/.sbx; returns how to start it inside the root.
//! let agent = sbx_guest::install_agent(root, None)?;
//! let listener = UnixListener::bind("/var/lib/sbx/sandboxes/demo/exec.sock")?;
//! // Hand `listener` to the child as fd 3, enter the namespaces, chroot/pivot_root, then exec:
//! let argv = agent.command(["--listen-fd", "3", "--hostname", "demo"]);
//! # let _ = (argv, listener);
//! // ...and from then on:
//! let client = sbx_exec::Client::unix("/var/lib/sbx/sandboxes/demo/exec.sock");
//! let out = client.output(sbx_exec::ExecRequest::new(["hostname"]))?;
//! assert_eq!(out.stdout, b"demo\n");
//! # Ok(())
//! # }
//! ```
//!
//! # In a microVM
//!
//! The initramfs carries the agent as `/init` (a `crt-static` build, or a dynamic one with its
//! interpreter and libraries at their usual paths), busybox and the kernel modules. The kernel
//! passes everything after `--` on its command line to `/init`, e.g.
//! `rdinit=/init -- --dev devtmpfs --modules-dir /lib/modules/6.1.0-28-cloud-amd64
//! --load-module virtio_mmio --load-module virtio_blk --load-module vmw_vsock_virtio_transport
//! --load-module virtio_net --root-device /dev/vda --vsock-port 52 --poweroff
//! --net 10.77.0.2/24,10.77.0.1 --nameserver 10.77.0.1 --ca-cert /run/sbx/ca.pem`, and the
//! host connects with [`sbx_exec::HybridVsockTransport`]. The network flags run after the
//! PID-1 setup and before the startup commands ([`configure_network`], [`write_resolv_conf`],
//! [`install_ca_cert`]); a failure there is logged and the agent carries on.
//!
//! Flags: see [`USAGE`]. The agent finds itself in any binary through [`run_if_agent`]: when
//! `argv[0]` is named `sbx-guest` (as [`install_agent`] arranges), or `SBX_GUEST_AGENT=1`.
//!
//! # Security
//!
//! The agent runs as root inside the sandbox and obeys anyone who can connect to its socket;
//! the socket's directory on the host is the access control. Frames from the host are
//! size-bounded and validated; malformed input ends that connection only.

mod agent;
mod cli;
mod error;
mod exec;
mod init;
mod install;
mod modules;
mod mounts;
mod net;
mod passwd;
mod reaper;
mod session;
mod sys;

pub use agent::{run, AgentConfig, Listen, OnMainExit};
pub use cli::{
    invoked_as_agent, main_with_args, parse_args, run_if_agent, AGENT_ENV, AGENT_NAME, USAGE,
};
pub use error::{Error, Result};
pub use init::{set_hostname, standard_mounts, switch_root, DevMode, SwitchRoot};
pub use install::{install_agent, install_agent_dir, InstalledAgent, INSTALL_DIR};
pub use modules::{load_modules, module_name, ModuleIndex};
pub use mounts::{mount_all, VirtiofsMount};
pub use net::{
    configure_network, install_ca_cert, write_resolv_conf, NetSetup, CA_BUNDLE_PATH, CA_CERT_PATH,
    CA_ENV_VARS, DEFAULT_IFACE_WAIT, DEFAULT_MTU,
};
pub use passwd::{parse_groups_of, parse_passwd, PasswdEntry};
