//! Running `virtiofsd`, the vhost-user backend of a virtio-fs device, for one shared directory.
//!
//! [`Virtiofsd::spawn`] starts the daemon with the flags sbx uses (below), waits until its
//! socket accepts connections and kills it when dropped. Pass [`Virtiofsd::socket_path`] to
//! [`FsConfig::new`](crate::devices::virtio::FsConfig::new).
//!
//! # Flags and why
//! - `--sandbox namespace` (default [`SandboxMode::Namespace`]): the daemon pivots into the
//!   shared directory inside new mount/pid/net namespaces (a user namespace too when not
//!   root). That is the second wall: virtiofsd itself resolves every name with
//!   `openat2(RESOLVE_IN_ROOT)` relative to the parent and `O_NOFOLLOW` (Linux 5.6+), so `..`
//!   and symlinks do not leave the directory even unsandboxed, but the namespace also covers
//!   older kernels and daemon bugs. Symlinks are returned to the guest as links, which the
//!   guest resolves in its own tree. `--sandbox none` is for debugging.
//! - `--cache auto` (default [`CacheMode::Auto`]): the guest caches metadata and data for one
//!   second and revalidates on open, so host edits show up promptly without `never`'s cost.
//! - `--announce-submounts`: mount points inside the directory get their own device number in
//!   the guest, so inode numbers from different host file systems do not collide.
//! - no `--xattr`: extended attributes (and with them SELinux labels and ACLs of the host) are
//!   not passed through.
//! - `--translate-uid map:<guest uid>:<host uid>:1` and the same for gids: the guest's agent
//!   user (uid/gid 1000 by default) sees the invoking host user's files as its own, and what it
//!   creates is owned by the host user (see [`VirtiofsdConfig::id_mapping`]).
//! - `--readonly` for `PATH:ro` mounts.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the `virtiofsd` binary to use.
pub const VIRTIOFSD_ENV: &str = "SBX_VIRTIOFSD";

/// How to install `virtiofsd` when it is missing.
pub const VIRTIOFSD_INSTALL_HINT: &str =
    "sbx needs the Rust virtiofsd with --translate-uid (1.14.0 is tested); install it with \
     `apt-get install libseccomp-dev libcap-ng-dev pkg-config && cargo install virtiofsd \
     --locked` (or run scripts/install-deps), or point SBX_VIRTIOFSD at the binary";

/// The guest uid/gid of sbx's `agent` user.
pub const AGENT_ID: u32 = 1000;

/// Errors starting `virtiofsd`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VirtiofsdError {
    /// No `virtiofsd` binary was found.
    #[error("virtiofsd not found; {VIRTIOFSD_INSTALL_HINT}")]
    NotFound,
    /// The shared directory is missing or not a directory.
    #[error("shared directory {} is not a directory", path.display())]
    SharedDir {
        /// The path.
        path: PathBuf,
    },
    /// The process could not be started.
    #[error("cannot start {}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon exited before its socket was ready.
    #[error("virtiofsd exited before listening ({status}): {stderr}")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// The socket did not appear in time.
    #[error("virtiofsd did not listen on {} within {timeout:?}", path.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
}

/// How much the guest may cache (`virtiofsd --cache`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheMode {
    /// No caching: every access goes to the host (slowest, always coherent).
    Never,
    /// Cache metadata only.
    Metadata,
    /// Cache with a short timeout and revalidate on open (sbx's default).
    #[default]
    Auto,
    /// Cache without expiry: fastest, only when the host does not change the files.
    Always,
}

impl CacheMode {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Metadata => "metadata",
            Self::Auto => "auto",
            Self::Always => "always",
        }
    }
}

/// How the daemon isolates itself (`virtiofsd --sandbox`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SandboxMode {
    /// New namespaces with the shared directory as the root (sbx's default; works unprivileged
    /// through a user namespace).
    #[default]
    Namespace,
    /// `chroot` into the shared directory (root only).
    Chroot,
    /// No isolation beyond virtiofsd's own path resolution. Debugging only.
    None,
}

impl SandboxMode {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::Chroot => "chroot",
            Self::None => "none",
        }
    }
}

/// One guest id mapped to one host id, both ways (`--translate-uid map:GUEST:HOST:1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMap {
    /// The id inside the guest.
    pub guest: u32,
    /// The id on the host.
    pub host: u32,
}

