//! Starting a requested command: user lookup, environment, working directory, PTY or pipes.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sbx_exec::{ExecRequest, RemoteErrorKind, User};

use crate::passwd;
use crate::reaper::{ChildHandle, Reaper};
use crate::sys;

/// The `PATH` when neither the agent config nor the request sets one.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of the agent's configuration every command sees.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecDefaults {
    /// Where `/etc/passwd` lives (the sandbox root; `/` once the agent runs inside it).
    pub(crate) root: PathBuf,
    /// Environment added to every command.
    pub(crate) env: Vec<(OsString, OsString)>,
}

/// A started command with its streams.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) handle: ChildHandle,
    pub(crate) stdin: File,
    pub(crate) stdout: File,
    /// `None` with a PTY (stderr goes to the terminal).
    pub(crate) stderr: Option<File>,
    /// The PTY master, for resizes.
    pub(crate) pty: Option<File>,
}

struct Ids {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

struct Resolved {
    ids: Option<Ids>,
    name: Option<String>,
    home: PathBuf,
    shell: Option<PathBuf>,
}

fn resolve_user(root: &Path, user: Option<&User>) -> Result<Resolved, (RemoteErrorKind, String)> {
    let io_err = |e: std::io::Error| (RemoteErrorKind::Other, format!("reading passwd: {e}"));
    match user {
        None => {
            // SAFETY: getuid cannot fail.
            let uid = unsafe { libc::getuid() };
            let e = passwd::by_uid(root, uid).map_err(io_err)?;
            Ok(Resolved {
                ids: None,
                name: e.as_ref().map(|e| e.name.clone()),
                home: e.as_ref().map_or_else(|| "/".into(), |e| e.home.clone()),
                shell: e.map(|e| e.shell),
            })
        }
        Some(User::Name(n)) => {
            let e = passwd::by_name(root, n)
                .map_err(io_err)?
                .ok_or_else(|| (RemoteErrorKind::NoSuchUser, format!("no user {n:?}")))?;
            let groups = passwd::groups(root, &e.name, e.gid).map_err(io_err)?;
            Ok(Resolved {
                ids: Some(Ids {
                    uid: e.uid,
                    gid: e.gid,
                    groups,
                }),
                name: Some(e.name),
                home: e.home,
                shell: Some(e.shell),
            })
        }
        Some(User::Id { uid, gid }) => {
            let e = passwd::by_uid(root, *uid).map_err(io_err)?;
            Ok(Resolved {
                ids: Some(Ids {
                    uid: *uid,
                    gid: *gid,
                    groups: vec![*gid],
                }),
                name: e.as_ref().map(|e| e.name.clone()),
                home: e.as_ref().map_or_else(|| "/".into(), |e| e.home.clone()),
                shell: e.map(|e| e.shell),
            })
        }
        Some(_) => Err((RemoteErrorKind::NoSuchUser, "unsupported user form".into())),
    }
}

/// Builds the environment: defaults, then the agent's, then the request's (later wins).
fn environment(
    req: &ExecRequest,
    defaults: &ExecDefaults,
    user: &Resolved,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), user.home.clone().into_os_string()),
    ];
    if let Some(n) = &user.name {
        env.push(("USER".into(), n.into()));
        env.push(("LOGNAME".into(), n.into()));
    }
    if let Some(s) = &user.shell {
        env.push(("SHELL".into(), s.clone().into_os_string()));
    }
    if req.tty.is_some() {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    let mut set = |k: &OsStr, v: &OsStr| {
        if let Some(e) = env.iter_mut().find(|(ek, _)| ek == k) {
            e.1 = v.to_owned();
        } else {
            env.push((k.to_owned(), v.to_owned()));
        }
    };
    for (k, v) in defaults.env.iter().chain(req.env.iter()) {
        set(k, v);
    }
    env
}

