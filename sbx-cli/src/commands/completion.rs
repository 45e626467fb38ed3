//! `sbx completion`: shell completion scripts generated from the clap definitions.

use std::io::Write;

use clap::{Args, CommandFactory, ValueEnum};

use crate::exit::ExitStatus;

/// Arguments of `sbx completion`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sbx completion bash > ~/.local/share/bash-completion/completions/sbx
  sbx completion zsh > \"${fpath[1]}/_sbx\"
  sbx completion fish > ~/.config/fish/completions/sbx.fish
  source <(sbx completion bash)            # this shell only")]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Shells with completion scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// GNU bash (bash-completion).
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// Run `sbx completion SHELL`.
pub fn run(args: CompletionArgs) -> anyhow::Result<ExitStatus> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = crate::cli::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "sbx", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitStatus::Success),
        other => other.map(|()| ExitStatus::Success).map_err(Into::into),
    }
}
