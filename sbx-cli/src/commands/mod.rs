//! One module per subcommand.

pub mod completion;
pub mod create;
pub mod diagnose;
pub mod exec;
pub mod git_bridge;
pub mod image;
pub mod kit;
pub mod login;
pub mod ls;
pub mod policy;
pub mod policy_log;
pub mod rm;
pub mod run;
pub mod secret;
pub mod stop;

use crate::cli::{Cli, Command};
use crate::exit::ExitStatus;

/// Dispatch a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Create(args) => create::run(args),
        Command::Run(args) => run::run(args),
        Command::Exec(args) => exec::run(args),
        Command::Ls(args) => ls::run(args),
        Command::Stop(args) => stop::run(args),
        Command::Rm(args) => rm::run(args),
        Command::Supervise { name } => crate::sandbox::supervisor::main(&name),
        Command::GitUploadPack(args) => git_bridge::run(args),
        Command::Diagnose(args) => diagnose::run(args),
        Command::Secret(args) => secret::run(args),
        Command::Image(args) => image::run(args),
        Command::Kit(args) => kit::run(args),
        Command::Login(args) => login::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Completion(args) => completion::run(args),
    }
}