/// Sets up the child side: fresh signal mask, new session, controlling terminal, identity.
fn child_setup(cmd: &mut Command, tty: bool, ids: Option<Ids>) {
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (sigemptyset, pthread_sigmask, setsid, ioctl, setgroups, setgid, setuid) on memory that
    // was allocated before the fork (`ids.groups`).
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(ids) = &ids {
                if libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) < 0
                    || libc::setgid(ids.gid) < 0
                    || libc::setuid(ids.uid) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Starts `req` and registers it with `reaper`.
pub(crate) fn start(
    req: &ExecRequest,
    defaults: &ExecDefaults,
    reaper: &Reaper,
) -> Result<Started, (RemoteErrorKind, String)> {
    let user = resolve_user(&defaults.root, req.user.as_ref())?;
    let env = environment(req, defaults, &user);
    let cwd = req.cwd.clone().unwrap_or_else(|| {
        if user.home.is_dir() {
            user.home.clone()
        } else {
            PathBuf::from("/")
        }
    });
    let spawn_err = |e: std::io::Error| (RemoteErrorKind::Spawn, format!("{:?}: {e}", req.argv[0]));

    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..])
        .env_clear()
        .envs(env)
        .current_dir(&cwd);
    let pty = match req.tty {
        Some(ws) => {
            let (master, slave) = sys::open_pty(ws.rows, ws.cols).map_err(spawn_err)?;
            let s1 = slave.try_clone().map_err(spawn_err)?;
            let s2 = slave.try_clone().map_err(spawn_err)?;
            cmd.stdin(Stdio::from(slave))
                .stdout(Stdio::from(s1))
                .stderr(Stdio::from(s2));
            Some(master)
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    child_setup(&mut cmd, pty.is_some(), user.ids);
    let (mut child, handle) = reaper.spawn(&mut cmd).map_err(spawn_err)?;
    // The slave copies held by `cmd` close with it, so the master sees EIO once the command
    // and its descendants are done with the terminal.
    drop(cmd);
    let started = match pty {
        Some(master) => {
            let dup = |f: &File| f.try_clone().map_err(spawn_err);
            Started {
                handle,
                stdin: dup(&master)?,
                stdout: dup(&master)?,
                stderr: None,
                pty: Some(master),
            }
        }
        None => {
            let take = |o: Option<OwnedFd>| {
                o.map(File::from)
                    .ok_or_else(|| (RemoteErrorKind::Other, "missing pipe".to_owned()))
            };
            Started {
                handle,
                stdin: take(child.stdin.take().map(OwnedFd::from))?,
                stdout: take(child.stdout.take().map(OwnedFd::from))?,
                stderr: Some(take(child.stderr.take().map(OwnedFd::from))?),
                pty: None,
            }
        }
    };
    Ok(started)
}

/// Starts a non-interactive command (startup or main command) with the agent's own stdio.
pub(crate) fn start_plain(
    argv: &[OsString],
    defaults: &ExecDefaults,
    reaper: &Reaper,
) -> std::io::Result<ChildHandle> {
    let req = ExecRequest::new(argv);
    let user = resolve_user(&defaults.root, None).map_err(|(_, m)| std::io::Error::other(m))?;
    let env = environment(&req, defaults, &user);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().envs(env).current_dir("/");
    // Startup and main commands keep the agent's session so they share its console.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    reaper.spawn(&mut cmd).map(|(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_precedence() {
        let req = ExecRequest::new(["x"])
            .env("PATH", "/custom")
            .env("A", "req")
            .tty(sbx_exec::WindowSize::new(1, 1));
        let defaults = ExecDefaults {
            root: "/".into(),
            env: vec![("A".into(), "agent".into()), ("B".into(), "agent".into())],
        };
        let user = Resolved {
            ids: None,
            name: Some("agent".into()),
            home: "/home/agent".into(),
            shell: None,
        };
        let env = environment(&req, &defaults, &user);
        let get = |k: &str| {
            env.iter()
                .find(|(ek, _)| ek == k)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("PATH").as_deref(), Some("/custom"));
        assert_eq!(get("A").as_deref(), Some("req"));
        assert_eq!(get("B").as_deref(), Some("agent"));
        assert_eq!(get("HOME").as_deref(), Some("/home/agent"));
        assert_eq!(get("USER").as_deref(), Some("agent"));
        assert_eq!(get("TERM").as_deref(), Some("xterm-256color"));
        assert_eq!(env.iter().filter(|(k, _)| k == "A").count(), 1);
    }
}
