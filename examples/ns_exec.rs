//! Run one command in a throwaway namespace sandbox, through the guest agent and the exec
//! protocol:
//!
//! ```text
//! cargo run --release -p sbx-examples --example ns_exec -- --rootfs DIR [-t] -- CMD [ARG...]
//! ```
//!
//! DIR is any Debian or busybox root directory; it is used read-only, with a writable layer
//! that is deleted at the end. stdout and stderr stream separately (merged on a PTY with `-t`),
//! stdin is forwarded, and the exit code is CMD's (128+N when a signal ended it). With `-t` on
//! a terminal the session is fully interactive (raw mode, window size, resizes). Needs root or
//! unprivileged user namespaces. This binary is also the setup helper and the agent (multi-call).

#![allow(clippy::print_stderr)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use sbx_exec::{ExecRequest, ExitStatus, WindowSize};
use sbx_ns::{AgentOptions, Config, Init, Sandbox};

const USAGE: &str = "usage: ns_exec --rootfs DIR [-t] -- CMD [ARG...]";

/// The last terminal signal we got (Ctrl-C without `-t`, `kill`): forwarded to CMD.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

struct Args {
    rootfs: PathBuf,
    tty: bool,
    argv: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut rootfs = None;
    let mut tty = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rootfs" => rootfs = Some(PathBuf::from(it.next().ok_or(USAGE)?)),
            "-t" | "--tty" => tty = true,
            "--" => break,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let argv: Vec<String> = it.collect();
    let rootfs = rootfs.ok_or(USAGE)?;
    if argv.is_empty() {
        return Err(USAGE.into());
    }
    let rootfs = rootfs
        .canonicalize()
        .map_err(|e| format!("{}: {e}", rootfs.display()))?;
    Ok(Args { rootfs, tty, argv })
}

/// Puts the terminal in raw mode and restores it on drop.
struct RawTerminal(libc::termios);

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid termios pointer.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the struct we own; tcsetattr reads it.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings saved in `enter`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

fn window_size() -> Option<WindowSize> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: fd 1 and a valid winsize pointer.
    let rc = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then(|| WindowSize::new(ws.ws_row, ws.ws_col))
}

fn is_tty(fd: libc::c_int) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
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

fn run(args: Args) -> Result<i32, Box<dyn std::error::Error>> {
    let state = std::env::temp_dir().join(format!("sbx-ns-exec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let result = run_in(&args, &state);
    let _ = std::fs::remove_dir_all(&state);
    result
}

fn run_in(args: &Args, state: &std::path::Path) -> Result<i32, Box<dyn std::error::Error>> {
    // The agent replaces this init program and inherits its environment.
    let config = Config::new(
        &args.rootfs,
        state,
        Init::new("/bin/sh", Vec::<String>::new()),
    );
    let sandbox = Sandbox::builder(config)
        .agent(AgentOptions::default())
        .start()?;
    let client = sandbox.client().ok_or("no exec socket")?;

    let interactive = args.tty && is_tty(0);
    let mut req = ExecRequest::new(&args.argv);
    if args.tty {
        req.tty = Some(window_size().unwrap_or(WindowSize::new(24, 80)));
        if let Ok(term) = std::env::var("TERM") {
            req = req.env("TERM", term);
        }
    }
    let mut session = client.exec(req)?;
    let raw = if interactive {
        RawTerminal::enter()
    } else {
        None
    };

    let out = copy_out(session.take_stdout().ok_or("no stdout")?, false);
    let err = copy_out(session.take_stderr().ok_or("no stderr")?, true);
    let mut stdin = session.take_stdin().ok_or("no stdin")?;
    // Detached: it may sit in read(0) until we exit.
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut input = std::io::stdin().lock();
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdin.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping closes CMD's stdin (EOF).
    });

    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let mut size = if interactive { window_size() } else { None };
    let mut ticks = 0u32;
    let status = loop {
        if let Some(st) = session.try_wait()? {
            break st;
        }
        let sig = PENDING.swap(0, Ordering::SeqCst);
        if sig != 0 {
            let _ = session.signal(sig);
        }
        ticks += 1;
        if interactive && ticks % 50 == 0 {
            let now = window_size();
            if now.is_some() && now != size {
                size = now;
                if let Some(s) = now {
                    let _ = session.resize(s);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = out.join();
    let _ = err.join();
    drop(raw);
    sandbox.shutdown(Duration::from_secs(2))?;
    Ok(match status {
        ExitStatus::Code(c) => c,
        ExitStatus::Signal { signal, .. } => 128 + signal,
        _ => 125,
    })
}

fn main() {
    sbx_ns::run_if_helper();
    sbx_guest::run_if_agent();
    let code = match parse() {
        Ok(args) => match run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("ns_exec: {e}");
                let mut src = e.source();
                while let Some(s) = src {
                    eprintln!("  caused by: {s}");
                    src = s.source();
                }
                125
            }
        },
        Err(msg) => {
            eprintln!("{msg}");
            2
        }
    };
    std::process::exit(code);
}
