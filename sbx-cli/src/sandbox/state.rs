//! The state folders: `D/sandboxes/<name>/` with `sandbox.json`, `state.json`, `lock`,
//! `supervisor.pid`, logs and sockets. Writes are atomic (temp file, fsync, rename, fsync of
//! the folder); a sandbox's status is derived from its lock (held by a live supervisor) so a
//! crash never leaves a sandbox that claims to run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::config::{Backend, SandboxConfig};
use super::lock::SandboxLock;

/// The data directory and where things live in it.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `D`.
    pub data_dir: PathBuf,
}

impl Layout {
    /// The layout of the current data directory (`SBX_HOME`, XDG, `~/.local/share/sbx`).
    pub fn current() -> anyhow::Result<Layout> {
        Ok(Layout {
            data_dir: crate::paths::data_dir()?,
        })
    }

    /// `D/sandboxes`.
    pub fn sandboxes(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }

    /// The folder of sandbox `name`.
    pub fn sandbox(&self, name: &str) -> SandboxDir {
        SandboxDir {
            name: name.to_owned(),
            dir: self.sandboxes().join(name),
        }
    }

    /// `D/agent`: the guest agent (this binary and its libraries) installed once for every
    /// namespace sandbox, re-installed when the binary changes.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }

    /// The image store: `SBX_IMAGES_DIR`, else `D/images`.
    pub fn images(&self) -> PathBuf {
        match std::env::var_os("SBX_IMAGES_DIR").filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => self.data_dir.join("images"),
        }
    }

    /// Names of every sandbox folder, sorted.
    pub fn names(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.sandboxes();
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && e.path().is_dir() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// One sandbox's folder.
#[derive(Debug, Clone)]
pub struct SandboxDir {
    /// The sandbox's name.
    pub name: String,
    /// `D/sandboxes/<name>`.
    pub dir: PathBuf,
}

impl SandboxDir {
    /// `sandbox.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("sandbox.json")
    }
    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// `lock`: held by the supervisor for its whole life.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }
    /// `supervisor.pid`.
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }
    /// `supervisor.log`: the supervisor's own output.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    /// `console.log`: the sandbox's PID 1 (agent) output or the VM's serial console.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The namespace backend's state folder (writable layer `ns/upper`, exec socket).
    pub fn ns_dir(&self) -> PathBuf {
        self.dir.join("ns")
    }
    /// The exec socket of a namespace sandbox.
    pub fn exec_socket(&self) -> PathBuf {
        self.ns_dir().join("exec.sock")
    }
    /// The vsock Unix socket of a microVM.
    pub fn vsock_socket(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }
    /// A microVM's writable disk.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.ext4")
    }
    /// Present once the kits' files and install commands ran.
    pub fn installed_path(&self) -> PathBuf {
        self.dir.join("installed")
    }

    /// Reads `sandbox.json`.
    pub fn read_config(&self) -> anyhow::Result<SandboxConfig> {
        let p = self.config_path();
        let text = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", p.display()))
    }

    /// Writes `sandbox.json` atomically.
    pub fn write_config(&self, cfg: &SandboxConfig) -> anyhow::Result<()> {
        atomic_write(&self.config_path(), &serde_json::to_vec_pretty(cfg)?)
    }

    /// Reads `state.json` (absent: never started).
    pub fn read_state(&self) -> Option<RunState> {
        let text = std::fs::read(self.state_path()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes `state.json` atomically.
    pub fn write_state(&self, st: &RunState) -> anyhow::Result<()> {
        atomic_write(&self.state_path(), &serde_json::to_vec_pretty(st)?)
    }

    /// The supervisor's pid, if recorded.
    pub fn supervisor_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The status as `sbx ls` shows it, reconciling the recorded state with reality: a
    /// sandbox whose lock nobody holds is not running, whatever `state.json` says.
    pub fn status(&self) -> Status {
        if !self.config_path().exists() {
            return Status::Broken;
        }
        match SandboxLock::try_acquire(&self.lock_path()) {
            Ok(Some(_free)) => match self.read_state() {
                Some(st) if st.status == RunStatus::Running || st.status == RunStatus::Starting => {
                    Status::Stopped
                }
                Some(st) if st.status == RunStatus::Failed => Status::Failed,
                _ => Status::Stopped,
            },
            Ok(None) => match self.read_state() {
                Some(st) if st.status == RunStatus::Running => Status::Running,
                Some(st) if st.status == RunStatus::Stopping => Status::Stopping,
                _ => Status::Starting,
            },
            Err(_) => Status::Broken,
        }
    }

    /// The last `n` lines of a log file.
    pub fn tail(path: &Path, n: usize) -> Vec<String> {
        let Ok(bytes) = std::fs::read(path) else {
            return Vec::new();
        };
        let start = bytes.len().saturating_sub(64 << 10);
        let text = String::from_utf8_lossy(&bytes[start..]);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.chars().take(300).collect())
            .collect()
    }
}

