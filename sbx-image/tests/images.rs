//! Building real images from Debian packages and using them.
//!
//! `harness = false`: this binary is also the guest agent (`/init` of the test initramfs, and
//! PID 1 of the namespace sandbox) and sbx-ns's setup helper, so `main` hands over to those
//! first. The images are built once into a store under `CARGO_TARGET_TMPDIR`, keyed by recipe
//! and package versions, so later runs on the same machine reuse them.
//!
//! Needs root, apt and `mmdebstrap`/`e2fsprogs` (scripts/install-deps). Skips with the reason
//! otherwise, except under `CI=true` or `SBX_REQUIRE_IMAGES=1`, where it fails.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use sbx_exec::{Client, ExecRequest, User};
use sbx_image::{
    read_newc, BuildOptions, Error, Image, ImageKind, KernelRecipe, ModuleSet, RootfsRecipe, Step,
    Store, DEFAULT_MODULES,
};

fn store() -> Store {
    Store::new(Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbx-image-store"))
}

fn tmp(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn show(s: &Step<'_>) {
    if s.detail.is_none() {
        eprintln!("  [{}/{}] {}", s.index, s.total, s.label);
    }
}

/// The default root, built once per run (and reused from the store across runs).
fn rootfs() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let t = Instant::now();
        let img = store()
            .build_rootfs(
                &RootfsRecipe::default(),
                &BuildOptions::default(),
                &mut show,
            )
            .unwrap_or_else(|e| panic!("building the rootfs: {e}"));
        eprintln!(
            "  rootfs ready in {:.1}s (built in {:.1}s): tree {} MiB, {} packages",
            t.elapsed().as_secs_f64(),
            img.manifest.build_seconds,
            img.manifest.tree.map_or(0, |t| t.bytes >> 20),
            img.manifest.packages.len()
        );
        img
    })
}

fn kernel() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let agent = std::env::current_exe().unwrap();
        store()
            .build_kernel(
                &KernelRecipe::default(),
                &agent,
                &BuildOptions::default(),
                &mut show,
            )
            .unwrap_or_else(|e| panic!("building the kernel image: {e}"))
    })
}

fn extract(entries: &[sbx_image::CpioEntry], dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in entries {
        let p = dir.join(&e.name);
        if e.is_dir() {
            std::fs::create_dir_all(&p).unwrap();
        } else if let Some(t) = e.link_target() {
            std::os::unix::fs::symlink(t, &p).unwrap();
        } else if e.is_file() {
            std::fs::write(&p, &e.data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(e.mode & 0o7777)).unwrap();
        }
    }
}

