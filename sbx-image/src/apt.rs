//! The host's apt: which versions its sources offer, downloading and unpacking `.deb`s.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::manifest::PackageVersion;
use crate::steps::Ctx;

/// The newest version of each package in the host's apt sources (`apt-cache madison`, which
/// ignores what is installed on the host). Packages it does not know are an
/// [`Error::UnknownPackages`]. When some are missing, the host's package lists may be stale or absent (a fresh
/// container): `apt-get update` once and ask again.
pub(crate) fn versions(ctx: &mut Ctx<'_>, packages: &[String]) -> Result<Vec<PackageVersion>> {
    let (mut found, mut unknown) = madison(ctx, packages)?;
    if !unknown.is_empty() {
        ctx.note("some packages unknown: refreshing the package lists");
        match ctx.run(Command::new("apt-get").args(["update", "-q"])) {
            Ok(()) => (found, unknown) = madison(ctx, packages)?,
            Err(e) => ctx.note(&format!("apt-get update failed: {e}")),
        }
    }
    if !unknown.is_empty() {
        ctx.note(&format!("unknown packages: {}", unknown.join(", ")));
        return Err(Error::UnknownPackages(unknown));
    }
    Ok(found)
}

type Found = (Vec<PackageVersion>, Vec<String>);

fn madison(ctx: &mut Ctx<'_>, packages: &[String]) -> Result<Found> {
    let text = ctx.output(Command::new("apt-cache").arg("madison").args(packages))?;
    let found = parse_madison(&text);
    let unknown = packages
        .iter()
        .filter(|p| !found.iter().any(|f| &f.name == *p))
        .cloned()
        .collect();
    Ok((found, unknown))
}

fn parse_madison(text: &str) -> Vec<PackageVersion> {
    let mut out: Vec<PackageVersion> = Vec::new();
    for line in text.lines() {
        let mut cols = line.split('|').map(str::trim);
        let (Some(name), Some(version)) = (cols.next(), cols.next()) else {
            continue;
        };
        if name.is_empty() || version.is_empty() || out.iter().any(|p| p.name == name) {
            continue;
        }
        out.push(PackageVersion {
            name: name.to_owned(),
            version: version.to_owned(),
        });
    }
    out
}

/// Resolves a meta package such as `linux-image-cloud-amd64` to the `linux-image-*` package
/// it depends on; any other package resolves to itself.
pub(crate) fn resolve_kernel_package(ctx: &mut Ctx<'_>, package: &str) -> Result<String> {
    let text = ctx.output(Command::new("apt-cache").args(["depends", package]))?;
    Ok(parse_kernel_depends(&text).unwrap_or_else(|| package.to_owned()))
}

fn parse_kernel_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|d| d.trim_start_matches('<').trim_end_matches('>'))
        .find(|d| d.starts_with("linux-image-"))
        .map(str::to_owned)
}

/// `apt-get download`s `package` into `dir` and returns the `.deb`.
pub(crate) fn download(ctx: &mut Ctx<'_>, package: &str, dir: &Path) -> Result<PathBuf> {
    ctx.run(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir),
    )?;
    let prefix = format!("{package}_");
    let entries = std::fs::read_dir(dir).map_err(Error::io("read the download directory", dir))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(e.path());
        }
    }
    Err(ctx.fail(format!("apt-get download left no {prefix}*.deb")))
}

/// Unpacks a `.deb`'s files into `dest` (`dpkg-deb -x`).
pub(crate) fn unpack(ctx: &mut Ctx<'_>, deb: &Path, dest: &Path) -> Result<()> {
    ctx.run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madison_takes_the_first_version_per_package() {
        let t = "       git | 1:2.39.5-0+deb12u3 | http://deb.debian.org/debian bookworm/main amd64 Packages
       git | 1:2.39.5-0+deb12u2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
    nodejs | 18.20.4+dfsg-1~deb12u3 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
";
        let v = parse_madison(t);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].version, "1:2.39.5-0+deb12u3");
        assert_eq!(v[1].name, "nodejs");
    }

    #[test]
    fn kernel_meta_package() {
        let t = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            parse_kernel_depends(t).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(parse_kernel_depends("busybox\n  Depends: libc6\n"), None);
    }
}
