//! Boot Debian's stock cloud kernel with a busybox initramfs and find the virtio-blk disk.
//!
//! The kernel and busybox come from Debian packages fetched at test time with
//! `apt-get download`. Loading the bzImage into guest memory is checked on every host; the
//! boot itself needs hardware-assisted KVM (a stock kernel does not boot under `kvm_pvm`), so
//! it skips with the reason on other hosts.
#![allow(clippy::print_stderr)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sbx_vmm::arch::x86_64::boot::load_kernel;
use sbx_vmm::memory::create_guest_memory;
use sbx_vmm::{detect_kvm, KernelKind, VmBuilder, VmExit};
use vm_memory::{Bytes, GuestAddress};

/// Modules the initramfs loads, in dependency order.
const MODULES: &[&str] = &[
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio_mmio.ko",
    "drivers/block/virtio_blk.ko",
];

fn cache_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-kernel");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Download and unpack a Debian package (resolving a meta package to its first
/// `linux-image-*` dependency), returning the unpack directory.
fn debian_package(name: &str) -> PathBuf {
    let dir = cache_dir();
    let unpacked = dir.join(format!("{name}.d"));
    if unpacked.join(".done").exists() {
        return unpacked;
    }
    let mut real = name.to_owned();
    if name == "linux-image-cloud-amd64" {
        let deps = run(Command::new("apt-cache").args(["depends", name]));
        real = deps
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|d| d.starts_with("linux-image-"))
            .unwrap_or_else(|| panic!("no linux-image dependency in:\n{deps}"))
            .to_owned();
    }
    run(Command::new("apt-get")
        .args(["download", &real])
        .current_dir(&dir));
    let deb = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{real}_")) && n.ends_with(".deb"))
        })
        .expect("downloaded .deb");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    std::fs::write(unpacked.join(".done"), b"").unwrap();
    unpacked
}

fn find_vmlinuz(root: &Path) -> (PathBuf, String) {
    let boot = root.join("boot");
    for e in std::fs::read_dir(&boot).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(version) = n.strip_prefix("vmlinuz-") {
            return (p.clone(), version.to_owned());
        }
    }
    panic!("no vmlinuz in {}", boot.display());
}

/// A `newc` cpio archive entry.
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8], ino: u32) {
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out.extend_from_slice(data);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn build_initramfs(kernel_root: &Path, version: &str, busybox: &Path) -> PathBuf {
    let mut init = String::from(
        "#!/bin/busybox sh\n/bin/busybox mkdir -p /proc /sys /dev\n\
         /bin/busybox mount -t proc proc /proc\n/bin/busybox mount -t sysfs sys /sys\n\
         /bin/busybox mount -t devtmpfs dev /dev\necho SBX-INIT-REACHED\n",
    );
    let mut files = vec![(
        "bin/busybox".to_owned(),
        std::fs::read(busybox).unwrap(),
        0o100755,
    )];
    for (i, m) in MODULES.iter().enumerate() {
        let path = kernel_root
            .join("lib/modules")
            .join(version)
            .join("kernel")
            .join(m);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = format!("m{i}.ko");
        init.push_str(&format!("/bin/busybox insmod /{name}\n"));
        files.push((name, data, 0o100644));
    }
    init.push_str(
        "/bin/busybox sleep 1\nif [ -b /dev/vda ]; then echo SBX-DISK-FOUND $(/bin/busybox head -c 16 /dev/vda); fi\n\
         /bin/busybox poweroff -f\n",
    );
    files.push(("init".into(), init.into_bytes(), 0o100755));
    let mut out = Vec::new();
    cpio_entry(&mut out, "bin", 0o40755, &[], 1);
    for (i, (name, data, mode)) in files.iter().enumerate() {
        cpio_entry(&mut out, name, *mode, data, i as u32 + 2);
    }
    cpio_entry(&mut out, "TRAILER!!!", 0, &[], 0);
    let path = cache_dir().join("initramfs.cpio");
    std::fs::write(&path, out).unwrap();
    path
}

fn have_apt() -> bool {
    Command::new("apt-get").arg("--version").output().is_ok()
}

#[test]
fn debian_cloud_kernel_loads_as_bzimage() {
    if !have_apt() {
        eprintln!("skipping: apt-get is not available to fetch Debian's cloud kernel");
        return;
    }
    let root = debian_package("linux-image-cloud-amd64");
    let (vmlinuz, _version) = find_vmlinuz(&root);
    let mem = create_guest_memory(256 << 20).unwrap();
    let (kind, entry) = load_kernel(&mem, 256 << 20, &vmlinuz, None, "console=ttyS0").unwrap();
    assert_eq!(kind, KernelKind::BzImage);
    assert_eq!(entry.addr, 0x10_0000 + 0x200);
    // The zero page carries the boot protocol magic and our command line pointer.
    let magic: u32 = mem.read_obj(GuestAddress(0x7000 + 0x202)).unwrap();
    assert_eq!(magic, 0x5372_6448);
    let cmdline_ptr: u32 = mem.read_obj(GuestAddress(0x7000 + 0x228)).unwrap();
    assert_eq!(cmdline_ptr, 0x20000);
    let e820_entries: u8 = mem.read_obj(GuestAddress(0x7000 + 0x1e8)).unwrap();
    assert_eq!(e820_entries, 3);
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn debian_cloud_kernel_boots_to_init_and_finds_the_disk() {
    let kvm = detect_kvm();
    if !kvm.hardware_assisted() {
        // Not covered by SBX_REQUIRE_KVM: that asks for /dev/kvm, which exists here, but a
        // stock kernel needs hardware virtualization (see DESIGN.md section 9).
        eprintln!(
            "skipping: booting a stock kernel needs hardware-assisted KVM; this host has: {}",
            kvm.reason
        );
        return;
    }
    let root = debian_package("linux-image-cloud-amd64");
    let (vmlinuz, version) = find_vmlinuz(&root);
    let bb = debian_package("busybox-static");
    let initramfs = build_initramfs(&root, &version, &bb.join("bin/busybox"));
    let disk = cache_dir().join("disk.img");
    let mut data = b"SBX-DISK-SECTOR0".to_vec();
    data.resize(1 << 20, 0);
    std::fs::write(&disk, data).unwrap();

    let out = Capture::default();
    let vm = VmBuilder::new(&vmlinuz)
        .initrd(&initramfs)
        .cmdline("console=ttyS0 reboot=k panic=-1 quiet")
        .memory_mib(256)
        .disk(&disk, true)
        .serial_output(Box::new(out.clone()))
        .start()
        .unwrap();
    let stop = vm.stop_handle();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        stop.stop();
    });
    let exit = vm.wait();
    drop(watchdog);
    let console = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
    assert_eq!(exit, VmExit::Poweroff, "console:\n{console}");
    assert!(console.contains("SBX-INIT-REACHED"), "console:\n{console}");
    assert!(
        console.contains("SBX-DISK-FOUND SBX-DISK-SECTOR0"),
        "console:\n{console}"
    );
}