fn initramfs_holds_init_busybox_and_every_module_with_its_dependencies() {
    let img = kernel();
    let m = &img.manifest;
    // The kernel package was found (the meta package resolved) and unpacked.
    let kpkg = m
        .packages
        .iter()
        .find(|p| p.name.starts_with("linux-image-") && p.name.ends_with("-cloud-amd64"))
        .unwrap_or_else(|| panic!("no kernel package in {:?}", m.packages));
    let release = m.kernel_release.clone().unwrap();
    assert!(kpkg.name.contains(&release), "{} vs {release}", kpkg.name);
    let vmlinuz = std::fs::read(img.kernel()).unwrap();
    assert_eq!(&vmlinuz[0x202..0x206], b"HdrS", "a bzImage");
    for f in &m.files {
        assert_eq!(
            f.size,
            std::fs::metadata(img.dir.join(&f.path)).unwrap().len()
        );
        assert_eq!(f.sha256.len(), 64);
    }

    let entries = read_newc(&std::fs::read(img.initramfs()).unwrap()).unwrap();
    let get = |n: &str| entries.iter().find(|e| e.name == n);
    let init = get("init").expect("/init");
    assert!(init.is_file() && init.mode & 0o111 != 0 && init.data.starts_with(b"\x7fELF"));
    let bb = get("bin/busybox").expect("/bin/busybox");
    assert!(bb.is_file() && bb.data.starts_with(b"\x7fELF"));
    assert_eq!(
        get("bin/sh").and_then(|e| e.link_target()),
        Some("/bin/busybox")
    );
    assert!(get("dev/console").is_some_and(|e| e.is_char_device()));

    // Unpack it and resolve the wanted modules against the initramfs alone: every module
    // and every dependency must be there.
    let dir = tmp("initramfs");
    extract(&entries, &dir);
    let mods = dir.join("lib/modules").join(&release);
    let wanted: Vec<String> = DEFAULT_MODULES.iter().map(|s| s.to_string()).collect();
    let set = ModuleSet::resolve(&mods, &wanted).expect("all modules and dependencies present");
    for w in DEFAULT_MODULES {
        assert!(
            set.names().contains(w) || set.builtin.iter().any(|b| b == w),
            "{w} neither in the initramfs nor built in"
        );
    }
    assert!(
        set.builtin.iter().any(|b| b == "ext4"),
        "ext4 is built into the cloud kernel"
    );
    assert!(set.names().contains(&"virtio_mmio") && set.names().contains(&"virtiofs"));
    assert_eq!(
        Some(&set),
        m.modules.as_ref(),
        "the manifest lists what is inside"
    );
    // The agent's own loader agrees on an order, and finds every file.
    let dep = std::fs::read_to_string(mods.join("modules.dep")).unwrap();
    let names = set.names();
    let order = sbx_guest::ModuleIndex::parse(&dep)
        .load_order(&names)
        .unwrap();
    assert_eq!(order.len(), names.len());
    let pos = |n: &str| {
        order
            .iter()
            .position(|p| sbx_image::module_name(&p.to_string_lossy()) == n)
            .unwrap()
    };
    assert!(pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"));
    assert!(pos("vsock") < pos("vmw_vsock_virtio_transport_common"));
    assert!(pos("fuse") < pos("virtiofs"));
    for p in order {
        assert!(mods.join(p).is_file());
    }
    // The agent accepts the flags the image suggests for loading them.
    let args = img.init_module_args();
    let (cfg, _) = sbx_guest::parse_args(args.iter().map(std::ffi::OsString::from)).unwrap();
    assert_eq!(
        cfg.modules_dir,
        Some(PathBuf::from(format!("/lib/modules/{release}")))
    );
    assert_eq!(cfg.modules.len(), names.len());

    // `/init` starts inside the initramfs alone (its loader and libraries are in there), and
    // so does busybox.
    let out = Command::new("chroot")
        .arg(&dir)
        .args(["/init", "--help"])
        .env("SBX_GUEST_AGENT", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--vsock-port"),
        "agent usage expected, got {out:?}"
    );
    let out = Command::new("chroot")
        .arg(&dir)
        .args(["/bin/sh", "-c", "echo busybox-$((6*7))"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "busybox-42\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn rootfs_has_the_user_host_files_and_an_ext4_image() {
    let img = rootfs();
    let root = img.rootfs_dir();
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("agent:x:1000:1000:") && l.ends_with(":/home/agent:/bin/bash")),
        "{passwd}"
    );
    assert!(root.join("home/agent").is_dir());
    let sudoers = std::fs::read_to_string(root.join("etc/sudoers.d/90-sbx-user")).unwrap();
    assert_eq!(sudoers, "agent ALL=(ALL:ALL) NOPASSWD: ALL\n");
    assert!(std::fs::read_to_string(root.join("etc/hosts"))
        .unwrap()
        .contains("127.0.1.1\tsbx"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/timezone")).unwrap(),
        "Etc/UTC\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/default/locale")).unwrap(),
        "LANG=C.UTF-8\n"
    );
    assert!(root.join("etc/localtime").exists());
    for p in ["git", "curl", "python3", "nodejs", "npm", "sudo"] {
        assert!(img.manifest.package(p).is_some(), "{p} not in the manifest");
    }
    // The ext4 image is a clean filesystem holding the same tree.
    let ext4 = img.rootfs_ext4().expect("ext4 image");
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&ext4)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let ls = Command::new("debugfs")
        .args(["-R", "stat /home/agent"])
        .arg(&ext4)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.contains("User:  1000") && ls.contains("Group:  1000"),
        "{ls}"
    );
    let entry = img
        .manifest
        .files
        .iter()
        .find(|f| f.path == "rootfs.ext4")
        .unwrap();
    assert_eq!(entry.size, std::fs::metadata(&ext4).unwrap().len());
    let log = std::fs::read_to_string(&img.manifest.log).unwrap();
    assert!(
        log.contains("=== step 2/6: install packages (mmdebstrap)"),
        "{log}"
    );
    assert!(img.manifest.log.starts_with(&img.dir));
}