/// How to run `virtiofsd` for one shared directory.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtiofsdConfig {
    /// The directory the guest sees.
    pub shared_dir: PathBuf,
    /// Where the vhost-user socket is created (a stale socket there is removed).
    pub socket_path: PathBuf,
    /// The binary; `None` searches with [`find_virtiofsd`].
    pub binary: Option<PathBuf>,
    /// Refuse all guest writes.
    pub read_only: bool,
    /// Guest caching.
    pub cache: CacheMode,
    /// Daemon isolation.
    pub sandbox: SandboxMode,
    /// User id mapping; `None` passes ids through unchanged.
    pub uid_map: Option<IdMap>,
    /// Group id mapping; `None` passes ids through unchanged.
    pub gid_map: Option<IdMap>,
    /// Log level passed to `--log-level` (`error`, `warn`, `info`, `debug`).
    pub log_level: &'static str,
    /// How long to wait for the socket.
    pub startup_timeout: Duration,
}

impl VirtiofsdConfig {
    /// Share `shared_dir` over a socket at `socket_path`, with sbx's defaults: read-write,
    /// `--cache auto`, `--sandbox namespace`, guest uid/gid 1000 mapped to the current
    /// process's effective uid/gid.
    pub fn new(shared_dir: impl Into<PathBuf>, socket_path: impl Into<PathBuf>) -> Self {
        Self {
            shared_dir: shared_dir.into(),
            socket_path: socket_path.into(),
            binary: None,
            read_only: false,
            cache: CacheMode::default(),
            sandbox: SandboxMode::default(),
            uid_map: None,
            gid_map: None,
            log_level: "error",
            startup_timeout: Duration::from_secs(10),
        }
        .id_mapping(AGENT_ID, current_uid(), AGENT_ID, current_gid())
    }

    /// Use this `virtiofsd` binary.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Share read-only.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Guest caching mode.
    pub fn cache(mut self, cache: CacheMode) -> Self {
        self.cache = cache;
        self
    }

    /// Daemon isolation mode.
    pub fn sandbox(mut self, sandbox: SandboxMode) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// Map guest uid `guest_uid` to host uid `host_uid` and guest gid `guest_gid` to host gid
    /// `host_gid`, both ways: host files of `host_uid` appear owned by `guest_uid`, and files
    /// `guest_uid` creates are owned by `host_uid`. (When the daemon is not root it cannot
    /// create files owned by anyone but itself anyway.)
    pub fn id_mapping(
        mut self,
        guest_uid: u32,
        host_uid: u32,
        guest_gid: u32,
        host_gid: u32,
    ) -> Self {
        self.uid_map = Some(IdMap {
            guest: guest_uid,
            host: host_uid,
        });
        self.gid_map = Some(IdMap {
            guest: guest_gid,
            host: host_gid,
        });
        self
    }

    /// Pass ids through unchanged.
    pub fn no_id_mapping(mut self) -> Self {
        self.uid_map = None;
        self.gid_map = None;
        self
    }

    /// `virtiofsd --log-level`.
    pub fn log_level(mut self, level: &'static str) -> Self {
        self.log_level = level;
        self
    }

    /// The command-line arguments (without the binary).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--socket-path".into(),
            self.socket_path.clone().into(),
            "--shared-dir".into(),
            self.shared_dir.clone().into(),
            "--sandbox".into(),
            self.sandbox.as_arg().into(),
            "--cache".into(),
            self.cache.as_arg().into(),
            "--announce-submounts".into(),
            "--log-level".into(),
            self.log_level.into(),
        ];
        if self.read_only {
            args.push("--readonly".into());
        }
        if let Some(m) = self.uid_map {
            args.push("--translate-uid".into());
            args.push(format!("map:{}:{}:1", m.guest, m.host).into());
        }
        if let Some(m) = self.gid_map {
            args.push("--translate-gid".into());
            args.push(format!("map:{}:{}:1", m.guest, m.host).into());
        }
        args
    }
}

fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn current_gid() -> u32 {
    nix::unistd::getegid().as_raw()
}

/// Find `virtiofsd`: `$SBX_VIRTIOFSD` as given, else the first usable binary on `PATH`, in
/// `~/.cargo/bin` (where `cargo install` puts it) or `/usr/libexec`. Usable means the Rust
/// virtiofsd with `--translate-uid` (sbx pins and tests 1.14.0); QEMU's old C daemon
/// (`/usr/lib/qemu/virtiofsd`, Debian's `qemu-system-common`) has another command line and is
/// skipped, as are older Rust releases.
pub fn find_virtiofsd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(VIRTIOFSD_ENV) {
        return Some(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("virtiofsd"))
                .collect()
        })
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(c) = cargo_home {
        candidates.push(c.join("bin/virtiofsd"));
    }
    candidates.push("/usr/libexec/virtiofsd".into());
    candidates
        .into_iter()
        .find(|p| is_executable(p) && is_supported(p))
}

