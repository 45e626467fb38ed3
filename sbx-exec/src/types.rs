//! The request and result types shared by host and agent.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

/// Which user a command runs as.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum User {
    /// A user name looked up in the sandbox's `/etc/passwd` (and `/etc/group`).
    Name(String),
    /// Numeric ids; no lookup, no supplementary groups.
    Id {
        /// The user id.
        uid: u32,
        /// The group id.
        gid: u32,
    },
}

/// A terminal size in character cells.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl WindowSize {
    /// A size of `rows` x `cols`.
    pub fn new(rows: u16, cols: u16) -> Self {
        Self { rows, cols }
    }
}

/// A command to run in the sandbox.
///
/// `env` adds to (and overrides) the agent's defaults (`PATH`, `HOME`, `USER`, `TERM` with a
/// PTY...). Its values may hold secrets, so `Debug` prints only the names.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecRequest {
    /// Program and arguments; the program is searched in `PATH` when it has no `/`.
    pub argv: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; default the user's home, or `/`.
    pub cwd: Option<PathBuf>,
    /// The user; default root (or whatever the agent runs as).
    pub user: Option<User>,
    /// Run on a new PTY of this size (stdout and stderr then arrive merged on stdout).
    pub tty: Option<WindowSize>,
}

impl ExecRequest {
    /// A request to run `argv` with the defaults.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self {
            argv: argv.into_iter().map(|s| s.as_ref().to_owned()).collect(),
            env: Vec::new(),
            cwd: None,
            user: None,
            tty: None,
        }
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets the working directory.
    #[must_use]
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the user.
    #[must_use]
    pub fn user(mut self, user: User) -> Self {
        self.user = Some(user);
        self
    }

    /// Runs the command on a PTY of the given size.
    #[must_use]
    pub fn tty(mut self, size: WindowSize) -> Self {
        self.tty = Some(size);
        self
    }
}

impl fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<&OsString> = self.env.iter().map(|(k, _)| k).collect();
        f.debug_struct("ExecRequest")
            .field("argv", &self.argv)
            .field("env_names", &env_names)
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("tty", &self.tty)
            .finish()
    }
}

/// How a command ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == Self::Code(0)
    }

    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            Self::Code(c) => Some(c),
            Self::Signal { .. } => None,
        }
    }

    /// The signal that killed it, if one did.
    pub fn signal(self) -> Option<i32> {
        match self {
            Self::Code(_) => None,
            Self::Signal { signal, .. } => Some(signal),
        }
    }

    /// The shell convention: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal { signal, .. } => 128 + signal,
        }
    }

    /// Decodes a raw `waitpid` status.
    pub fn from_wait_status(status: i32) -> Self {
        let sig = status & 0x7f;
        if sig == 0 {
            Self::Code((status >> 8) & 0xff)
        } else {
            Self::Signal {
                signal: sig,
                core_dumped: status & 0x80 != 0,
            }
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by signal {signal}")?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// One of the three standard streams.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum StreamId {
    /// Host to command.
    Stdin,
    /// Command to host (also the PTY's output).
    Stdout,
    /// Command to host.
    Stderr,
}

impl StreamId {
    pub(crate) fn to_wire(self) -> u8 {
        match self {
            Self::Stdin => 0,
            Self::Stdout => 1,
            Self::Stderr => 2,
        }
    }

    pub(crate) fn from_wire(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Stdin),
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding() {
        assert_eq!(ExitStatus::from_wait_status(0), ExitStatus::Code(0));
        assert_eq!(ExitStatus::from_wait_status(3 << 8), ExitStatus::Code(3));
        assert_eq!(
            ExitStatus::from_wait_status(255 << 8),
            ExitStatus::Code(255)
        );
        assert_eq!(
            ExitStatus::from_wait_status(9),
            ExitStatus::Signal {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            ExitStatus::from_wait_status(0x80 | 11),
            ExitStatus::Signal {
                signal: 11,
                core_dumped: true
            }
        );
        assert_eq!(ExitStatus::from_wait_status(9).shell_code(), 137);
    }

    #[test]
    fn debug_hides_env_values() {
        let r = ExecRequest::new(["env"]).env("TOKEN", "canary-secret-123");
        let s = format!("{r:?}");
        assert!(s.contains("TOKEN"));
        assert!(!s.contains("canary-secret-123"));
    }
}