/// Starts a namespace sandbox on the image with this binary as its agent (PID 1).
fn sandbox(root: &Path) -> (sbx_ns::Sandbox, Client, PathBuf) {
    let state = tmp("ns-state");
    // The agent replaces this init program.
    let init = sbx_ns::Init::new("/bin/sh", Vec::<String>::new());
    let config = sbx_ns::Config::new(root, state.join("sb"), init)
        .with_network(false)
        .with_hostname("img")
        .with_setuid(true);
    let sb = sbx_ns::Sandbox::builder(config)
        .agent(sbx_ns::AgentOptions::default())
        .start()
        .unwrap_or_else(|e| panic!("starting the namespace sandbox: {e}"));
    let client = sb.client().expect("an exec socket");
    (sb, client, state)
}

fn as_agent(c: &Client, script: &str) -> (i32, String, String) {
    let out = c
        .output(ExecRequest::new(["/bin/bash", "-c", script]).user(User::Name("agent".into())))
        .unwrap();
    (
        out.status.shell_code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tools_run_as_agent_in_a_namespace_sandbox() {
    let img = rootfs();
    let (sb, c, state) = sandbox(&img.rootfs_dir());
    let checks = [
        ("id -un; id -u; echo $HOME; pwd", "agent\n1000\n/home/agent\n"),
        ("git --version | cut -d' ' -f1-2", "git version\n"),
        (
            "cd $(mktemp -d) && git init -q && git -c user.name=a -c user.email=a@b commit -q --allow-empty -m m && git log --format=%s",
            "m\n",
        ),
        ("curl -sS file:///etc/hostname", "sbx\n"),
        ("python3 -c 'import json,ssl; print(json.dumps([6*7]))'", "[42]\n"),
        ("node -e 'console.log(6*7)'", "42\n"),
        ("npm --version >/dev/null && echo npm-ok", "npm-ok\n"),
        ("echo 'x' > ~/f && cat ~/f && stat -c %U ~/f", "x\nagent\n"),
    ];
    for (script, want) in checks {
        let (code, out, err) = as_agent(&c, script);
        assert_eq!(code, 0, "{script}: {err}");
        assert!(
            out.starts_with(want) || out == want,
            "{script}: got {out:?}, want {want:?}; {err}"
        );
    }
    // sudo is setuid root: the sandbox is started with setuid programs allowed (no
    // no_new_privs), and the seccomp filter must still hold for what sudo starts as root.
    let (code, out, err) = as_agent(&c, "sudo -n true && sudo -n id -u");
    assert_eq!((code, out.as_str()), (0, "0\n"), "sudo: {err}");
    let keyctl =
        "import ctypes, os; r = ctypes.CDLL(None, use_errno=True).syscall(250, 0, -4, 0); \
                  print(r, os.strerror(ctypes.get_errno()))";
    let (code, out, err) = as_agent(&c, &format!("sudo -n python3 -c '{keyctl}'"));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("-1 "),
        "keyctl as root through sudo must be denied: {out}"
    );
    let exit = sb.shutdown(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(exit.code(), 0);
    // Nothing was written to the shared base image.
    assert!(!img.rootfs_dir().join("home/agent/f").exists());
    std::fs::remove_dir_all(&state).unwrap();
}

/// `sudo -n true` as `agent` where setuid works: a chroot on a throwaway overlay of the image.
fn passwordless_sudo_works_for_agent() {
    let img = rootfs();
    let d = tmp("sudo-overlay");
    for s in ["upper", "work", "merged"] {
        std::fs::create_dir_all(d.join(s)).unwrap();
    }
    let script = format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={d}/upper,workdir={d}/work {d}/merged && \
         chroot --userspec=1000:1000 {d}/merged /usr/bin/env -i HOME=/home/agent PATH=/usr/bin:/bin \
         sh -c 'sudo -n true && sudo -n id -u && id -u'",
        img.rootfs_dir().display(),
        d = d.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1000\n");
    std::fs::remove_dir_all(&d).unwrap();
}

fn failed_builds_leave_the_current_image_usable() {
    let good = rootfs();
    let store = store();
    let bad = RootfsRecipe::default().with_packages(["sbx-no-such-package"]);
    let err = store
        .build_rootfs(&bad, &BuildOptions::default(), &mut show)
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownPackages(p) if p == &["sbx-no-such-package"]),
        "{err}"
    );
    assert!(err.to_string().contains("sbx-no-such-package"));
    let cur = store
        .current(ImageKind::Rootfs, "default")
        .unwrap()
        .unwrap();
    assert_eq!(cur.dir, good.dir);
    assert!(cur.rootfs_dir().join("usr/bin/git").exists());

    // A failure in the middle of a build (after downloading): the step and the log are
    // named, no temporary directory is left, the current kernel image stays.
    let kernel_before = kernel().dir.clone();
    let mut recipe = KernelRecipe::default();
    recipe.modules.push("sbx_no_such_module".into());
    let agent = std::env::current_exe().unwrap();
    let err = store
        .build_kernel(&recipe, &agent, &BuildOptions::default(), &mut show)
        .unwrap_err();
    let Error::Build { step, reason, log } = &err else {
        panic!("{err}")
    };
    assert_eq!(step, "unpack and resolve modules");
    assert!(reason.contains("sbx_no_such_module"), "{reason}");
    assert!(std::fs::read_to_string(log).unwrap().contains("=== failed"));
    assert!(err.to_string().contains(&log.display().to_string()));
    let cur = store
        .current(ImageKind::Kernel, "default")
        .unwrap()
        .unwrap();
    assert_eq!(cur.dir, kernel_before);
    assert!(cur.initramfs().is_file());
    let leftovers: Vec<_> = std::fs::read_dir(store.dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".build-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn rebuild_uses_the_cache_unless_forced() {
    let img = kernel();
    let store = store();
    let agent = std::env::current_exe().unwrap();
    let again = store
        .build_kernel(
            &KernelRecipe::default(),
            &agent,
            &BuildOptions::default(),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(
        again.manifest.created_unix, img.manifest.created_unix,
        "reused, not rebuilt"
    );
    let forced = store
        .build_kernel(
            &KernelRecipe::default(),
            &agent,
            &BuildOptions::default().with_force(true),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(forced.dir, img.dir, "same recipe, same key");
    assert_eq!(
        forced.manifest.files, img.manifest.files,
        "reproducible initramfs"
    );
    let listed = store.list().unwrap();
    assert!(listed
        .iter()
        .any(|i| i.dir == img.dir && store.is_current(i)));
}

fn requirements() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (mmdebstrap, chroot, namespaces)".into());
    }
    for tool in [
        "mmdebstrap",
        "apt-get",
        "dpkg-deb",
        "mkfs.ext4",
        "strip",
        "unshare",
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(format!("{tool} not found (run scripts/install-deps)"));
        }
    }
    Ok(())
}

