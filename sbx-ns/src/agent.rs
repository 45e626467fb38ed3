//! The guest agent as PID 1: installed into the sandbox's state folder, bound read-only at
//! `/.sbx`, serving the exec protocol on a Unix socket in the state folder. The socket is
//! created (bound and listening) by the launcher and inherited by the agent as fd 3, because
//! the state folder is invisible inside after `pivot_root`.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Bind, Config, Init};
use crate::{Error, Result};

/// The descriptor number the agent gets its listening socket on.
pub(crate) const LISTEN_FD: i32 = 3;

/// Where the agent lives inside the sandbox.
const AGENT_DIR: &str = "/.sbx";

/// How to run the sbx guest agent as the sandbox's PID 1 ([`crate::SandboxBuilder::agent`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The agent executable on the host: any binary that calls `sbx_guest::run_if_agent()`
    /// first in `main` (`sbx-ns-helper` does). Default: the running executable. It is copied
    /// with its shared libraries, so the image needs no libc of its own.
    pub exe: Option<PathBuf>,
    /// Extra agent flags, such as `--env K=V` or `--startup CMD`.
    pub args: Vec<String>,
    /// Where to install the agent. Default: `<state>/agent`. A folder shared by sandboxes (in
    /// sbx's data directory, owned by the user, not writable by others) makes a new
    /// sandbox's start skip the copy when the agent there is current.
    pub install_dir: Option<PathBuf>,
}

impl AgentOptions {
    /// Uses `exe` as the agent.
    pub fn with_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.exe = Some(exe.into());
        self
    }

    /// Installs the agent into `dir`, shared and reused while current.
    pub fn with_install_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.install_dir = Some(dir.into());
        self
    }

    /// Adds agent flags.
    pub fn with_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// What an installation was made from, so an unchanged agent is not copied again.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    exe: PathBuf,
    len: u64,
    modified_ns: u128,
    argv: Vec<String>,
}

fn stamp_of(exe: &Path) -> Result<Stamp> {
    let exe = exe
        .canonicalize()
        .map_err(|e| Error::io("resolve", exe, e))?;
    let meta = std::fs::metadata(&exe).map_err(|e| Error::io("stat", &exe, e))?;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(Stamp {
        exe,
        len: meta.len(),
        modified_ns,
        argv: Vec::new(),
    })
}

/// Installs the agent under `root` (as `<root>/.sbx`) unless the stamp says it is current.
/// Returns the argv prefix that starts it inside the sandbox.
fn install(root: &Path, exe: Option<&Path>) -> Result<Vec<String>> {
    let exe = match exe {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().map_err(|e| Error::io("resolve", "current exe", e))?,
    };
    let mut want = stamp_of(&exe)?;
    let stamp_path = root.join("stamp.json");
    if let Ok(text) = std::fs::read(&stamp_path) {
        if let Ok(have) = serde_json::from_slice::<Stamp>(&text) {
            if (&have.exe, have.len, have.modified_ns) == (&want.exe, want.len, want.modified_ns)
                && !have.argv.is_empty()
            {
                return Ok(have.argv);
            }
        }
    }
    let installed =
        sbx_guest::install_agent(root, Some(&want.exe)).map_err(|e| Error::Agent(Box::new(e)))?;
    want.argv = installed
        .argv
        .into_iter()
        .map(|s| {
            s.into_string()
                .map_err(|_| Error::InvalidConfig("agent path is not UTF-8".into()))
        })
        .collect::<Result<_>>()?;
    let tmp = root.join(format!("stamp.json.{}", std::process::id()));
    let body = serde_json::to_vec(&want).map_err(|e| Error::Protocol(e.to_string()))?;
    std::fs::write(&tmp, body).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &stamp_path).map_err(|e| Error::io("rename", &stamp_path, e))?;
    Ok(want.argv)
}

/// The exec socket's path for a state folder.
pub(crate) fn socket_path(config: &Config) -> PathBuf {
    config.state_dir.join("exec.sock")
}

/// Installs the agent, makes it the init program, and returns the listening socket to pass.
pub(crate) fn prepare(config: &mut Config, opts: &AgentOptions) -> Result<OwnedFd> {
    let agent_root = opts
        .install_dir
        .clone()
        .unwrap_or_else(|| config.state_dir.join("agent"));
    let mut argv = install(&agent_root, opts.exe.as_deref())?;
    argv.extend([
        "--no-init".into(),
        "--listen-fd".into(),
        LISTEN_FD.to_string(),
    ]);
    argv.extend(opts.args.iter().cloned());
    let path = PathBuf::from(&argv[0]);
    let env = std::mem::take(&mut config.init.env);
    let cwd = std::mem::take(&mut config.init.cwd);
    config.init = Init {
        path,
        args: argv,
        env,
        cwd,
    };
    config.binds.push(Bind::new(
        agent_root.join(AGENT_DIR.trim_start_matches('/')),
        AGENT_DIR,
        true,
    ));

    let sock = socket_path(config);
    match std::fs::remove_file(&sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stale", &sock, e)),
    }
    let listener = UnixListener::bind(&sock).map_err(|e| Error::io("bind", &sock, e))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod", &sock, e))?;
    Ok(OwnedFd::from(listener))
}
