//! Stable exit codes and how errors are printed.

use std::process::ExitCode;

/// The process exit status of a command that ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: success.
    Success,
    /// 1: the command failed.
    Failure,
    /// Any other code, e.g. an exec'd command's own exit code.
    Code(u8),
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        match s {
            ExitStatus::Success => ExitCode::SUCCESS,
            ExitStatus::Failure => ExitCode::FAILURE,
            ExitStatus::Code(c) => ExitCode::from(c),
        }
    }
}

/// Exit code for an error: 1 unless the error says otherwise.
pub fn status_of(_err: &anyhow::Error) -> ExitStatus {
    ExitStatus::Failure
}

/// `sbx: <error>: <cause>: <cause>` on stderr.
pub fn print_error(err: &anyhow::Error) {
    use std::io::Write;
    let mut line = format!("sbx: {err}");
    for cause in err.chain().skip(1) {
        line.push_str(&format!(": {cause}"));
    }
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
