//! A kit: a parsed spec and where it came from.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Serialize, Serializer};

use crate::model::{Kind, KitSpec};
use crate::{validate, Diagnostic, Error, Result};

/// The most a `spec.yaml` may weigh. Real kits are a few KiB.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Where a kit, and so every rule it contributes, came from. Shown as `template:<name>` or
/// `kit:<name>` (for example by `sbx policy ls`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// A built-in agent template.
    Template(String),
    /// A kit folder given by the user.
    Kit(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Template(n) => write!(f, "template:{n}"),
            Origin::Kit(n) => write!(f, "kit:{n}"),
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A validated kit and its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kit {
    spec: KitSpec,
    origin: Origin,
    file: String,
}

impl Kit {
    /// Parses and validates a `spec.yaml` given as text. `file` names it in diagnostics.
    ///
    /// Every problem found is returned at once in [`Error::Invalid`].
    pub fn parse(src: &str, file: &str) -> Result<Kit> {
        let spec = parse_spec(src, file)?;
        Ok(Kit {
            origin: Origin::Kit(spec.name.clone()),
            spec,
            file: file.to_owned(),
        })
    }

    /// Reads and validates a kit folder's `spec.yaml` (or the file itself when `path` is a
    /// file). At most [`MAX_SPEC_BYTES`] are read.
    pub fn from_dir(path: impl AsRef<Path>) -> Result<Kit> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join("spec.yaml")
        } else {
            path.to_path_buf()
        };
        let shown = file.display().to_string();
        let io = |source| Error::Io {
            path: file.clone(),
            source,
        };
        let f = std::fs::File::open(&file).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        if size > MAX_SPEC_BYTES {
            return Err(Error::TooLarge {
                file: shown,
                size,
                limit: MAX_SPEC_BYTES,
            });
        }
        let mut bytes = Vec::new();
        f.take(MAX_SPEC_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_SPEC_BYTES {
            return Err(Error::TooLarge {
                file: shown,
                size: bytes.len() as u64,
                limit: MAX_SPEC_BYTES,
            });
        }
        let src = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = good.iter().filter(|b| **b == b'\n').count() as u64 + 1;
                let column = good.iter().rev().take_while(|b| **b != b'\n').count() as u64 + 1;
                return Err(Error::Invalid {
                    file: shown.clone(),
                    diagnostics: vec![Diagnostic {
                        file: shown,
                        line,
                        column,
                        path: String::new(),
                        message: "the file is not valid UTF-8".into(),
                        hint: None,
                        source_line: None,
                    }],
                });
            }
        };
        tracing::debug!(file = %shown, bytes = src.len(), "reading kit");
        Kit::parse(&src, &shown)
    }

    pub(crate) fn builtin(spec: KitSpec) -> Kit {
        Kit {
            file: format!("<built-in template {}>", spec.name),
            origin: Origin::Template(spec.name.clone()),
            spec,
        }
    }

    /// The validated spec.
    pub fn spec(&self) -> &KitSpec {
        &self.spec
    }

    /// The kit's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// `agent` or `mixin`.
    pub fn kind(&self) -> Kind {
        self.spec.kind
    }

    /// Where it came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The file it was read from, as shown in diagnostics.
    pub fn file(&self) -> &str {
        &self.file
    }
}

/// Parses and validates a `spec.yaml` given as text, returning the bare spec.
pub fn parse_spec(src: &str, file: &str) -> Result<KitSpec> {
    if src.len() as u64 > MAX_SPEC_BYTES {
        return Err(Error::TooLarge {
            file: file.to_owned(),
            size: src.len() as u64,
            limit: MAX_SPEC_BYTES,
        });
    }
    validate::parse_spec(src, file).map_err(|diagnostics| Error::Invalid {
        file: file.to_owned(),
        diagnostics,
    })
}
