//! `sbx stop SANDBOX...`.

use std::io::Write;

use clap::Args;

use crate::exit::ExitStatus;
use crate::sandbox::lifecycle;
use crate::sandbox::state::Layout;

const EXAMPLES: &str = "\
Examples:
  sbx stop shell-app
  sbx stop $(sbx ls -q)

The agent ends every process in the sandbox; after 20 seconds the sandbox is stopped by force.
Its files (the writable layer) are kept for the next start; `sbx rm` deletes them.";

/// Arguments of `sbx stop`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct StopArgs {
    /// The sandboxes to stop.
    #[arg(value_name = "SANDBOX", required = true)]
    pub sandboxes: Vec<String>,
}

/// Run `sbx stop`.
pub fn run(args: StopArgs) -> anyhow::Result<ExitStatus> {
    let layout = Layout::current()?;
    let mut failed = None;
    for name in &args.sandboxes {
        let res = lifecycle::find(&layout, name).and_then(|(dir, _)| lifecycle::stop(&dir));
        match res {
            Ok(true) => writeln!(std::io::stdout(), "{name}")?,
            Ok(false) => {
                let _ = writeln!(std::io::stderr(), "sbx: {name} was not running");
            }
            Err(e) => {
                crate::exit::print_error(&e);
                failed = Some(e);
            }
        }
    }
    Ok(if failed.is_some() {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}
