//! `sbx image build` and `sbx image ls`: the guest images under `<data dir>/images`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sbx_image::{BuildOptions, Image, KernelRecipe, RootfsRecipe, Step, Store};

use crate::exit::ExitStatus;

/// Arguments of `sbx image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// What to do with images.
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// `sbx image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the Debian root filesystem, kernel and initramfs (reused when up to date).
    Build(BuildArgs),
    /// List built images.
    Ls(LsArgs),
}

/// Which images to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Only {
    /// The root filesystem (directory and ext4 image).
    Rootfs,
    /// The kernel and initramfs.
    Kernel,
}

/// Arguments of `sbx image build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Rebuild even if an image for the same recipe and package versions exists.
    #[arg(long)]
    pub force: bool,
    /// Build only this image.
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// The guest agent for the initramfs's /init (default: `sbx-guest` next to `sbx`, then
    /// on PATH).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
}

/// Arguments of `sbx image ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON (the manifests, with each image's directory and whether it is current).
    #[arg(long)]
    pub json: bool,
}

/// Run `sbx image ...`.
pub fn run(args: ImageArgs) -> anyhow::Result<ExitStatus> {
    let store = Store::new(crate::sandbox::state::Layout::current()?.images());
    match args.command {
        ImageCommand::Build(a) => build(&store, a),
        ImageCommand::Ls(a) => ls(&store, a),
    }
}

fn find_agent(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("guest agent not found: {}", p.display());
        }
        return Ok(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(sbx_guest_name())));
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(sbx_guest_name()))
            .find(|c| c.is_file())
    });
    // `sbx` itself is a multi-call binary that acts as the agent when started as `/init` or
    // `sbx-guest` (see `main`), so it serves when no smaller `sbx-guest` is around.
    beside
        .filter(|p| p.is_file())
        .or(on_path)
        .or_else(|| std::env::current_exe().ok())
        .context("no guest agent binary: pass --agent PATH (e.g. a `sbx-guest` build)")
}

fn sbx_guest_name() -> &'static str {
    "sbx-guest"
}

/// Shows build steps: a progress bar with the current step on a terminal, plain lines
/// otherwise.
struct Reporter {
    bar: Option<ProgressBar>,
    what: &'static str,
    last: usize,
}

impl Reporter {
    fn new(what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(1);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix:7} [{bar:20}] {pos}/{len} {wide_msg} {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(what);
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Reporter { bar, what, last: 0 }
    }

    fn step(&mut self, s: &Step<'_>) {
        match &self.bar {
            Some(b) => {
                b.set_length(s.total as u64);
                b.set_position(s.index.saturating_sub(1) as u64);
                let mut msg = s.label.to_owned();
                if let Some(d) = s.detail.filter(|d| !d.is_empty()) {
                    let d: String = d.chars().take(60).collect();
                    msg = format!("{msg}: {d}");
                }
                b.set_message(msg);
            }
            None if s.index != self.last => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{} [{}/{}] {}",
                    self.what,
                    s.index,
                    s.total,
                    s.label
                );
            }
            None => {}
        }
        self.last = s.index;
    }

    fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// Builds (or reuses) the default root filesystem with progress on stderr: `sbx create` and
/// `sbx run` call this on first use.
pub(crate) fn build_default_rootfs(store: &Store) -> anyhow::Result<Image> {
    let mut r = Reporter::new("rootfs");
    let res = store.build_rootfs(
        &RootfsRecipe::default(),
        &BuildOptions::default(),
        &mut |s| r.step(s),
    );
    r.finish();
    Ok(res?)
}

/// Builds (or reuses) the default kernel and initramfs with `agent` as `/init`.
pub(crate) fn build_default_kernel(store: &Store, agent: &Path) -> anyhow::Result<Image> {
    let mut r = Reporter::new("kernel");
    let res = store.build_kernel(
        &KernelRecipe::default(),
        agent,
        &BuildOptions::default(),
        &mut |s| r.step(s),
    );
    r.finish();
    Ok(res?)
}

fn build(store: &Store, a: BuildArgs) -> anyhow::Result<ExitStatus> {
    let opts = BuildOptions::default().with_force(a.force);
    let want_kernel = a.only != Some(Only::Rootfs);
    let agent = if want_kernel {
        Some(find_agent(a.agent)?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    if a.only != Some(Only::Kernel) {
        let (t, at) = (Instant::now(), SystemTime::now());
        let mut r = Reporter::new("rootfs");
        let res = store.build_rootfs(&RootfsRecipe::default(), &opts, &mut |s| r.step(s));
        r.finish();
        let img = res.context("building the root filesystem")?;
        summary(&mut out, &img, at, t.elapsed())?;
    }
    if let Some(agent) = agent {
        let (t, at) = (Instant::now(), SystemTime::now());
        let mut r = Reporter::new("kernel");
        let res = store.build_kernel(&KernelRecipe::default(), &agent, &opts, &mut |s| r.step(s));
        r.finish();
        let img = res.context("building the kernel and initramfs")?;
        summary(&mut out, &img, at, t.elapsed())?;
    }
    Ok(ExitStatus::Success)
}

fn summary(
    out: &mut impl Write,
    img: &Image,
    started: SystemTime,
    took: Duration,
) -> anyhow::Result<()> {
    let m = &img.manifest;
    let started = started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    writeln!(
        out,
        "{} {} ({}, {} on disk) in {:.1}s: {}",
        m.kind.as_str(),
        m.key,
        if m.created_unix >= started {
            "built"
        } else {
            "up to date"
        },
        human(m.disk_bytes()),
        took.as_secs_f64(),
        img.dir.display()
    )?;
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ls(store: &Store, a: LsArgs) -> anyhow::Result<ExitStatus> {
    let images = store
        .list()
        .with_context(|| format!("listing images in {}", store.dir().display()))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let list: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "dir": i.dir,
                    "current": store.is_current(i),
                    "disk_bytes": i.manifest.disk_bytes(),
                    "manifest": i.manifest,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(ExitStatus::Success);
    }
    if images.is_empty() {
        writeln!(
            out,
            "no images in {} (run `sbx image build`)",
            store.dir().display()
        )?;
        return Ok(ExitStatus::Success);
    }
    writeln!(
        out,
        "{:<7} {:<8} {:<16} {:>9} {:>8}  {:<7} CONTENTS",
        "KIND", "NAME", "KEY", "SIZE", "BUILD", "CURRENT"
    )?;
    for i in &images {
        let m = &i.manifest;
        let contents = match m.kind {
            sbx_image::ImageKind::Rootfs => format!("{} packages", m.packages.len()),
            sbx_image::ImageKind::Kernel => format!(
                "{} + {} modules",
                m.kernel_release.as_deref().unwrap_or("?"),
                m.modules.as_ref().map_or(0, |s| s.modules.len())
            ),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<7} {:<8} {:<16} {:>9} {:>7.0}s  {:<7} {contents}",
            m.kind.as_str(),
            m.name,
            m.key,
            human(m.disk_bytes()),
            m.build_seconds,
            if store.is_current(i) { "yes" } else { "" },
        )?;
    }
    writeln!(out, "\n{}", display_dir(store.dir()))?;
    Ok(ExitStatus::Success)
}

fn display_dir(p: &Path) -> String {
    format!("images in {}", p.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(300 << 20), "300.0 MiB");
    }

    #[test]
    fn explicit_agent_must_exist() {
        assert!(find_agent(Some("/nonexistent/sbx-guest".into())).is_err());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(find_agent(Some(exe.clone())).unwrap(), exe);
    }
}
