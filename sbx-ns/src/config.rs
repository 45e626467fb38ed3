//! Plain configuration of one namespace sandbox.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a namespace sandbox is built from. Build with [`Config::new`] and the `with_*` methods.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Config {
    /// The read-only base root directory (a Debian or busybox root). Never written to.
    pub rootfs: PathBuf,
    /// The sandbox's host-side state folder: `upper/` (its writable layer), `work/` (overlayfs
    /// scratch), `root/` (a mount point that is only used inside the sandbox's mount namespace).
    pub state_dir: PathBuf,
    /// The program that runs as the sandbox's PID 1.
    pub init: Init,
    /// Host paths made visible inside. Nothing else of the host is.
    pub binds: Vec<Bind>,
    /// Host name inside the sandbox (its own UTS namespace).
    pub hostname: String,
    /// cgroup limits, applied where the host lets us (see [`crate::LimitsReport`]).
    pub limits: Limits,
    /// Create the TAP device `eth0` inside and hand its file descriptor to the host.
    pub network: bool,
    /// IPv4 configuration of `eth0`, applied before the sandbox loses `CAP_NET_ADMIN`.
    /// Without it `eth0` is up with no address.
    pub ipv4: Option<Ipv4Config>,
    /// How user and group ids inside map to ids outside.
    pub id_map: IdMap,
    /// Let setuid programs (e.g. `sudo`) work inside: skip `no_new_privs`. The seccomp filter
    /// and the reduced capability bounding set still apply, so a setuid program can gain at most
    /// what root inside the sandbox already has (and the agent can already exec as root).
    /// Off by default.
    #[serde(default)]
    pub allow_setuid: bool,
    /// Which executable performs the setup. Not sent to the helper.
    #[serde(skip)]
    pub helper: Helper,
}

/// The sandbox's PID 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Init {
    /// Absolute path inside the sandbox.
    pub path: PathBuf,
    /// `argv`, including `argv[0]`.
    pub args: Vec<String>,
    /// The complete environment (nothing of the host's leaks in).
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
}

/// A host path bound into the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bind {
    /// Path on the host (file or directory).
    pub host: PathBuf,
    /// Absolute path inside the sandbox; created in the writable layer if missing.
    pub guest: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

/// Resource limits through cgroups. `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU bandwidth in CPUs (1.5 = one and a half cores).
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    pub pids: Option<u64>,
}

/// `eth0`'s IPv4 address, prefix and default gateway.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ipv4Config {
    /// The sandbox's address.
    pub address: Ipv4Addr,
    /// Network prefix length (24 for a /24).
    pub prefix_len: u8,
    /// Default route via this address, if any.
    pub gateway: Option<Ipv4Addr>,
    /// The interface's MTU; `None` keeps the TAP's default (1500).
    #[serde(default)]
    pub mtu: Option<u32>,
}

impl Ipv4Config {
    /// `address/prefix_len` with an optional default gateway, MTU 1500.
    pub fn new(address: Ipv4Addr, prefix_len: u8, gateway: Option<Ipv4Addr>) -> Self {
        Ipv4Config {
            address,
            prefix_len,
            gateway,
            mtu: None,
        }
    }

    /// Sets `eth0`'s MTU (68..=65535; the frame source at the other end must take frames of
    /// `mtu + 14` bytes).
    pub fn with_mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
}

/// How ids inside the user namespace map to host ids.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdMap {
    /// Root inside is the invoking user outside. When the invoker is root, ids 1..65536 are
    /// also mapped one to one, so images with other owners (the `agent` user, `_apt`) work;
    /// otherwise only root is mapped (a rootless process can map nothing else).
    #[default]
    Auto,
    /// Only root inside, mapped to the invoking user outside.
    InvokerOnly,
    /// [`IdMap::Auto`] for a root invoker, except that sandbox id `inside` becomes host uid
    /// `uid` / gid `gid`, and those host ids take the sandbox's id `inside` in exchange (or
    /// id 65536 when they are above the range). Files a host user owns then look like the
    /// sandbox user's own (e.g. the workspace of the user who ran `sudo sbx`), and what that
    /// sandbox user creates belongs to the host user. Host `uid` 0 (or `uid == inside`)
    /// gives the `Auto` map. Not root: as [`IdMap::InvokerOnly`].
    Swap {
        /// The id inside the sandbox (e.g. 1000 for `agent`).
        inside: u32,
        /// The host uid it maps to.
        uid: u32,
        /// The host gid it maps to.
        gid: u32,
    },
}

/// Ids a root invoker maps one to one (`0..RANGE`).
const RANGE: u32 = 65536;

