//! Runs the guests under QEMU (`-M microvm`, KVM) as a check that does not depend on
//! sbx-vmm. QEMU's `isa-debug-exit` device at port 0x600 turns the guests' ACPI poweroff
//! write (0x34) into exit status (0x34 << 1) | 1 = 105.
//!
//! Skipped (with a message) when `qemu-system-x86_64` or `/dev/kvm` is missing, unless
//! `SBX_REQUIRE_QEMU=1`, which turns that into a failure.
#![allow(clippy::print_stderr)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sbx_test_guests::{expect, qemu, HELLO_I8042_PVH, HELLO_PVH, MINIMAL, SMP};

const QEMU: &str = "qemu-system-x86_64";
const POWEROFF_STATUS: i32 = 105;
const TIMEOUT: Duration = Duration::from_secs(60);

/// One QEMU at a time: the machines this runs on have two cores and a slow nested KVM.
static SERIAL: Mutex<()> = Mutex::new(());

fn skip_reason() -> Option<String> {
    let reason = if !std::path::Path::new("/dev/kvm").exists() {
        "/dev/kvm is missing".to_owned()
    } else if Command::new(QEMU).arg("--version").output().is_err() {
        format!("{QEMU} is not installed (apt-get install qemu-system-x86)")
    } else {
        return None;
    };
    if std::env::var("SBX_REQUIRE_QEMU").is_ok_and(|v| v == "1") {
        panic!("SBX_REQUIRE_QEMU=1 but {reason}");
    }
    Some(reason)
}

macro_rules! require_qemu {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

struct Run {
    status: Option<i32>,
    serial: Vec<u8>,
    stderr: String,
}

impl Run {
    fn serial_text(&self) -> String {
        String::from_utf8_lossy(&self.serial).into_owned()
    }
}

fn run_qemu(machine: &str, kernel: &str, extra: &[&str]) -> Run {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = Command::new(QEMU)
        .args([
            "-M",
            machine,
            "-enable-kvm",
            "-cpu",
            "host,-arch-capabilities",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-serial",
            "stdio",
        ])
        .args(["-device", "isa-debug-exit,iobase=0x600,iosize=1"])
        .args(extra)
        .args(["-kernel", kernel])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let err = std::thread::spawn(move || {
        let mut buf = String::new();
        stderr.read_to_string(&mut buf).map(|_| buf)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            child.kill().expect("kill qemu");
            break child.wait().expect("reap qemu");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        status: status.code(),
        serial: out.join().unwrap().expect("read qemu stdout"),
        stderr: err.join().unwrap().expect("read qemu stderr"),
    }
}

fn assert_output(run: &Run, expected: &[u8], status: i32) {
    assert_eq!(
        run.serial_text(),
        String::from_utf8_lossy(expected),
        "qemu stderr: {}",
        run.stderr
    );
    assert_eq!(run.status, Some(status), "qemu stderr: {}", run.stderr);
}

#[test]
fn minimal_prints_one_byte_and_powers_off() {
    require_qemu!();
    let run = run_qemu("microvm", MINIMAL, &[]);
    assert_output(&run, expect::MINIMAL, POWEROFF_STATUS);
}

#[test]
fn hello_pvh() {
    require_qemu!();
    let run = run_qemu("microvm", HELLO_PVH, &[]);
    assert_output(&run, expect::HELLO_PVH.as_bytes(), POWEROFF_STATUS);
}

#[test]
fn hello_64_behind_the_pvh_shim() {
    require_qemu!();
    let run = run_qemu("microvm", qemu::HELLO_64, &[]);
    assert_output(&run, expect::HELLO_64.as_bytes(), POWEROFF_STATUS);
}

/// microvm has no i8042; q35 does, and boots PVH kernels through its option ROM.
#[test]
fn hello_i8042_resets() {
    require_qemu!();
    let run = run_qemu("q35", HELLO_I8042_PVH, &["-no-reboot"]);
    // SeaBIOS writes to the serial port before the guest does.
    let text = run.serial_text();
    assert!(
        text.ends_with(expect::HELLO_I8042_PVH),
        "{text:?} / {}",
        run.stderr
    );
    assert_eq!(run.status, Some(0), "qemu stderr: {}", run.stderr);
}

#[test]
fn smp_counts_two_cpus() {
    require_qemu!();
    let run = run_qemu("microvm", SMP, &["-smp", "2"]);
    assert_output(&run, expect::smp(2, 2).as_bytes(), POWEROFF_STATUS);
}

struct TempDisk(PathBuf);

impl Drop for TempDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn virtio_reads_writes_and_gets_entropy() {
    require_qemu!();
    let disk = TempDisk(
        std::env::temp_dir().join(format!("sbx-test-guests-disk-{}.img", std::process::id())),
    );
    let mut image = vec![0u8; 1 << 20];
    image[..16].copy_from_slice(expect::VIRTIO_SECTOR0.as_bytes());
    image[512..1024].fill(0xaa);
    std::fs::write(&disk.0, &image).unwrap();

    let drive = format!("id=d0,file={},format=raw,if=none", disk.0.display());
    let run = run_qemu(
        "microvm",
        qemu::VIRTIO,
        &[
            "-global",
            "virtio-mmio.force-legacy=false",
            "-device",
            "virtio-blk-device,drive=d0",
            "-drive",
            &drive,
            "-device",
            "virtio-rng-device",
        ],
    );
    let text = run.serial_text();
    assert_eq!(run.status, Some(POWEROFF_STATUS), "{text}\n{}", run.stderr);
    assert!(!text.contains("virtio: error"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let expect_line = |l: &str| assert!(lines.contains(&l), "no line {l:?} in\n{text}");
    expect_line("blk: capacity=2048 sector0=SBX-DISK-SECTOR0");
    expect_line("blk: wrote sector1=written-by-guest");
    expect_line("blk: sector1=written-by-guest");
    expect_line("blk: flush ok");
    let rng = lines
        .iter()
        .find_map(|l| l.strip_prefix("rng: bytes="))
        .unwrap_or_else(|| panic!("no rng line in\n{text}"));
    assert_eq!(rng.len(), 32, "{rng}");
    assert!(rng.bytes().all(|b| b.is_ascii_hexdigit()), "{rng}");
    assert!(text.ends_with(&format!("{}{}", expect::VIRTIO_DONE, expect::POWEROFF_LINE)));

    let after = std::fs::read(&disk.0).unwrap();
    let mut sector1 = vec![0u8; 512];
    sector1[..16].copy_from_slice(expect::VIRTIO_SECTOR1.as_bytes());
    assert_eq!(&after[512..1024], &sector1[..], "sector 1 on the host");
    assert_eq!(&after[..16], expect::VIRTIO_SECTOR0.as_bytes());
}