/// Whether `binary --help` lists the options sbx passes.
fn is_supported(binary: &Path) -> bool {
    let Ok(out) = Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
    else {
        return false;
    };
    let text = [out.stdout, out.stderr].concat();
    let text = String::from_utf8_lossy(&text);
    [
        "--shared-dir",
        "--translate-uid",
        "--announce-submounts",
        "--sandbox",
    ]
    .iter()
    .all(|opt| text.contains(opt))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running `virtiofsd`, killed (and reaped) on drop.
pub struct Virtiofsd {
    child: Child,
    socket_path: PathBuf,
    stderr_path: PathBuf,
}

impl fmt::Debug for Virtiofsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Virtiofsd")
            .field("pid", &self.child.id())
            .field("socket_path", &self.socket_path)
            .finish_non_exhaustive()
    }
}

impl Virtiofsd {
    /// Start `virtiofsd` and wait until its socket accepts connections. Its stderr goes to
    /// `<socket_path>.log`.
    ///
    /// The daemon serves exactly one frontend connection and exits when that frontend
    /// disconnects.
    pub fn spawn(config: &VirtiofsdConfig) -> Result<Self, VirtiofsdError> {
        if !config.shared_dir.is_dir() {
            return Err(VirtiofsdError::SharedDir {
                path: config.shared_dir.clone(),
            });
        }
        let binary = match &config.binary {
            Some(b) => b.clone(),
            None => find_virtiofsd().ok_or(VirtiofsdError::NotFound)?,
        };
        let spawn_err = |source| VirtiofsdError::Spawn {
            binary: binary.clone(),
            source,
        };
        if std::fs::symlink_metadata(&config.socket_path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            std::fs::remove_file(&config.socket_path).map_err(spawn_err)?;
        }
        let mut stderr_path = config.socket_path.clone().into_os_string();
        stderr_path.push(".log");
        let stderr_path = PathBuf::from(stderr_path);
        let stderr = std::fs::File::create(&stderr_path).map_err(spawn_err)?;
        tracing::debug!(binary = %binary.display(), args = ?config.args(), "starting virtiofsd");
        let child = Command::new(&binary)
            .args(config.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(spawn_err)?;
        let mut daemon = Self {
            child,
            socket_path: config.socket_path.clone(),
            stderr_path,
        };
        daemon.wait_ready(config.startup_timeout)?;
        Ok(daemon)
    }

    /// Poll until the socket exists and is bound (a connect would be the daemon's one frontend
    /// connection, so we only look at the file).
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), VirtiofsdError> {
        use std::os::unix::fs::FileTypeExt;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(VirtiofsdError::Exited {
                    status,
                    stderr: self.stderr_tail(),
                });
            }
            if std::fs::symlink_metadata(&self.socket_path).is_ok_and(|m| m.file_type().is_socket())
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(VirtiofsdError::Timeout {
                    path: self.socket_path.clone(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let start = text.len().saturating_sub(2048);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].trim().to_owned()
    }

    /// The vhost-user socket to give the VMM.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kill the daemon now and reap it.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.is_running() {
            self.child.kill()?;
        }
        self.child.wait().map(|_| ())
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::warn!(pid = self.child.id(), error = %e, "cannot stop virtiofsd");
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_carry_the_chosen_flags() {
        let c = VirtiofsdConfig::new("/w", "/run/s.sock")
            .read_only(true)
            .id_mapping(1000, 4242, 1000, 4343);
        let args: Vec<String> = c
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with("--socket-path /run/s.sock --shared-dir /w "));
        assert!(joined.contains("--sandbox namespace --cache auto --announce-submounts"));
        assert!(joined.contains("--readonly"));
        assert!(joined.contains("--translate-uid map:1000:4242:1"));
        assert!(joined.contains("--translate-gid map:1000:4343:1"));
        assert!(!joined.contains("--xattr"));
        let plain = VirtiofsdConfig::new("/w", "/s")
            .no_id_mapping()
            .sandbox(SandboxMode::Chroot)
            .cache(CacheMode::Never);
        let joined = plain
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("--sandbox chroot --cache never"));
        assert!(!joined.contains("translate"));
        assert!(!joined.contains("--readonly"));
    }

    #[test]
    fn missing_shared_dir_is_refused() {
        let c = VirtiofsdConfig::new("/nonexistent/sbx-test-dir", "/tmp/unused.sock");
        assert!(matches!(
            Virtiofsd::spawn(&c),
            Err(VirtiofsdError::SharedDir { .. })
        ));
    }
}