impl IdMap {
    /// The `uid_map` / `gid_map` lines (`inside outside count`) for a root invoker.
    pub fn root_lines(self) -> (String, String) {
        let identity = || format!("0 0 {RANGE}\n");
        match self {
            IdMap::Swap { inside, uid, gid } if inside < RANGE => {
                let one = |host: u32| {
                    if host == 0 || host == inside {
                        return identity();
                    }
                    // Extents over inside ids: identity except `inside` and `host` trading
                    // places (or the host id going to RANGE when it is above the range).
                    let mut out = String::new();
                    let mut run = |from: u32, to: u32, count: u32| {
                        if count > 0 {
                            out.push_str(&format!("{from} {to} {count}\n"));
                        }
                    };
                    if host < RANGE {
                        let (lo, hi) = (inside.min(host), inside.max(host));
                        let other = |x: u32| if x == inside { host } else { inside };
                        run(0, 0, lo);
                        run(lo, other(lo), 1);
                        run(lo + 1, lo + 1, hi - lo - 1);
                        run(hi, other(hi), 1);
                        run(hi + 1, hi + 1, RANGE - hi - 1);
                    } else {
                        run(0, 0, inside);
                        run(inside, host, 1);
                        run(inside + 1, inside + 1, RANGE - inside - 1);
                        run(RANGE, inside, 1);
                    }
                    out
                };
                (one(uid), one(gid))
            }
            _ => (identity(), identity()),
        }
    }
}

/// Which executable does the namespace setup before becoming the sandbox's monitor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Helper {
    /// `/proc/self/exe`: the calling program must call [`crate::run_if_helper`] first in `main`.
    #[default]
    CurrentExe,
    /// A binary that calls [`crate::run_if_helper`] first, such as this crate's `sbx-ns-helper`.
    Path(PathBuf),
}

impl Init {
    /// PID 1 runs `path` with `args` (`argv[0]` is `path`), a minimal environment and `/` as cwd.
    pub fn new(
        path: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let path = path.into();
        let mut argv = vec![path.to_string_lossy().into_owned()];
        argv.extend(args.into_iter().map(Into::into));
        Init {
            path,
            args: argv,
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
                ("HOME".into(), "/root".into()),
            ],
            cwd: PathBuf::from("/"),
        }
    }

    /// Adds or replaces one environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Sets the working directory inside the sandbox.
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = cwd.into();
        self
    }
}

impl Bind {
    /// Binds `host` at `guest`.
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<PathBuf>, read_only: bool) -> Self {
        Bind {
            host: host.into(),
            guest: guest.into(),
            read_only,
        }
    }
}

impl Limits {
    /// Sets the memory limit.
    pub fn with_memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// Sets the CPU bandwidth.
    pub fn with_cpus(mut self, cpus: f64) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Sets the process limit.
    pub fn with_pids(mut self, pids: u64) -> Self {
        self.pids = Some(pids);
        self
    }
}

impl Config {
    /// A sandbox on `rootfs` with its state in `state_dir`, running `init` as PID 1, with a TAP
    /// device, no binds, no limits and the host name `sbx`.
    pub fn new(rootfs: impl Into<PathBuf>, state_dir: impl Into<PathBuf>, init: Init) -> Self {
        Config {
            rootfs: rootfs.into(),
            state_dir: state_dir.into(),
            init,
            binds: Vec::new(),
            hostname: "sbx".into(),
            limits: Limits::default(),
            network: true,
            allow_setuid: false,
            ipv4: None,
            id_map: IdMap::Auto,
            helper: Helper::CurrentExe,
        }
    }

    /// Adds a bind mount.
    pub fn with_bind(mut self, bind: Bind) -> Self {
        self.binds.push(bind);
        self
    }

    /// Sets the host name.
    pub fn with_hostname(mut self, name: impl Into<String>) -> Self {
        self.hostname = name.into();
        self
    }

    /// Sets the cgroup limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Turns the TAP device on or off.
    pub fn with_network(mut self, on: bool) -> Self {
        self.network = on;
        self
    }

    /// Lets setuid programs such as `sudo` elevate inside (see [`Config::allow_setuid`]).
    pub fn with_setuid(mut self, allow: bool) -> Self {
        self.allow_setuid = allow;
        self
    }

    /// Configures IPv4 on `eth0`.
    pub fn with_ipv4(mut self, ipv4: Ipv4Config) -> Self {
        self.ipv4 = Some(ipv4);
        self
    }

    /// Sets the id mapping.
    pub fn with_id_map(mut self, map: IdMap) -> Self {
        self.id_map = map;
        self
    }

    /// Sets the setup helper executable.
    pub fn with_helper(mut self, helper: Helper) -> Self {
        self.helper = helper;
        self
    }

    /// The writable layer: every write inside the sandbox lands here.
    pub fn upper_dir(&self) -> PathBuf {
        self.state_dir.join("upper")
    }

    pub(crate) fn work_dir(&self) -> PathBuf {
        self.state_dir.join("work")
    }

    pub(crate) fn mount_dir(&self) -> PathBuf {
        self.state_dir.join("root")
    }

