//! `sbx diagnose`: what this host can run, and why not.

use std::io::Write;
use std::path::Path;

use clap::Args;
use sbx_image::ImageKind;

use crate::exit::ExitStatus;
use crate::sandbox::state::Layout;

/// Arguments of `sbx diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Print JSON instead of a human summary.
    #[arg(long)]
    pub json: bool,
}

/// Free bytes on the filesystem holding `p` (or its nearest existing parent).
fn free_bytes(p: &Path) -> Option<u64> {
    let mut at = Some(p);
    while let Some(dir) = at {
        if let Ok(st) = nix::sys::statvfs::statvfs(dir) {
            return Some(st.blocks_available().saturating_mul(st.fragment_size()));
        }
        at = dir.parent();
    }
    None
}

fn image_state(layout: &Layout) -> (String, String) {
    let store = sbx_image::Store::new(layout.images());
    let show = |kind: ImageKind| match store.current(kind, "default") {
        Ok(Some(img)) => format!(
            "{} ({})",
            img.manifest.key,
            crate::sandbox::config::human_bytes(img.manifest.disk_bytes())
        ),
        Ok(None) => "not built (built on first use, or `sbx image build`)".into(),
        Err(e) => format!("unreadable: {e}"),
    };
    (show(ImageKind::Rootfs), show(ImageKind::Kernel))
}

/// Print the host report.
pub fn run(args: DiagnoseArgs) -> anyhow::Result<ExitStatus> {
    let kvm = sbx_vmm::detect_kvm();
    let layout = Layout::current()?;
    let data_dir = layout.data_dir.clone();
    let backend = if kvm.hardware_assisted() {
        "microvm"
    } else {
        "namespace"
    };
    let scratch = std::env::temp_dir().join(format!("sbx-diagnose-{}", std::process::id()));
    let ns = sbx_ns::host_support(&sbx_ns::Helper::CurrentExe, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let namespaces = if ns.ok {
        format!("ok ({})", if ns.rootless { "rootless" } else { "as root" })
    } else {
        format!("unavailable: {}", ns.reasons.join("; "))
    };
    let cgroups = if ns.warnings.is_empty() {
        "memory, cpu and pids limits available".to_owned()
    } else {
        format!("limited: {}", ns.warnings.join("; "))
    };
    let (rootfs, kernel) = image_state(&layout);
    let secret_store = match crate::commands::secret::chosen_kind() {
        Ok(k) => k.to_string(),
        Err(e) => format!("none usable: {e:#}"),
    };
    let free = free_bytes(&data_dir);
    let mut out = std::io::stdout().lock();
    if args.json {
        let j = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into());
        writeln!(
            out,
            "{{\"kvm\":{{\"available\":{},\"hardware_assisted\":{},\"reason\":{}}},\"default_backend\":\"{backend}\",\"data_dir\":{},\"namespaces\":{{\"ok\":{},\"reasons\":{}}},\"cgroups\":{},\"images\":{{\"dir\":{},\"rootfs\":{},\"kernel\":{}}},\"secret_store\":{},\"disk_free_bytes\":{}}}",
            kvm.available(),
            kvm.hardware_assisted(),
            j(&kvm.reason),
            j(&data_dir.display().to_string()),
            ns.ok,
            serde_json::to_string(&ns.reasons)?,
            j(&cgroups),
            j(&layout.images().display().to_string()),
            j(&rootfs),
            j(&kernel),
            j(&secret_store),
            free.map_or("null".into(), |f| f.to_string()),
        )?;
    } else {
        writeln!(out, "kvm:             {}", kvm.reason)?;
        writeln!(out, "default backend: {backend}")?;
        writeln!(out, "namespaces:      {namespaces}")?;
        writeln!(out, "cgroups:         {cgroups}")?;
        writeln!(out, "data dir:        {}", data_dir.display())?;
        writeln!(out, "images:          {}", layout.images().display())?;
        writeln!(out, "  rootfs:        {rootfs}")?;
        writeln!(out, "  kernel:        {kernel}")?;
        writeln!(out, "secret store:    {secret_store}")?;
        writeln!(
            out,
            "free disk:       {}",
            free.map_or("unknown".into(), crate::sandbox::config::human_bytes)
        )?;
    }
    Ok(ExitStatus::Success)
}
