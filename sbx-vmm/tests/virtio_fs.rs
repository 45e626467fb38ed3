//! virtio-fs (vhost-user frontend) against a real `virtiofsd`: the test plays the guest
//! driver through the virtio-mmio registers and the split rings in guest memory, which the
//! daemon maps through the memfd. No guest kernel and no KVM are needed.

mod fs_util;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use fs_util::fuse::*;
use fs_util::*;
use sbx_vmm::devices::virtio::{
    device_type, status, Fs, FsConfig, VirtioDevice, VirtioError, VIRTIO_MMIO_INT_CONFIG,
};
use sbx_vmm::virtiofsd::SandboxMode;
use vhost::vhost_user::VhostUserProtocolFeatures;

const VERSION_1: u64 = 1 << 32;
const INDIRECT_DESC: u64 = 1 << 28;
const EVENT_IDX: u64 = 1 << 29;

fn sandbox_for_tests() -> SandboxMode {
    if can_sandbox() {
        SandboxMode::Namespace
    } else {
        SandboxMode::None
    }
}

#[test]
fn vhost_user_negotiation_and_queue_setup() {
    let Some(bin) = virtiofsd_or_skip() else {
        return;
    };
    let d = dirs();
    let _daemon = start_virtiofsd(&bin, &d, sandbox_for_tests());
    let mut h = Harness::new(&d.socket);
    {
        let fs = lock(&h.fs);
        assert_eq!(fs.device_type(), device_type::FS);
        // virtiofsd offers VERSION_1 and the vhost-user protocol-features bit (30).
        assert_ne!(fs.backend_features() & VERSION_1, 0);
        assert_ne!(fs.backend_features() & (1 << 30), 0);
        assert!(fs
            .protocol_features()
            .contains(VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ));
        assert!(!fs.is_activated());
    }
    assert_eq!(h.read_reg(0x8), device_type::FS);
    // Only ring features reach the driver; vhost-user plumbing bits (30, LOG_ALL 26) do not.
    assert_eq!(h.device_features(), VERSION_1 | INDIRECT_DESC | EVENT_IDX);
    let cfg = h.read_config(0, 40);
    assert_eq!(&cfg[..9], b"workspace");
    assert!(cfg[9..36].iter().all(|&b| b == 0));
    assert_eq!(u32::from_le_bytes(cfg[36..40].try_into().unwrap()), 1);

    // DRIVER_OK: features, mem table and both vrings go to the backend, each acknowledged
    // (REPLY_ACK), so activation succeeding means the backend accepted all of them.
    let st = h.init();
    assert_eq!(st & status::DEVICE_NEEDS_RESET, 0, "activation failed");
    assert_ne!(st & status::DRIVER_OK, 0);
    let fs = lock(&h.fs);
    assert!(fs.is_activated());
    assert_eq!(fs.metrics().activations.get(), 1);
    assert_eq!(fs.metrics().backend_errors.get(), 0);
}

#[test]
fn fuse_requests_through_the_queue() {
    let Some(bin) = virtiofsd_or_skip() else {
        return;
    };
    let d = dirs();
    let contents = b"hello from the host, through virtio-fs\n".repeat(50);
    std::fs::write(d.shared.join("hello.txt"), &contents).unwrap();
    let _daemon = start_virtiofsd(&bin, &d, sandbox_for_tests());
    let mut h = Harness::new(&d.socket);
    assert_eq!(h.init() & status::DEVICE_NEEDS_RESET, 0);

    let init = h.fuse_init();
    assert_eq!(init.major, FUSE_KERNEL_VERSION);
    assert!(init.minor >= FUSE_KERNEL_MINOR_VERSION);
    assert!(init.max_write > 0);

    let entry = h.lookup(FUSE_ROOT_ID, "hello.txt").unwrap();
    assert_eq!(entry.attr.size, contents.len() as u64);
    assert_eq!(entry.attr.mode & libc::S_IFMT, libc::S_IFREG);
    // The host user's files appear as the agent's (guest uid/gid 1000).
    assert_eq!(entry.attr.uid, 1000);
    assert_eq!(entry.attr.gid, 1000);
    let fh = h.open(entry.nodeid, libc::O_RDONLY as u32).unwrap();
    let data = h.read(entry.nodeid, fh, 1 << 16).unwrap();
    assert_eq!(data, contents);
    h.release(entry.nodeid, fh);

    assert_eq!(
        h.lookup(FUSE_ROOT_ID, "missing.txt").unwrap_err(),
        libc::ENOENT
    );

    // A file the agent creates lands on the host, owned by the invoking host user.
    let (created, fh) = h.create(FUSE_ROOT_ID, "from-guest.txt", 0o644).unwrap();
    assert_eq!(created.attr.uid, 1000);
    assert_eq!(
        h.write(created.nodeid, fh, b"written in the guest")
            .unwrap(),
        20
    );
    h.release(created.nodeid, fh);
    let host_path = d.shared.join("from-guest.txt");
    assert_eq!(std::fs::read(&host_path).unwrap(), b"written in the guest");
    let meta = std::fs::metadata(&host_path).unwrap();
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(meta.gid(), nix::unistd::getegid().as_raw());

    let fs = lock(&h.fs);
    assert!(fs.metrics().used_notifications.get() > 0);
}

