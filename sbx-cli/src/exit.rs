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

/// What to do about errors whose cause users cannot see from the message alone.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    let os_error = |code: i32| {
        err.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.raw_os_error() == Some(code))
                || c.downcast_ref::<nix::errno::Errno>()
                    .is_some_and(|e| *e as i32 == code)
        })
    };
    if os_error(nix::libc::ENOSPC) || os_error(nix::libc::EDQUOT) {
        let at = crate::paths::data_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "the data directory".into());
        return Some(format!(
            "the disk is full: free some space on the filesystem holding {at} (`sbx rm` unused sandboxes, `df -h`), then try again; nothing was removed"
        ));
    }
    None
}

/// `sbx: <error>: <cause>: <cause>` on stderr, and a hint when one helps.
pub fn print_error(err: &anyhow::Error) {
    use std::io::Write;
    let mut line = format!("sbx: {err}");
    for cause in err.chain().skip(1) {
        line.push_str(&format!(": {cause}"));
    }
    if let Some(hint) = hint(err) {
        line.push_str(&format!("\n  {hint}"));
    }
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_gets_a_hint() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(nix::libc::ENOSPC))
            .context("writing state.json");
        assert!(hint(&e)
            .unwrap()
            .starts_with("the disk is full: free some space"));
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(nix::libc::ENOENT));
        assert!(hint(&e).is_none());
    }
}
