//! Boot a kernel in an sbx-vmm microVM with the serial console on stdout.
//!
//! ```text
//! cargo run --release -p sbx-examples --example boot -- --kernel PATH [--initrd PATH] \
//!   [--cmdline STR] [--mem-mib N] [--vcpus N] [--disk PATH[:ro]]... [--rng]
//! ```
//! Exits 0 when the guest powers off or resets, 1 with a message otherwise, 2 on bad usage.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use sbx_vmm::{VmBuilder, VmExit};

const USAGE: &str = "usage: boot --kernel PATH [--initrd PATH] [--cmdline STR] [--mem-mib N] \
[--vcpus N] [--disk PATH[:ro]]... [--rng]";

fn parse() -> Result<VmBuilder, String> {
    let mut args = std::env::args().skip(1);
    let mut kernel = None;
    let mut initrd = None;
    let mut cmdline = None;
    let mut mem = None;
    let mut vcpus = None;
    let mut disks = Vec::new();
    let mut rng = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--kernel" => kernel = Some(value("--kernel")?),
            "--initrd" => initrd = Some(value("--initrd")?),
            "--cmdline" => cmdline = Some(value("--cmdline")?),
            "--mem-mib" => {
                let v = value("--mem-mib")?;
                mem = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("--mem-mib: `{v}` is not a number of MiB"))?,
                );
            }
            "--vcpus" => {
                let v = value("--vcpus")?;
                vcpus = Some(
                    v.parse::<u8>()
                        .map_err(|_| format!("--vcpus: `{v}` is not a count between 1 and 32"))?,
                );
            }
            "--disk" => {
                let v = value("--disk")?;
                match v.strip_suffix(":ro") {
                    Some(path) => disks.push((path.to_owned(), true)),
                    None => disks.push((v, false)),
                }
            }
            "--rng" => rng = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let kernel = kernel.ok_or_else(|| format!("--kernel is required\n{USAGE}"))?;
    let mut b = VmBuilder::new(kernel).serial_output(Box::new(std::io::stdout()));
    if let Some(i) = initrd {
        b = b.initrd(i);
    }
    if let Some(c) = cmdline {
        b = b.cmdline(c);
    }
    if let Some(m) = mem {
        b = b.memory_mib(m);
    }
    if let Some(v) = vcpus {
        b = b.vcpus(v);
    }
    for (path, ro) in disks {
        b = b.disk(path, ro);
    }
    Ok(b.rng(rng))
}

fn main() -> ExitCode {
    let builder = match parse() {
        Ok(b) => b,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let vm = match builder.start() {
        Ok(vm) => vm,
        Err(e) => {
            let mut msg = format!("boot: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            return ExitCode::FAILURE;
        }
    };
    // Forward our stdin to the guest's serial console.
    let console = vm.console_input();
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = std::io::stdin().read(&mut buf) {
                console.send_all(&buf[..n]);
            }
        });
    match vm.wait() {
        VmExit::Poweroff | VmExit::Reset => ExitCode::SUCCESS,
        other => {
            eprintln!("boot: VM ended: {other}");
            ExitCode::FAILURE
        }
    }
}