/// What a guest can reach through `..` and symlinks, with sbx's sandbox (namespace), with
/// chroot when root, and with no sandbox at all: virtiofsd resolves every name with
/// `openat2(RESOLVE_IN_ROOT)` relative to the parent (Linux 5.6+) and never follows symlinks, so
/// even `--sandbox none` stays inside here; sbx still uses the namespace sandbox as the second
/// wall (older kernels, daemon bugs).
#[test]
fn guest_stays_inside_the_shared_directory() {
    let Some(bin) = virtiofsd_or_skip() else {
        return;
    };
    if !can_sandbox() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping: no namespace sandbox for virtiofsd here (not root, no userns)");
        }
        return;
    }
    let mut modes = vec![SandboxMode::Namespace, SandboxMode::None];
    if nix::unistd::geteuid().is_root() {
        modes.push(SandboxMode::Chroot);
    }
    for mode in modes {
        let d = dirs();
        let secret = b"host secret outside the workspace";
        std::fs::write(d.outside.join("secret"), secret).unwrap();
        std::os::unix::fs::symlink(&d.outside, d.shared.join("dir-link")).unwrap();
        std::os::unix::fs::symlink(d.outside.join("secret"), d.shared.join("file-link")).unwrap();
        std::os::unix::fs::symlink("/etc", d.shared.join("etc-link")).unwrap();
        let _daemon = start_virtiofsd(&bin, &d, mode);
        let mut h = Harness::new(&d.socket);
        assert_eq!(h.init() & status::DEVICE_NEEDS_RESET, 0);
        h.fuse_init();

        let root = h.getattr(FUSE_ROOT_ID).unwrap();
        // `..` of the root is the root itself (or refused), never the host's parent.
        if let Ok(up) = h.lookup(FUSE_ROOT_ID, "..") {
            assert_eq!(
                up.attr.ino, root.ino,
                "{mode:?}: `..` left the shared directory"
            );
            assert_eq!(
                h.lookup(up.nodeid, "outside").unwrap_err(),
                libc::ENOENT,
                "{mode:?}"
            );
        }
        for link in ["dir-link", "file-link", "etc-link"] {
            let e = h.lookup(FUSE_ROOT_ID, link).unwrap();
            // The daemon does not follow symlinks: the guest gets the link itself and resolves
            // its target in the guest's own tree.
            assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFLNK, "{mode:?} {link}");
            assert!(h.lookup(e.nodeid, "secret").is_err(), "{mode:?} {link}");
            assert!(h.lookup(e.nodeid, "passwd").is_err(), "{mode:?} {link}");
            if let Ok(fh) = h.open(e.nodeid, libc::O_RDONLY as u32) {
                let data = h.read(e.nodeid, fh, 4096).unwrap_or_default();
                assert_ne!(data, secret, "{mode:?}: {link} read the host secret");
                assert!(
                    data.is_empty(),
                    "{mode:?}: {link} read {} bytes",
                    data.len()
                );
            }
        }
    }
}

/// Guest RAM above 3 GiB is a second region (after the MMIO hole) at a later offset of the same
/// memfd; replies written there by the daemon must land where the guest reads them.
#[test]
fn two_memory_regions_around_the_mmio_hole() {
    let Some(bin) = virtiofsd_or_skip() else {
        return;
    };
    let d = dirs();
    std::fs::write(d.shared.join("high.txt"), b"reply in high memory").unwrap();
    let _daemon = start_virtiofsd(&bin, &d, sandbox_for_tests());
    let high = 0x1_0000_0000u64 + 0x10_0000;
    let mut h = Harness::with_memory(&d.socket, 0xc000_0000 + (16 << 20), high);
    assert_eq!(h.init() & status::DEVICE_NEEDS_RESET, 0);
    h.fuse_init();
    let e = h.lookup(FUSE_ROOT_ID, "high.txt").unwrap();
    let fh = h.open(e.nodeid, libc::O_RDONLY as u32).unwrap();
    assert_eq!(h.read(e.nodeid, fh, 4096).unwrap(), b"reply in high memory");
}

