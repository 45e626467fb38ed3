//! The crate's error type and the diagnostics a kit author sees.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kit folder or its `spec.yaml` could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_SPEC_BYTES`](crate::MAX_SPEC_BYTES).
    #[error("{file} is too large ({size} bytes; a spec.yaml may have at most {limit})")]
    TooLarge {
        /// The file, as shown to the user.
        file: String,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The spec does not parse or does not validate; every problem found is listed.
    #[error("invalid kit {file}: {}", count_errors(diagnostics.len()))]
    Invalid {
        /// The file, as shown to the user.
        file: String,
        /// The problems, in source order.
        diagnostics: Vec<Diagnostic>,
    },
    /// A kit of the wrong kind was given to a merge (an agent as a mixin or the reverse).
    #[error("{origin} is a kit of kind {found}; {expected}")]
    WrongKind {
        /// The kit.
        origin: String,
        /// Its kind.
        found: &'static str,
        /// What the merge needed.
        expected: &'static str,
    },
    /// Two kits disagree in a way that merging cannot settle.
    #[error("{first} and {second} conflict: {what}")]
    Conflict {
        /// The kit that came first.
        first: String,
        /// The kit that came later.
        second: String,
        /// What they disagree about.
        what: String,
    },
    /// No built-in template has this name.
    #[error("no built-in agent template {name:?} (templates: {})", crate::TEMPLATE_NAMES.join(", "))]
    UnknownTemplate {
        /// The name asked for.
        name: String,
    },
}

fn count_errors(n: usize) -> String {
    if n == 1 {
        "1 error".to_owned()
    } else {
        format!("{n} errors")
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The diagnostics of an [`Error::Invalid`], empty for every other error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Error::Invalid { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

/// One problem in a `spec.yaml`: where it is, which field, what is wrong and what was expected.
///
/// `Display` gives one line, `FILE:LINE:COLUMN: FIELD: MESSAGE`, followed by
/// ` (HINT)` when there is a hint such as "did you mean `allowedDomains`?".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Diagnostic {
    /// The file, as shown to the user.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column (in characters).
    pub column: u64,
    /// The field path, e.g. `network.allowedDomains[2]`; empty for the document itself.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// A suggestion, e.g. "did you mean `allowedDomains`?".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The text of the line the diagnostic points at (at most 200 characters, control
    /// characters replaced), for [`Diagnostic::render`].
    #[serde(skip)]
    pub source_line: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// The diagnostic followed by the source line it points at and a caret under the column,
    /// in the style of compiler errors.
    pub fn render(&self) -> String {
        let mut out = self.to_string();
        let Some(line) = &self.source_line else {
            return out;
        };
        let number = self.line.to_string();
        let pad = " ".repeat(number.len());
        let caret_at: String = line
            .chars()
            .take(usize::try_from(self.column.saturating_sub(1)).unwrap_or(0))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!(
            "\n{pad} |\n{number} | {line}\n{pad} | {caret_at}^"
        ));
        out
    }
}

/// The text of 1-based line `line` of `src`, shortened and made safe to print.
pub(crate) fn source_line(src: &str, line: u64) -> Option<String> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let text = src.lines().nth(index)?;
    // Control characters would garble the terminal; tabs keep the caret aligned.
    Some(
        text.chars()
            .take(200)
            .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
            .collect(),
    )
}
