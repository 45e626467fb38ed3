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
}