#[test]
fn backend_killed_mid_run_marks_the_device_failed() {
    let Some(bin) = virtiofsd_or_skip() else {
        return;
    };
    let d = dirs();
    std::fs::write(d.shared.join("a"), b"a").unwrap();
    let mut daemon = start_virtiofsd(&bin, &d, sandbox_for_tests());
    let mut h = Harness::new(&d.socket);
    assert_eq!(h.init() & status::DEVICE_NEEDS_RESET, 0);
    h.fuse_init();
    assert!(h.lookup(FUSE_ROOT_ID, "a").is_ok());

    daemon.kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lock(&h.fs).is_failed() {
        assert!(Instant::now() < deadline, "disconnect not noticed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_ne!(h.status() & status::DEVICE_NEEDS_RESET, 0);
    assert!(h.wait_interrupt(VIRTIO_MMIO_INT_CONFIG, Duration::from_secs(1)));
    assert_eq!(lock(&h.fs).metrics().disconnects.get(), 1);
    // Requests go unanswered, nothing panics.
    assert!(h
        .request_timeout(
            FUSE_GETATTR,
            FUSE_ROOT_ID,
            &[0u8; 16],
            Duration::from_millis(200)
        )
        .is_none());
    // The driver resets and tries again: activation fails cleanly.
    let st = h.init();
    assert_ne!(st & status::DEVICE_NEEDS_RESET, 0);
    assert!(!lock(&h.fs).is_activated());
}

#[test]
fn connect_errors_are_reported() {
    let d = dirs();
    let err = Fs::new(FsConfig::new("t", &d.socket)).unwrap_err();
    assert!(matches!(err, VirtioError::VhostUser { .. }), "{err}");
    let err = Fs::new(FsConfig::new("", &d.socket)).unwrap_err();
    assert!(matches!(err, VirtioError::FsTag { len: 0 }), "{err}");
    let err = Fs::new(FsConfig::new("x".repeat(37), &d.socket)).unwrap_err();
    assert!(matches!(err, VirtioError::FsTag { len: 37 }), "{err}");
    let err = Fs::new(FsConfig::new("t", &d.socket).queue_size(100)).unwrap_err();
    assert!(matches!(err, VirtioError::FsQueueSize(100)), "{err}");
}

/// Through the public builder: the fs device sits in the next virtio-mmio window after the
/// disk, and the test guest's slot scan finds it there with device id 26 (the guest then
/// complains that there is no rng, which does not matter here).
#[test]
fn vm_builder_attaches_the_fs_device() {
    sbx_vmm::require_kvm!();
    let Some(bin) = virtiofsd_or_skip() else {
        return;
    };
    let d = dirs();
    let daemon = start_virtiofsd(&bin, &d, sandbox_for_tests());
    let disk = d.tmp.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 64 * 1024]).unwrap();
    let out = Capture::default();
    let vm = sbx_vmm::VmBuilder::new(sbx_test_guests::VIRTIO)
        .memory_mib(16)
        .disk(&disk, true)
        .fs(FsConfig::new("workspace", daemon.socket_path()))
        .serial_output(Box::new(out.clone()))
        .start()
        .unwrap();
    let stop = vm.stop_handle();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        stop.stop();
    });
    let exit = vm.wait();
    let text = out.text();
    assert_eq!(exit, sbx_vmm::VmExit::Poweroff, "{text}");
    assert!(text.contains("virtio: slot 0 id=2 version=2\n"), "{text}");
    assert!(text.contains("virtio: slot 1 id=26 version=2\n"), "{text}");
    assert!(text.contains("blk: flush ok\n"), "{text}");
    drop(watchdog);
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn virtiofsd_helper_reports_start_failures_and_kills_on_drop() {
    use sbx_vmm::virtiofsd::VirtiofsdError;
    use sbx_vmm::{Virtiofsd, VirtiofsdConfig};
    let d = dirs();
    let missing = VirtiofsdConfig::new(&d.shared, &d.socket).binary(d.tmp.path().join("nope"));
    assert!(matches!(
        Virtiofsd::spawn(&missing),
        Err(VirtiofsdError::Spawn { .. })
    ));
    let exits = VirtiofsdConfig::new(&d.shared, &d.socket).binary("/bin/false");
    assert!(matches!(
        Virtiofsd::spawn(&exits),
        Err(VirtiofsdError::Exited { .. })
    ));

    let Some(bin) = virtiofsd_or_skip() else {
        return;
    };
    let daemon = start_virtiofsd(&bin, &d, sandbox_for_tests());
    let proc_dir = std::path::PathBuf::from(format!("/proc/{}", daemon.pid()));
    assert!(proc_dir.exists());
    drop(daemon);
    // Killed and reaped (a zombie would keep /proc/PID), and the socket removed.
    assert!(!proc_dir.exists());
    assert!(!d.socket.exists());
}

#[test]
fn driver_reset_and_reinit_reuses_the_backend() {
    let Some(bin) = virtiofsd_or_skip() else {
        return;
    };
    let d = dirs();
    std::fs::write(d.shared.join("f"), b"again").unwrap();
    let _daemon = start_virtiofsd(&bin, &d, sandbox_for_tests());
    let mut h = Harness::new(&d.socket);
    assert_eq!(h.init() & status::DEVICE_NEEDS_RESET, 0);
    h.fuse_init();
    assert!(h.lookup(FUSE_ROOT_ID, "f").is_ok());
    // The driver resets (e.g. module reload) and starts over with fresh rings.
    let st = h.init();
    assert_eq!(
        st & status::DEVICE_NEEDS_RESET,
        0,
        "re-activation failed: {st:#x}"
    );
    assert_eq!(lock(&h.fs).metrics().activations.get(), 2);
    h.fuse_init();
    let e = h.lookup(FUSE_ROOT_ID, "f").unwrap();
    let fh = h.open(e.nodeid, libc::O_RDONLY as u32).unwrap();
    assert_eq!(h.read(e.nodeid, fh, 64).unwrap(), b"again");
}