fn main() {
    sbx_guest::run_if_agent();
    sbx_ns::run_if_helper();
    let tests: &[(&str, fn())] = &[
        (
            "initramfs_holds_init_busybox_and_every_module_with_its_dependencies",
            initramfs_holds_init_busybox_and_every_module_with_its_dependencies,
        ),
        (
            "rebuild_uses_the_cache_unless_forced",
            rebuild_uses_the_cache_unless_forced,
        ),
        (
            "rootfs_has_the_user_host_files_and_an_ext4_image",
            rootfs_has_the_user_host_files_and_an_ext4_image,
        ),
        (
            "tools_run_as_agent_in_a_namespace_sandbox",
            tools_run_as_agent_in_a_namespace_sandbox,
        ),
        (
            "passwordless_sudo_works_for_agent",
            passwordless_sudo_works_for_agent,
        ),
        (
            "failed_builds_leave_the_current_image_usable",
            failed_builds_leave_the_current_image_usable,
        ),
    ];
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SBX_REQUIRE_IMAGES").is_ok_and(|v| v == "1");
    if let Err(why) = requirements() {
        if required {
            eprintln!("image tests required (CI or SBX_REQUIRE_IMAGES=1) but: {why}");
            std::process::exit(1);
        }
        eprintln!("skipping image tests: {why}");
        return;
    }
    let mut failed = Vec::new();
    for (name, f) in tests {
        if !filters.is_empty() && !filters.iter().any(|flt| name.contains(flt.as_str())) {
            continue;
        }
        eprintln!("test {name} ...");
        let t = Instant::now();
        match std::panic::catch_unwind(f) {
            Ok(()) => eprintln!("test {name} ... ok ({:.1}s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                eprintln!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}
