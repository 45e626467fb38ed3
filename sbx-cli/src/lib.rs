//! The `sbx` command line: argument parsing, the state directory, and composition of the sbx
//! library crates. Everything a user can do is a subcommand module under `commands/`.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod exit;
mod paths;
pub mod policy_store;
mod sandbox;

use std::process::ExitCode;

use clap::Parser;

pub use cli::Cli;
pub use exit::ExitStatus;

/// Parse the process arguments, run the command, print errors and map them to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match commands::run(cli) {
        Ok(status) => status.into(),
        Err(err) => {
            exit::print_error(&err);
            exit::status_of(&err).into()
        }
    }
}

/// `SBX_LOG` takes a `tracing` filter (e.g. `debug`, `sbx_vmm=trace`); logs go to stderr.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SBX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
