//! Boot one of the repo's own test guests in an sbx-vmm microVM: a tiny virtio driver that
//! reads and writes a scratch disk and pulls entropy from virtio-rng, then powers off.
//!
//! `cargo run -p sbx-examples --example demo_vm`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use sbx_vmm::{detect_kvm, VmBuilder, VmExit};

fn main() -> ExitCode {
    let kvm = detect_kvm();
    println!("KVM: {}", kvm.reason);
    let disk = std::env::temp_dir().join(format!("sbx-demo-{}.img", std::process::id()));
    let mut data = sbx_test_guests::expect::VIRTIO_SECTOR0.as_bytes().to_vec();
    data.resize(1 << 20, 0);
    if let Err(e) = std::fs::write(&disk, data) {
        eprintln!("demo_vm: cannot write {}: {e}", disk.display());
        return ExitCode::FAILURE;
    }
    let started = std::time::Instant::now();
    let result = VmBuilder::new(sbx_test_guests::VIRTIO)
        .memory_mib(32)
        .disk(&disk, false)
        .rng(true)
        .serial_output(Box::new(std::io::stdout()))
        .start()
        .map(|vm| vm.wait());
    let _ = std::fs::remove_file(&disk);
    match result {
        Ok(VmExit::Poweroff) => {
            println!("microVM powered off after {:.1?}", started.elapsed());
            ExitCode::SUCCESS
        }
        Ok(other) => {
            eprintln!("demo_vm: VM ended: {other}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo_vm: {e}");
            ExitCode::FAILURE
        }
    }
}
