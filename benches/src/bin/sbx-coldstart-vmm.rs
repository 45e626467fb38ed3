//! The VMM side of the cold-start benchmark: boot a kernel with sbx-vmm, serial to stdout.
//!
//! `sbx-coldstart-vmm KERNEL [MEM_MIB]`. With `SBX_BENCH_RSS=1` it prints, on stderr, the
//! process's memory at the moment the guest writes its first serial byte:
//! `rss anon_kib=.. file_kib=.. shmem_kib=..` (guest RAM is a shared memfd, so it is
//! `shmem`; the VMM's own overhead is `anon + file`).
#![allow(clippy::print_stderr)]

use std::io::Write;
use std::process::ExitCode;

use sbx_vmm::{VmBuilder, VmExit};

struct FirstByte {
    seen: bool,
    report_rss: bool,
}

impl Write for FirstByte {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        if !self.seen && !buf.is_empty() {
            self.seen = true;
            if self.report_rss {
                eprintln!("{}", sbx_benches::rss_line(std::process::id()));
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(kernel) = args.next() else {
        eprintln!("usage: sbx-coldstart-vmm KERNEL [MEM_MIB]");
        return ExitCode::from(2);
    };
    let mem = args.next().and_then(|m| m.parse().ok()).unwrap_or(16);
    let out = FirstByte {
        seen: false,
        report_rss: std::env::var_os("SBX_BENCH_RSS").is_some(),
    };
    let vm = match VmBuilder::new(kernel)
        .memory_mib(mem)
        .serial_output(Box::new(out))
        .start()
    {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("sbx-coldstart-vmm: {e}");
            return ExitCode::FAILURE;
        }
    };
    match vm.wait() {
        VmExit::Poweroff | VmExit::Reset => ExitCode::SUCCESS,
        other => {
            eprintln!("sbx-coldstart-vmm: {other}");
            ExitCode::FAILURE
        }
    }
}
