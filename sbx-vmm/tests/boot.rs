//! Boot the repo's own test guests through the public API on this host's KVM.
//!
//! Each test skips (printing why) only when `/dev/kvm` is absent, and fails instead when
//! `SBX_REQUIRE_KVM=1`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sbx_test_guests as guests;
use sbx_vmm::{require_kvm, KernelKind, Vm, VmBuilder, VmExit};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Wait for `vm` with a watchdog so a hung guest fails the test instead of the suite.
fn wait_with_timeout(vm: Vm, secs: u64) -> VmExit {
    let stop = vm.stop_handle();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if d.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.stop();
    });
    let exit = vm.wait();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    exit
}

fn boot(builder: VmBuilder) -> (VmExit, String, Option<KernelKind>) {
    let out = Capture::default();
    let vm = builder
        .serial_output(Box::new(out.clone()))
        .start()
        .unwrap();
    let kind = Some(vm.kernel_kind());
    let exit = wait_with_timeout(vm, 60);
    (exit, out.text(), kind)
}

#[test]
fn pvh_guest_prints_and_powers_off_through_acpi() {
    require_kvm!();
    let (exit, out, kind) = boot(VmBuilder::new(guests::HELLO_PVH).memory_mib(16));
    assert_eq!(out, guests::expect::HELLO_PVH);
    assert_eq!(exit, VmExit::Poweroff, "{out}");
    assert_eq!(kind, Some(KernelKind::PvhElf));
}

#[test]
fn long_mode_guest_prints_and_powers_off_through_acpi() {
    require_kvm!();
    let (exit, out, kind) = boot(VmBuilder::new(guests::HELLO_64).memory_mib(16));
    assert_eq!(out, guests::expect::HELLO_64);
    assert_eq!(exit, VmExit::Poweroff, "{out}");
    assert_eq!(kind, Some(KernelKind::Elf64));
}

#[test]
fn pvh_guest_resets_through_i8042() {
    require_kvm!();
    let (exit, out, _) = boot(VmBuilder::new(guests::HELLO_I8042_PVH).memory_mib(16));
    assert_eq!(out, guests::expect::HELLO_I8042_PVH);
    assert_eq!(exit, VmExit::Reset);
}

#[test]
fn long_mode_guest_resets_through_i8042() {
    require_kvm!();
    let (exit, out, _) = boot(VmBuilder::new(guests::HELLO_I8042_64).memory_mib(16));
    assert_eq!(out, guests::expect::HELLO_I8042_64);
    assert_eq!(exit, VmExit::Reset);
}

#[test]
fn guest_sees_the_vcpus_it_was_started_with() {
    require_kvm!();
    for n in [1u8, 2, 4] {
        let (exit, out, _) = boot(VmBuilder::new(guests::SMP).memory_mib(16).vcpus(n));
        assert_eq!(exit, VmExit::Poweroff, "{out}");
        assert_eq!(out, guests::expect::smp(n.into(), n.into()), "vcpus={n}");
    }
}

