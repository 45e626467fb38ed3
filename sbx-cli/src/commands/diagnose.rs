//! `sbx diagnose`: what this host can run, and why not.

use std::io::Write;

use clap::Args;

use crate::exit::ExitStatus;

/// Arguments of `sbx diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Print JSON instead of a human summary.
    #[arg(long)]
    pub json: bool,
}

/// Print the host report.
pub fn run(args: DiagnoseArgs) -> anyhow::Result<ExitStatus> {
    let kvm = sbx_vmm::detect_kvm();
    let data_dir = crate::paths::data_dir()?;
    let backend = if kvm.hardware_assisted() {
        "microvm"
    } else {
        "namespace"
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{{\"kvm\":{{\"available\":{},\"hardware_assisted\":{},\"reason\":{}}},\"default_backend\":\"{backend}\",\"data_dir\":{}}}",
            kvm.available(),
            kvm.hardware_assisted(),
            json_string(&kvm.reason),
            json_string(&data_dir.display().to_string()),
        )?;
    } else {
        writeln!(out, "kvm:             {}", kvm.reason)?;
        writeln!(out, "default backend: {backend}")?;
        writeln!(out, "data dir:        {}", data_dir.display())?;
    }
    Ok(ExitStatus::Success)
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
