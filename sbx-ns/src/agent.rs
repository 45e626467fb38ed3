//! The guest agent as PID 1: installed into the sandbox's state folder, bound read-only at
//! `/.sbx`, serving the exec protocol on a Unix socket in the state folder. The socket is
//! created (bound and listening) by the launcher and inherited by the agent as fd 3, because
//! the state folder is invisible inside after `pivot_root`.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

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
}

impl AgentOptions {
    /// Uses `exe` as the agent.
    pub fn with_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.exe = Some(exe.into());
        self
    }

    /// Adds agent flags.
    pub fn with_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// The exec socket's path for a state folder.
pub(crate) fn socket_path(config: &Config) -> PathBuf {
    config.state_dir.join("exec.sock")
}

/// Installs the agent, makes it the init program, and returns the listening socket to pass.
pub(crate) fn prepare(config: &mut Config, opts: &AgentOptions) -> Result<OwnedFd> {
    let agent_root = config.state_dir.join("agent");
    let installed = sbx_guest::install_agent(&agent_root, opts.exe.as_deref())
        .map_err(|e| Error::Agent(Box::new(e)))?;
    let mut argv: Vec<String> = installed
        .command(["--no-init", "--listen-fd", &LISTEN_FD.to_string()])
        .into_iter()
        .map(|s| {
            s.into_string()
                .map_err(|_| Error::InvalidConfig("agent path is not UTF-8".into()))
        })
        .collect::<Result<_>>()?;
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