fn disk_with_sector0(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("disk.img");
    let mut data = guests::expect::VIRTIO_SECTOR0.as_bytes().to_vec();
    data.resize(64 * 1024, 0);
    std::fs::write(&path, data).unwrap();
    path
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sbx-vmm-boot-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn virtio_driver_guest_reads_writes_and_flushes_the_disk_and_gets_entropy() {
    require_kvm!();
    let dir = temp_dir("virtio");
    let disk = disk_with_sector0(&dir);
    let (exit, out, _) = boot(
        VmBuilder::new(guests::VIRTIO)
            .memory_mib(16)
            .disk(&disk, false)
            .rng(true),
    );
    assert_eq!(exit, VmExit::Poweroff, "{out}");
    assert!(out.contains("virtio: slot 0 id=2 version=2\n"), "{out}");
    assert!(out.contains("virtio: slot 1 id=4 version=2\n"), "{out}");
    assert!(
        out.contains("blk: capacity=128 sector0=SBX-DISK-SECTOR0\n"),
        "{out}"
    );
    assert!(out.contains("blk: sector1=written-by-guest\n"), "{out}");
    assert!(out.contains("blk: flush ok\n"), "{out}");
    assert!(
        out.ends_with("virtio: done errors=0\nsbx-test-guest: poweroff\n"),
        "{out}"
    );
    let rng_line = out.lines().find(|l| l.starts_with("rng: bytes=")).unwrap();
    let hex = rng_line.trim_start_matches("rng: bytes=");
    assert_eq!(hex.len(), 32, "{out}");
    assert_ne!(hex, "0".repeat(32));
    // The guest's write reached the host file.
    let data = std::fs::read(&disk).unwrap();
    assert_eq!(&data[512..528], guests::expect::VIRTIO_SECTOR1.as_bytes());
    assert!(data[528..1024].iter().all(|b| *b == 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_only_disk_is_not_written_by_the_guest() {
    require_kvm!();
    let dir = temp_dir("ro");
    let disk = disk_with_sector0(&dir);
    let before = std::fs::read(&disk).unwrap();
    let (exit, out, _) = boot(
        VmBuilder::new(guests::VIRTIO)
            .memory_mib(16)
            .disk(&disk, true)
            .rng(true),
    );
    assert_eq!(exit, VmExit::Poweroff, "{out}");
    assert!(out.contains("blk: read-only, no write\n"), "{out}");
    assert!(out.contains("virtio: done errors=0\n"), "{out}");
    assert_eq!(std::fs::read(&disk).unwrap(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_ports_and_mmio_are_counted_not_fatal() {
    require_kvm!();
    let out = Capture::default();
    let vm = VmBuilder::new(guests::MISBEHAVE)
        .memory_mib(16)
        .serial_output(Box::new(out.clone()))
        .start()
        .unwrap();
    let metrics = vm.metrics();
    let exit = wait_with_timeout(vm, 60);
    assert_eq!(exit, VmExit::Poweroff, "{}", out.text());
    assert_eq!(out.text(), guests::expect::MISBEHAVE);
    let m = metrics.snapshot();
    assert_eq!(m.unknown_pio_reads, 1, "{m:?}");
    assert_eq!(m.unknown_pio_writes, 1, "{m:?}");
    // 0xe000_0000 and the empty first virtio window.
    assert_eq!(m.unknown_mmio_reads, 2, "{m:?}");
    assert_eq!(m.unknown_mmio_writes, 2, "{m:?}");
}

#[test]
fn bad_access_sizes_on_a_virtio_window_do_not_stop_the_guest() {
    require_kvm!();
    let dir = temp_dir("misbehave");
    let disk = disk_with_sector0(&dir);
    let out = Capture::default();
    let vm = VmBuilder::new(guests::MISBEHAVE)
        .memory_mib(16)
        .disk(&disk, false)
        .serial_output(Box::new(out.clone()))
        .start()
        .unwrap();
    let metrics = vm.metrics();
    let exit = wait_with_timeout(vm, 60);
    assert_eq!(exit, VmExit::Poweroff, "{}", out.text());
    assert_eq!(out.text(), guests::expect::MISBEHAVE);
    // Now the window belongs to the virtio-blk transport, which absorbs the bad accesses.
    assert_eq!(metrics.snapshot().unknown_mmio_reads, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn host_stop_ends_a_spinning_guest() {
    require_kvm!();
    for vcpus in [1u8, 3] {
        let out = Capture::default();
        let vm = VmBuilder::new(guests::SPIN)
            .memory_mib(16)
            .vcpus(vcpus)
            .serial_output(Box::new(out.clone()))
            .start()
            .unwrap();
        let stop = vm.stop_handle();
        // Wait until the guest runs, then stop it from another thread.
        let o = out.clone();
        let stopper = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while o.text() != guests::expect::SPIN && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.stop();
        });
        let exit = vm.wait();
        stopper.join().unwrap();
        assert_eq!(exit, VmExit::Stopped);
        assert_eq!(out.text(), guests::expect::SPIN);
    }
}

#[test]
fn dropping_a_running_vm_stops_it() {
    require_kvm!();
    let vm = VmBuilder::new(guests::SPIN).memory_mib(16).start().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = std::time::Instant::now();
    drop(vm);
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_configuration_gives_clear_errors() {
    require_kvm!();
    let err = |b: VmBuilder| b.start().unwrap_err().to_string();
    assert!(err(VmBuilder::new("/nonexistent/vmlinuz")).contains("cannot read kernel"));
    assert!(err(VmBuilder::new("/etc/hostname")).contains("is not a Linux kernel"));
    assert!(err(VmBuilder::new(guests::HELLO_PVH).memory_mib(1)).contains("too small"));
    assert!(
        err(VmBuilder::new(guests::HELLO_PVH).memory_mib(1 << 40)).contains("more than this host")
    );
    assert!(err(VmBuilder::new(guests::HELLO_PVH).vcpus(0)).contains("vCPUs"));
    assert!(err(VmBuilder::new(guests::HELLO_PVH).vcpus(200)).contains("vCPUs"));
    assert!(
        err(VmBuilder::new(guests::HELLO_PVH).disk("/nonexistent.img", true))
            .contains("cannot use disk image /nonexistent.img")
    );
    let dir = temp_dir("ro-file");
    let ro = dir.join("ro.img");
    std::fs::write(&ro, [0u8; 512]).unwrap();
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&ro, perms).unwrap();
    // Root ignores file modes; the read-only open path is what matters for everyone else.
    assert!(VmBuilder::new(guests::HELLO_PVH)
        .memory_mib(16)
        .disk(&ro, true)
        .start()
        .map(|vm| wait_with_timeout(vm, 60))
        .is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_triple_fault_is_reported_as_a_crash_with_registers() {
    require_kvm!();
    let (exit, out, _) = boot(VmBuilder::new(guests::CRASH).memory_mib(16));
    assert_eq!(out, guests::expect::CRASH);
    let VmExit::Crashed(report) = exit else {
        panic!("expected a crash, got {exit:?}");
    };
    assert_eq!(report.vcpu, 0);
    // Hardware KVM reports the triple fault (KVM_EXIT_SHUTDOWN); kvm_pvm fails to emulate the
    // fault delivery through an empty IDT and reports an internal error instead.
    if sbx_vmm::detect_kvm().hardware_assisted() {
        assert!(report.reason.contains("triple fault"), "{report}");
    } else {
        assert!(
            report.reason.contains("triple fault") || report.reason.contains("internal error"),
            "{report}"
        );
    }
    let regs = report.regs.expect("registers of the crashed vCPU");
    assert_eq!(
        regs.rax & 0xffff_ffff,
        guests::expect::CRASH_EAX,
        "{report}"
    );
    assert!(report.to_string().contains("rip="), "{report}");
}
