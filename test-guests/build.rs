//! Compiles the test guests in `guests/` with the system C toolchain into `OUT_DIR`.
//!
//! No binaries are committed: every guest is built from its `.S`/`.c` sources here, with
//! `cc` (override with `SBX_TEST_GUESTS_CC`) driving the assembler and `ld`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL_HINT: &str = "install the toolchain with `apt-get install gcc binutils`";

/// Flags for every guest: freestanding, static, linked at 1 MiB by `guests/guest.ld`.
const COMMON_FLAGS: &[&str] = &[
    "-nostdlib",
    "-ffreestanding",
    "-static",
    "-fno-pic",
    "-no-pie",
    "-Wl,--build-id=none",
    "-Wl,-z,noexecstack",
    "-Wl,-z,max-page-size=4096",
    "-Wl,-z,noseparate-code",
];

/// Extra flags for the C guests (64-bit, no SSE, no red zone: there is no OS beneath them).
const C_FLAGS: &[&str] = &[
    "-std=gnu11",
    "-O2",
    "-m64",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fcf-protection=none",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// virtio-mmio placement of QEMU's `microvm` machine, for the `-qemu` check variant.
const QEMU_VIRTIO_DEFINES: &[&str] = &[
    "-DVIRTIO_MMIO_BASE=0xfeb00000UL",
    "-DVIRTIO_MMIO_STRIDE=0x200UL",
    "-DVIRTIO_MMIO_COUNT=24",
];

struct GuestBuild {
    output: &'static str,
    sources: &'static [&'static str],
    defines: &'static [&'static str],
    c: bool,
}

const VIRTIO_SOURCES: &[&str] = &["start64.S", "rt.c", "virtio.c"];
const VIRTIO_QEMU_SOURCES: &[&str] = &["start64.S", "rt.c", "virtio.c", "pvh-long-shim.S"];

const GUESTS: &[GuestBuild] = &[
    GuestBuild {
        output: "hello-pvh.elf",
        sources: &["hello.S"],
        defines: &["-DPVH"],
        c: false,
    },
    GuestBuild {
        output: "hello-64.elf",
        sources: &["hello.S"],
        defines: &[],
        c: false,
    },
    GuestBuild {
        output: "hello-i8042-pvh.elf",
        sources: &["hello.S"],
        defines: &["-DPVH", "-DEXIT_I8042"],
        c: false,
    },
    GuestBuild {
        output: "hello-i8042-64.elf",
        sources: &["hello.S"],
        defines: &["-DEXIT_I8042"],
        c: false,
    },
    GuestBuild {
        output: "minimal.elf",
        sources: &["minimal.S"],
        defines: &[],
        c: false,
    },
    GuestBuild {
        output: "misbehave.elf",
        sources: &["misbehave.S"],
        defines: &[],
        c: false,
    },
    GuestBuild {
        output: "crash.elf",
        sources: &["crash.S"],
        defines: &[],
        c: false,
    },
    GuestBuild {
        output: "spin.elf",
        sources: &["spin.S"],
        defines: &[],
        c: false,
    },
    GuestBuild {
        output: "smp.elf",
        sources: &["smp.S"],
        defines: &[],
        c: false,
    },
    GuestBuild {
        output: "virtio.elf",
        sources: VIRTIO_SOURCES,
        defines: &[],
        c: true,
    },
    GuestBuild {
        output: "vsock.elf",
        sources: &["start64.S", "rt.c", "vsock.c"],
        defines: &[],
        c: true,
    },
    GuestBuild {
        output: "net.elf",
        sources: &["start64.S", "rt.c", "net.c"],
        defines: &[],
        c: true,
    },
    GuestBuild {
        output: "hello-64-qemu.elf",
        sources: &["hello.S", "pvh-long-shim.S"],
        defines: &[],
        c: false,
    },
    GuestBuild {
        output: "virtio-qemu.elf",
        sources: VIRTIO_QEMU_SOURCES,
        defines: QEMU_VIRTIO_DEFINES,
        c: true,
    },
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=guests");
    println!("cargo:rerun-if-env-changed=SBX_TEST_GUESTS_CC");

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let guests_dir = manifest_dir.join("guests");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let cc = env::var("SBX_TEST_GUESTS_CC").unwrap_or_else(|_| "cc".to_owned());

    check_compiler(&cc);
    for guest in GUESTS {
        build(&cc, &guests_dir, &out_dir, guest);
    }
}

fn check_compiler(cc: &str) {
    match Command::new(cc).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "sbx-test-guests: `{cc} --version` failed ({}): {}\n{INSTALL_HINT}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) => panic!(
            "sbx-test-guests: cannot run the C compiler `{cc}` ({err}); the test guests are \
             compiled from source at build time, {INSTALL_HINT}"
        ),
    }
}

fn build(cc: &str, guests_dir: &Path, out_dir: &Path, guest: &GuestBuild) {
    let output = out_dir.join(guest.output);
    let mut cmd = Command::new(cc);
    cmd.args(COMMON_FLAGS);
    if guest.c {
        cmd.args(C_FLAGS);
    }
    cmd.args(guest.defines)
        .arg("-I")
        .arg(guests_dir)
        .arg(format!("-Wl,-T,{}", guests_dir.join("guest.ld").display()))
        .arg("-o")
        .arg(&output);
    for source in guest.sources {
        cmd.arg(guests_dir.join(source));
    }
    let result = cmd
        .output()
        .unwrap_or_else(|err| panic!("sbx-test-guests: cannot run `{cc}` ({err}); {INSTALL_HINT}"));
    if !result.status.success() {
        panic!(
            "sbx-test-guests: building {} failed ({}):\n{:?}\n{}{}\n(if the assembler or linker \
             is missing: {INSTALL_HINT})",
            guest.output,
            result.status,
            cmd,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr),
        );
    }
}
