//! `sbx __git-upload-pack SANDBOX [URL]` (hidden): what the host's `sandbox-<name>` git remote
//! runs (`remote.<r>.uploadpack`; git appends the URL, which is ignored). Starts the sandbox
//! if it is stopped and runs `git-upload-pack` on its clone, as `agent`, with stdin and stdout
//! bridged byte for byte (no terminal), `GIT_PROTOCOL` passed through (protocol v2), stderr
//! forwarded and the exit code passed back.

use std::io::{Read, Write};

use anyhow::bail;
use clap::Args;

use crate::exit::ExitStatus;
use crate::sandbox::state::Layout;
use crate::sandbox::{lifecycle, supervisor, terminal};

/// Arguments of `sbx __git-upload-pack`.
#[derive(Debug, Args)]
pub struct GitUploadPackArgs {
    /// The sandbox.
    pub sandbox: String,
    /// What git appends (the remote's URL); ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

fn pump(mut from: impl Read, mut to: impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return to.flush(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

/// Run `sbx __git-upload-pack`.
pub fn run(args: GitUploadPackArgs) -> anyhow::Result<ExitStatus> {
    let layout = Layout::current()?;
    let (dir, cfg) = lifecycle::find(&layout, &args.sandbox)?;
    let Some(ws) = cfg.workspace.clone().filter(|_| cfg.workspace_mode.clone) else {
        bail!(
            "sandbox {} is not a clone-mode sandbox: it has no git remote",
            cfg.name
        );
    };
    let client = lifecycle::ensure_running(&layout, &dir, &cfg)?;
    let argv: Vec<String> = vec!["git-upload-pack".into(), ws.to_string_lossy().into_owned()];
    let mut req = supervisor::request(&cfg, &argv, "agent", &ws);
    if let Some(p) = std::env::var_os("GIT_PROTOCOL") {
        req = req.env("GIT_PROTOCOL", p);
    }
    let mut session = client.exec(req)?;
    let stdin = session.take_stdin();
    let stdout = session.take_stdout();
    let stderr = session.take_stderr();
    // Not joined: git may keep our stdin open until we exit.
    if let Some(mut to) = stdin {
        std::thread::spawn(move || {
            let _ = pump(std::io::stdin().lock(), &mut to);
            drop(to);
        });
    }
    let err = stderr.map(|e| std::thread::spawn(move || pump(e, std::io::stderr())));
    if let Some(out) = stdout {
        pump(out, std::io::stdout().lock())?;
    }
    if let Some(t) = err {
        let _ = t.join();
    }
    let st = session.wait()?;
    Ok(ExitStatus::Code(terminal::exit_code(st)))
}
