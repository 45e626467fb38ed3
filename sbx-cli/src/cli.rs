//! The command-line grammar (clap derive). Help text, completions and man pages all come from
//! these definitions.

use clap::{Parser, Subcommand};

/// Run AI coding agents in disposable microVMs behind a default-deny egress firewall.
#[derive(Debug, Parser)]
#[command(name = "sbx", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a sandbox for an agent and a workspace folder (not started).
    Create(crate::commands::create::CreateArgs),
    /// Create if missing, start in the background, and attach the agent's terminal.
    Run(crate::commands::run::RunArgs),
    /// Run a command in a sandbox (starting it if stopped); the exit code passes through.
    Exec(crate::commands::exec::ExecArgs),
    /// List sandboxes.
    Ls(crate::commands::ls::LsArgs),
    /// Stop sandboxes (their files are kept).
    Stop(crate::commands::stop::StopArgs),
    /// Remove sandboxes and everything in them.
    Rm(crate::commands::rm::RmArgs),
    /// The per-sandbox supervisor (started by sbx itself).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// The sandbox.
        name: String,
    },
    /// What a clone-mode sandbox's git remote runs (started by git itself).
    #[command(name = "__git-upload-pack", hide = true)]
    GitUploadPack(crate::commands::git_bridge::GitUploadPackArgs),
    /// First-run setup: choose the default network policy (open, balanced, locked-down).
    Login(crate::commands::login::LoginArgs),
    /// Report what this host supports: KVM, namespaces, state directory.
    Diagnose(crate::commands::diagnose::DiagnoseArgs),
    /// Store API tokens on the host; sandboxes only see placeholders.
    Secret(crate::commands::secret::SecretArgs),
    /// Build and list guest images (Debian root filesystem, kernel, initramfs).
    Image(crate::commands::image::ImageArgs),
    /// Check kits (spec.yaml folders) and show what they would do.
    Kit(crate::commands::kit::KitArgs),
    /// Network policy: the default preset, allow and deny rules, and the request log.
    Policy(crate::commands::policy::PolicyArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completion(crate::commands::completion::CompletionArgs),
}
