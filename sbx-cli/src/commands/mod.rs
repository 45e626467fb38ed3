//! One module per subcommand.

pub mod diagnose;
pub mod image;
pub mod kit;
pub mod login;
pub mod secret;

use crate::cli::{Cli, Command};
use crate::exit::ExitStatus;

/// Dispatch a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Diagnose(args) => diagnose::run(args),
        Command::Secret(args) => secret::run(args),
        Command::Image(args) => image::run(args),
        Command::Kit(args) => kit::run(args),
        Command::Login(args) => login::run(args),
    }
}