    /// Checks what can be checked before spawning anything.
    pub(crate) fn validate(&self) -> Result<()> {
        for (what, p) in [("rootfs", &self.rootfs), ("state_dir", &self.state_dir)] {
            if !p.is_absolute() {
                return Err(Error::InvalidConfig(format!("{what} must be absolute")));
            }
            // overlayfs splits its options on ',' and ':' and has no reliable escaping.
            let s = p.to_string_lossy();
            if s.contains([',', ':', '\\', '\n']) {
                return Err(Error::InvalidConfig(format!(
                    "{what} must not contain ',', ':', '\\' or newlines"
                )));
            }
        }
        if !self.init.path.is_absolute() {
            return Err(Error::InvalidConfig("init path must be absolute".into()));
        }
        if self.init.args.is_empty() {
            return Err(Error::InvalidConfig("init argv must not be empty".into()));
        }
        for b in &self.binds {
            if !b.host.is_absolute() || !b.guest.is_absolute() {
                return Err(Error::InvalidConfig("bind paths must be absolute".into()));
            }
            if b.guest
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(Error::InvalidConfig(
                    "bind guest path must not contain '..'".into(),
                ));
            }
        }
        if let Some(ip) = &self.ipv4 {
            if !self.network || ip.prefix_len > 32 {
                return Err(Error::InvalidConfig(
                    "ipv4 needs the network on and a prefix of at most 32".into(),
                ));
            }
        }
        if self.hostname.is_empty() || self.hostname.len() > 64 {
            return Err(Error::InvalidConfig(
                "hostname must be 1 to 64 bytes".into(),
            ));
        }
        let strings = self
            .init
            .args
            .iter()
            .chain(self.init.env.iter().flat_map(|(k, v)| [k, v]));
        if strings.into_iter().any(|s| s.contains('\0')) {
            return Err(Error::InvalidConfig(
                "argv and env must not contain NUL".into(),
            ));
        }
        if self
            .init
            .env
            .iter()
            .any(|(k, _)| k.is_empty() || k.contains('='))
        {
            return Err(Error::InvalidConfig(
                "env names must be non-empty without '='".into(),
            ));
        }
        Ok(())
    }
}

/// `guest` relative to the sandbox root, for joining under a directory.
pub(crate) fn relative(guest: &Path) -> &Path {
    guest.strip_prefix("/").unwrap_or(guest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config::new("/base", "/state", Init::new("/bin/sh", ["-c", "true"]))
    }

    #[test]
    fn valid_config_passes() {
        base().validate().unwrap();
    }

    #[test]
    fn rejects_overlay_separators_and_relative_paths() {
        let mut c = base();
        c.rootfs = "/a,b".into();
        assert!(c.validate().is_err());
        let mut c = base();
        c.state_dir = "state".into();
        assert!(c.validate().is_err());
        let c = base().with_bind(Bind::new("/x", "/../etc", true));
        assert!(c.validate().is_err());
    }

    #[test]
    fn init_argv0_is_path_and_env_replaces() {
        let i = Init::new("/bin/sh", ["-c", "id"]).with_env("HOME", "/tmp");
        assert_eq!(i.args, ["/bin/sh", "-c", "id"]);
        assert_eq!(i.env.iter().filter(|(k, _)| k == "HOME").count(), 1);
        assert!(i.env.contains(&("HOME".into(), "/tmp".into())));
    }
}

#[cfg(test)]
mod id_map_tests {
    use super::IdMap;

    #[test]
    fn swap_trades_one_id_pair_and_keeps_the_rest() {
        let auto = ("0 0 65536\n".to_owned(), "0 0 65536\n".to_owned());
        assert_eq!(IdMap::Auto.root_lines(), auto);
        let (u, g) = IdMap::Swap {
            inside: 1000,
            uid: 4242,
            gid: 100,
        }
        .root_lines();
        assert_eq!(
            u,
            "0 0 1000\n1000 4242 1\n1001 1001 3241\n4242 1000 1\n4243 4243 61293\n"
        );
        assert_eq!(
            g,
            "0 0 100\n100 1000 1\n101 101 899\n1000 100 1\n1001 1001 64535\n"
        );
        let (u, _) = IdMap::Swap {
            inside: 1000,
            uid: 200000,
            gid: 1000,
        }
        .root_lines();
        assert_eq!(
            u,
            "0 0 1000\n1000 200000 1\n1001 1001 64535\n65536 1000 1\n"
        );
        for host in [0, 1000] {
            let m = IdMap::Swap {
                inside: 1000,
                uid: host,
                gid: host,
            };
            assert_eq!(m.root_lines(), auto, "{host}");
        }
        // Every map covers each inside and outside id at most once.
        let m = IdMap::Swap {
            inside: 1000,
            uid: 1001,
            gid: 65535,
        };
        for lines in [m.root_lines().0, m.root_lines().1] {
            let mut inside = std::collections::HashSet::new();
            let mut outside = std::collections::HashSet::new();
            for l in lines.lines() {
                let v: Vec<u32> = l.split(' ').map(|x| x.parse().unwrap()).collect();
                for k in 0..v[2] {
                    assert!(
                        inside.insert(v[0] + k) && outside.insert(v[1] + k),
                        "{lines}"
                    );
                }
            }
            assert!(lines.lines().count() <= 5);
        }
    }
}
