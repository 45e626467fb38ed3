//! Attaching the user's terminal to a command in a sandbox: streams, raw mode and window
//! size with a PTY, signals passed through, and the detach keys (Ctrl-P Ctrl-Q) that leave
//! the command running.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use sbx_exec::{Client, ExecRequest, ExitStatus, WindowSize};

/// How to attach.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    /// Forward our stdin (else the command's stdin is closed at once).
    pub stdin: bool,
    /// Run the command on a PTY.
    pub tty: bool,
    /// Ctrl-P Ctrl-Q detaches (the command keeps running).
    pub detach_keys: bool,
}

/// How an attach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// The command ended.
    Exited(ExitStatus),
    /// The user detached.
    Detached,
}

/// The terminal's size, if stdout (or stdin) is one.
pub fn window_size() -> Option<WindowSize> {
    let (w, h) = terminal_size::terminal_size_of(std::io::stdout().as_fd())
        .or_else(|| terminal_size::terminal_size_of(std::io::stdin().as_fd()))?;
    (h.0 > 0 && w.0 > 0).then(|| WindowSize::new(h.0, w.0))
}

/// Raw mode on stdin, restored on drop.
struct RawMode(Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
}

fn copy_out(mut from: impl Read + Send + 'static, err: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let ok = if err {
                let mut e = std::io::stderr().lock();
                e.write_all(&buf[..n]).and_then(|()| e.flush())
            } else {
                let mut o = std::io::stdout().lock();
                o.write_all(&buf[..n]).and_then(|()| o.flush())
            };
            if ok.is_err() {
                return;
            }
        }
    })
}

/// Filters the detach sequence out of the input; true once it was typed.
#[derive(Debug, Default)]
pub struct DetachKeys {
    pending: bool,
}

const CTRL_P: u8 = 0x10;
const CTRL_Q: u8 = 0x11;

impl DetachKeys {
    /// Appends the bytes to forward to `out`; returns true when Ctrl-P Ctrl-Q was typed
    /// (nothing after it is forwarded).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.pending {
                self.pending = false;
                if b == CTRL_Q {
                    return true;
                }
                out.push(CTRL_P);
            }
            if b == CTRL_P {
                self.pending = true;
            } else {
                out.push(b);
            }
        }
        false
    }
}

fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// Runs `req` and connects it to this process's stdio until it ends or the user detaches.
pub fn attach(
    client: &Client,
    mut req: ExecRequest,
    opts: AttachOptions,
) -> anyhow::Result<Attached> {
    let interactive = opts.tty && std::io::stdin().is_terminal();
    if opts.tty {
        req.tty = Some(window_size().unwrap_or(WindowSize::new(24, 80)));
        if let Ok(term) = std::env::var("TERM") {
            req = req.env("TERM", term);
        }
    }
    // Signals go to a signalfd (blocked in this thread before any helper thread exists, so
    // every thread inherits the mask) and are passed on to the command.
    let set = signal_set();
    set.thread_block().context("blocking signals")?;
    let result = (|| {
        let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("signalfd")?;
        let mut session = client.exec(req).context("starting the command")?;
        let _raw = if interactive { RawMode::enter() } else { None };
        let out = session.take_stdout().map(|s| copy_out(s, false));
        let err = session.take_stderr().map(|s| copy_out(s, true));
        let detached = Arc::new(AtomicBool::new(false));
        if opts.stdin {
            let mut stdin = session.take_stdin().context("no stdin stream")?;
            let flag = Arc::clone(&detached);
            let detach_keys = opts.detach_keys && interactive;
            // Left running: it may sit in read(0) after the command ended.
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut keys = DetachKeys::default();
                let mut fwd = Vec::with_capacity(buf.len());
                let mut input = std::io::stdin().lock();
                loop {
                    let n = match input.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    fwd.clear();
                    let stop = if detach_keys {
                        keys.feed(&buf[..n], &mut fwd)
                    } else {
                        fwd.extend_from_slice(&buf[..n]);
                        false
                    };
                    if (!fwd.is_empty() && stdin.write_all(&fwd).is_err()) || stop {
                        flag.store(stop, Ordering::SeqCst);
                        if stop {
                            return;
                        }
                        break;
                    }
                }
                // Dropping `stdin` closes the command's stdin (EOF).
            });
        } else {
            session.close_stdin();
        }
        let mut size = if interactive { window_size() } else { None };
        // Short commands end within a few ms: wake quickly at first, then back off to 20 ms.
        let mut wait_ms: u8 = 1;
        let outcome = loop {
            if detached.load(Ordering::SeqCst) {
                break Attached::Detached;
            }
            if let Some(st) = session
                .try_wait()
                .context("lost the connection to the sandbox")?
            {
                break Attached::Exited(st);
            }
            let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(wait_ms));
            wait_ms = (wait_ms * 2).min(20);
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == Signal::SIGWINCH as i32 {
                    let now = window_size();
                    if interactive && now.is_some() && now != size {
                        size = now;
                        if let Some(s) = now {
                            let _ = session.resize(s);
                        }
                    }
                } else {
                    let _ = session.signal(sig);
                }
            }
        };
        if outcome == Attached::Detached {
            drop(session);
        } else {
            // Output still in flight drains before the exit is reported.
            if let Some(t) = out {
                let _ = t.join();
            }
            if let Some(t) = err {
                let _ = t.join();
            }
        }
        Ok(outcome)
    })();
    let _ = set.thread_unblock();
    result
}

/// The process exit code for a command's status: its code, or 128 + the signal.
pub fn exit_code(st: ExitStatus) -> u8 {
    u8::try_from(st.shell_code()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_are_filtered() {
        let mut k = DetachKeys::default();
        let mut out = Vec::new();
        assert!(!k.feed(b"ab\x10c", &mut out));
        assert_eq!(out, b"ab\x10c");
        out.clear();
        // Split across reads.
        assert!(!k.feed(b"x\x10", &mut out));
        assert_eq!(out, b"x");
        out.clear();
        assert!(k.feed(b"\x11rest", &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::Code(3)), 3);
        assert_eq!(
            exit_code(ExitStatus::Signal {
                signal: 9,
                core_dumped: false
            }),
            137
        );
    }
}
