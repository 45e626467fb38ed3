//! Where sbx keeps its state: `$SBX_HOME`, else `$XDG_DATA_HOME/sbx`, else
//! `~/.local/share/sbx`.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// The data directory (not created).
pub fn data_dir() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("SBX_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            return Ok(xdg.join("sbx"));
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("cannot find the data directory: set SBX_HOME or HOME")?;
    let home = PathBuf::from(home);
    if !home.is_absolute() {
        bail!("HOME is not an absolute path: set SBX_HOME");
    }
    Ok(home.join(".local/share/sbx"))
}