/// What the supervisor records in `state.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The supervisor is starting the backend.
    Starting,
    /// Ready for exec.
    Running,
    /// Shutting down.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// It ended on its own or could not start (see `error`).
    Failed,
}

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// What the supervisor last recorded.
    pub status: RunStatus,
    /// The supervisor's pid.
    pub pid: Option<u32>,
    /// The backend.
    pub backend: Backend,
    /// When it was started, seconds since the epoch.
    pub started_unix: u64,
    /// How the sandbox ended, when it did.
    #[serde(default)]
    pub exit: Option<String>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// The status `sbx ls` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Ready.
    Running,
    /// A supervisor is starting it.
    Starting,
    /// A supervisor is stopping it.
    Stopping,
    /// Not running (state kept).
    Stopped,
    /// Ended on its own or failed to start (state kept for `sbx rm`).
    Failed,
    /// A half-created folder: `sbx rm` removes it.
    Broken,
}

impl Status {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Starting => "starting",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
            Status::Broken => "broken",
        }
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `path` so that readers see the old or the new content, never a mix: a temp file in
/// the same folder, fsync, rename, fsync of the folder.
pub fn atomic_write(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("no parent folder")?;
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("writing {}", path.display()))
    })
}

/// Levenshtein distance, for "did you mean".
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `names` to `name` within distance 2 (or that starts with it).
pub fn closest<'a>(name: &str, names: &'a [String]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (distance(name, n), n))
        .filter(|(d, n)| *d <= 2 || (name.len() >= 3 && n.starts_with(name)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temp file left");
        assert!(atomic_write(&d.path().join("missing/x"), b"").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(distance("kitten", "sitting"), 3);
        let names = vec!["shell-work".to_owned(), "copilot-app".to_owned()];
        assert_eq!(closest("shell-wrk", &names), Some("shell-work"));
        assert_eq!(closest("copilot", &names), Some("copilot-app"));
        assert_eq!(closest("zzz", &names), None);
    }

    #[test]
    fn status_follows_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout {
            data_dir: d.path().to_owned(),
        };
        let sb = layout.sandbox("a");
        std::fs::create_dir_all(&sb.dir).unwrap();
        assert_eq!(sb.status(), Status::Broken, "no sandbox.json yet");
        std::fs::write(sb.config_path(), b"{}").unwrap();
        assert_eq!(sb.status(), Status::Stopped);
        let st = RunState {
            status: RunStatus::Running,
            pid: Some(1),
            backend: Backend::Namespace,
            started_unix: 0,
            exit: None,
            error: None,
        };
        sb.write_state(&st).unwrap();
        // Nobody holds the lock: the recorded "running" is stale.
        assert_eq!(sb.status(), Status::Stopped);
        let held = SandboxLock::try_acquire(&sb.lock_path()).unwrap().unwrap();
        assert_eq!(sb.status(), Status::Running);
        drop(held);
        assert_eq!(layout.names().unwrap(), ["a"]);
    }
}
