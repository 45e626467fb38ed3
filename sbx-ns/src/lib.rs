//! # sbx-ns: the namespace sandbox backend
//!
//! Runs an sbx sandbox without hardware virtualization, for hosts where microVMs cannot run
//! (no VT-x/AMD-V, nested virtualization off, or a software `/dev/kvm` such as `kvm_pvm`).
//! **It is the weaker boundary**: the sandbox shares the host kernel. sbx says so whenever it
//! selects this backend.
//!
//! ## What is isolated
//! - **Users**: a new user namespace. Root inside is the invoking user outside; when the
//!   invoker is root, ids 1..65536 map one to one as well ([`IdMap::Auto`]). Capabilities held
//!   inside apply only to the sandbox's own namespaces.
//! - **Files**: a new mount namespace whose root is an overlay of the read-only base directory
//!   and the sandbox's own writable layer (`<state>/upper`), entered with `pivot_root`; the old
//!   root is detached. Fresh `/proc` (with `/proc/sys`, `sysrq-trigger`, `irq`, `bus`, `fs`
//!   read-only and `kcore`, `keys`, `kallsyms`, `timer_list`, `sched_debug` masked), read-only
//!   `/sys`, a tmpfs `/dev` with `null zero full random urandom tty`, its own `/dev/pts`
//!   instance and `/dev/shm`, a tmpfs `/tmp`. No host path is visible except [`Bind`]s.
//! - **Processes**: a new pid namespace (the init program is PID 1, host processes are not
//!   visible or reachable), and ipc, uts (own host name) and cgroup namespaces.
//! - **Network**: a new network namespace holding only `lo` and the TAP device `eth0`, whose
//!   descriptor the host keeps ([`Tap`], a [`FrameDevice`]). No route to the host's loopback or
//!   anything else exists unless the host forwards frames.
//! - **Privileges**: `no_new_privs` and a `nosuid` root by default (setuid binaries such as
//!   `sudo` do not elevate; [`Config::with_setuid`] lets them, for images whose user relies on
//!   `sudo`: they can then gain what root inside already has, still under the same), a
//!   capability bounding set of [`KEPT_CAPABILITIES`] (no `CAP_SYS_ADMIN`, `CAP_NET_ADMIN`,
//!   `CAP_SYS_PTRACE`, `CAP_SYS_MODULE`...), and a seccomp filter denying the kernel keyring
//!   (`keyctl`, `add_key`, `request_key`), `bpf`, `perf_event_open`, `userfaultfd`, io_uring,
//!   module and kexec calls, new namespaces (`unshare`/`clone` with namespace flags, `clone3`
//!   answers `ENOSYS`), `setns`, every mount call, `open_by_handle_at`, `TIOCSTI`, and
//!   `AF_VSOCK` sockets (vsock is not network-namespaced).
//! - **Resources**: cgroup limits for memory, CPU and process count where the host lets us
//!   (v2 or v1 controllers); [`Sandbox::limits`] says which are in force and why not.
//!
//! The host-side state (the exec socket, the TAP descriptor, the writable layer) lives in the
//! state folder and in the launcher; nothing inside can name it.
//!
//! ## What is not (versus a microVM)
//! - One kernel for host and sandbox: a kernel bug reachable through the allowed syscalls is a
//!   host compromise. A microVM has its own kernel behind KVM.
//! - Ids are the host's: when run as root, root inside *is* uid 0 on the host (in a user
//!   namespace), so every host object it can reach by path is checked against uid 0. The
//!   mount setup and the dropped `CAP_SYS_ADMIN` are what keep it from reaching any; run
//!   rootless where possible. Files it creates in the writable layer are host-root files
//!   (setuid bits included), so the state folder is made `0700`; the same holds for
//!   read-write [`Bind`]s such as the workspace, which other host users may be able to reach.
//!   Invoked by an ordinary user, everything the sandbox writes is that user's.
//! - Time, the kernel log level, kernel parameters outside the masked paths, `/sys` contents
//!   (read-only, but readable: hardware inventory, kernel version) are shared or visible.
//! - Resource limits depend on host cgroups; without them a fork bomb or memory hog hits the
//!   host's limits, not the sandbox's. Per-uid limits (`RLIMIT_NPROC`) are shared with the
//!   invoking user.
//! - By default setuid programs and file capabilities do not work inside (no_new_privs,
//!   nosuid root), so `sudo` in the image does not elevate; run commands as root through the
//!   agent, or start the sandbox with [`Config::with_setuid`]. With it, the seccomp filter is
//!   installed without no_new_privs (while the setup still holds `CAP_SYS_ADMIN` in the
//!   sandbox's user namespace) and the capability bounding set is the same.
//! - `/proc/mounts` inside shows the overlay's host paths (base, state folder) as mount
//!   options: the sandbox learns where its files live, not what else is there.
//! - `CAP_NET_ADMIN` is not kept, so the sandbox cannot change its network configuration;
//!   the launcher sets `eth0`'s address and route ([`Config::with_ipv4`]) before it drops.
//!
//! ## Using it
//! Any binary used as the helper calls [`run_if_helper`] first in `main` (the default helper
//! is the current executable; `sbx-ns-helper` is a ready-made one):
//!
//! ```no_run
//! use sbx_ns::{Config, Init, Sandbox};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     sbx_ns::run_if_helper();
//!     let init = Init::new("/bin/sh", ["-c", "echo hello from $(hostname)"]);
//!     let config = Config::new("/srv/rootfs", "/var/lib/sbx/s1", init);
//!     let mut sandbox = Sandbox::start(config)?;
//!     let exit = sandbox.wait()?;
//!     assert_eq!(exit.code(), 0);
//!     Ok(())
//! }
//! ```
//!
//! With the guest agent as PID 1 (what sbx runs), commands go through the exec protocol on
//! `<state>/exec.sock`; the agent is copied with its shared libraries into `<state>/agent` and
//! bound read-only at `/.sbx`, so any Debian or busybox root works:
//!
//! ```no_run
//! use std::time::Duration;
//! use sbx_exec::ExecRequest;
//! use sbx_ns::{AgentOptions, Config, Init, Sandbox};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     sbx_ns::run_if_helper();
//!     sbx_guest::run_if_agent();
//!     let config = Config::new("/srv/rootfs", "/var/lib/sbx/s1", Init::new("/bin/sh", [""; 0]));
//!     let sandbox = Sandbox::builder(config).agent(AgentOptions::default()).start()?;
//!     let out = sandbox.client().unwrap().output(ExecRequest::new(["id", "-u"]))?;
//!     assert_eq!(out.stdout, b"0\n");
//!     sandbox.shutdown(Duration::from_secs(5))?;
//!     Ok(())
//! }
//! ```
//!
//! `examples/ns_exec.rs` in the workspace is a complete program (streams, `-t`, exit codes).
//!
//! ## Platform
//! Linux only (x86_64 and aarch64 seccomp filters). Needs user namespaces, overlayfs in a user
//! namespace (Linux 5.11+), and `/dev/net/tun` for the network; [`host_support`] checks.
//!
//! ## How the child side works
//! The launcher does not fork and set up namespaces itself: after `fork` in a multi-threaded
//! program only async-signal-safe calls are allowed, and this setup allocates, parses and
//! talks. Instead it spawns a fresh helper process (re-exec), which does the setup as ordinary
//! single-threaded code and talks to the launcher over a `SOCK_SEQPACKET` socket: the launcher
//! moves it into cgroups, it unshares, the launcher writes its uid/gid maps, it creates the
//! TAP (sending the fd back) and forks PID 1, which builds the root and execs the init
//! program. The helper stays as the monitor: it reaps PID 1, reports its status, and kills it
//! if the launcher goes away. Descriptors for the init program travel as `SCM_RIGHTS`.

mod agent;
mod caps;
mod cgroup;
mod config;
mod error;
mod helper;
mod proto;
mod sandbox;
mod seccomp;
mod setup;
mod support;
mod tap;

pub use agent::AgentOptions;
pub use caps::KEPT_CAPABILITIES;
pub use cgroup::{LimitState, LimitsReport};
pub use config::{Bind, Config, Helper, IdMap, Init, Ipv4Config, Limits};
pub use error::{Error, Result};
pub use helper::run_if_helper;
pub use sandbox::{Exit, Sandbox, SandboxBuilder};
pub use support::{host_support, Support};
pub use tap::{FrameDevice, Tap};
