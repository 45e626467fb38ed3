//! The built-in agent templates: kits shipped inside the binary.

use crate::{kit::parse_spec, Error, Kit, Result};

/// The names of the built-in templates, in the order `sbx` lists them.
pub const TEMPLATE_NAMES: &[&str] = &["shell", "copilot", "claude", "codex", "gemini"];

const SOURCES: &[(&str, &str)] = &[
    ("shell", include_str!("../templates/shell.yaml")),
    ("copilot", include_str!("../templates/copilot.yaml")),
    ("claude", include_str!("../templates/claude.yaml")),
    ("codex", include_str!("../templates/codex.yaml")),
    ("gemini", include_str!("../templates/gemini.yaml")),
];

/// The `spec.yaml` text of a built-in template.
pub fn template_source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// A built-in template as a kit, with origin `template:<name>`.
pub fn template(name: &str) -> Result<Kit> {
    let src = template_source(name).ok_or_else(|| Error::UnknownTemplate {
        name: name.to_owned(),
    })?;
    let spec = parse_spec(src, &format!("<built-in template {name}>"))?;
    Ok(Kit::builtin(spec))
}

/// Every built-in template, in [`TEMPLATE_NAMES`] order.
pub fn templates() -> Result<Vec<Kit>> {
    TEMPLATE_NAMES.iter().map(|n| template(n)).collect()
}
