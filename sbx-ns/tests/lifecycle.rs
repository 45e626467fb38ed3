//! Start, stop, failure and host support, checked from the host side.

#![allow(clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{config, helper, State};
use sbx_ns::{host_support, Config, Error, Init, Limits, Sandbox};

/// The checks scan this process's descriptors, so these tests run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn ns_inode(pid: u32, ns: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn pids_in(ns: &str, link: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| ns_inode(*pid, ns).as_deref() == Some(link))
        .collect()
}

fn our_tun_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l == Path::new("/dev/net/tun"))
        .count()
}

fn check_stop_leaves_nothing(use_drop: bool) {
    let state = State::new("stop");
    let cfg = config(
        &state,
        "sleep 1000 & sleep 1000 & (sleep 1000 &); exec sleep 1000",
    )
    .with_limits(Limits::default().with_pids(64).with_memory_bytes(256 << 20));
    let sb = Sandbox::builder(cfg).stdout(Stdio::null()).start().unwrap();
    let pid = sb.pid();
    std::thread::sleep(Duration::from_millis(200));
    let links: Vec<(&str, String)> = ["pid", "mnt", "net", "user"]
        .into_iter()
        .map(|ns| (ns, ns_inode(pid, ns).unwrap()))
        .collect();
    let inside = pids_in("pid", &links[0].1);
    assert!(inside.len() >= 4, "PID 1 and its sleepers: {inside:?}");
    assert_eq!(our_tun_fds(), 1, "the host holds the TAP");
    let cgroups = sb.cgroup_dirs().to_vec();
    assert!(!cgroups.is_empty());
    if use_drop {
        drop(sb);
    } else {
        sb.stop().unwrap();
    }
    for (ns, link) in &links {
        // The monitor helper lives in the sandbox's user/mount/net namespaces too; it must be
        // gone as well.
        assert!(
            pids_in(ns, link).is_empty(),
            "a process is left in the {ns} namespace"
        );
    }
    assert_eq!(our_tun_fds(), 0, "TAP descriptor closed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*state.0.to_string_lossy()),
        "a mount is left on the host"
    );
    for d in cgroups {
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
    // No TAP device appeared in the host's network namespace either.
    let links = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert!(!links.contains("eth0:") || Path::new("/sys/class/net/eth0/device").exists());
}

#[test]
fn stop_and_drop_leave_no_process_mount_tap_or_cgroup() {
    let _serial = serial();
    check_stop_leaves_nothing(false);
    check_stop_leaves_nothing(true);
}

#[test]
fn setup_failures_are_errors_and_leave_nothing() {
    let _serial = serial();
    let state = State::new("bad-init");
    let cfg = Config::new(
        common::busybox_root(),
        &state.0,
        Init::new("/no/such/init", Vec::<String>::new()),
    )
    .with_helper(helper());
    match Sandbox::start(cfg) {
        Err(Error::Setup(msg)) => assert!(msg.contains("/no/such/init"), "{msg}"),
        other => panic!("expected a setup error, got {other:?}"),
    }
    let cfg = Config::new(
        "/no/such/rootfs",
        &state.0,
        Init::new("/bin/sh", Vec::<String>::new()),
    )
    .with_helper(helper());
    assert!(Sandbox::start(cfg).is_err());
    let cfg = Config::new(
        "relative",
        &state.0,
        Init::new("/bin/sh", Vec::<String>::new()),
    )
    .with_helper(helper());
    assert!(matches!(Sandbox::start(cfg), Err(Error::InvalidConfig(_))));
}

#[test]
fn host_support_reports_this_host() {
    let _serial = serial();
    let s = host_support(&helper(), &common::tmp_root());
    println!("{s:?}");
    // These machines run as root with user namespaces, overlayfs and TAP (DESIGN.md 9).
    assert!(s.ok, "{:?}", s.reasons);
    assert!(s.reasons.is_empty());
    // Root here has v1 memory, cpu and pids controllers.
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    // A helper that is not one reports why instead of hanging or passing.
    let s = host_support(
        &sbx_ns::Helper::Path("/bin/true".into()),
        &common::tmp_root(),
    );
    assert!(!s.ok);
    assert!(
        s.reasons.iter().any(|r| r.contains("probe failed")),
        "{:?}",
        s.reasons
    );
}

/// Set in the child copy of this test binary that plays the launcher.
const LAUNCHER_ENV: &str = "SBX_NS_TEST_LAUNCHER_STATE";

#[test]
fn launcher_death_takes_the_sandbox_with_it() {
    if let Some(state) = std::env::var_os(LAUNCHER_ENV) {
        // Child role: start a sandbox, report PID 1, then wait to be killed.
        let cfg = config(&State(state.into()), "exec sleep 1000");
        let sb = Sandbox::builder(cfg.with_limits(Limits::default().with_pids(64)))
            .stdout(Stdio::null())
            .start()
            .unwrap();
        for d in sb.cgroup_dirs() {
            println!("CG {}", d.display());
        }
        println!("PID1 {}", sb.pid());
        std::thread::sleep(Duration::from_secs(1000));
        unreachable!("killed by the parent test");
    }
    let _serial = serial();
    let state = State::new("launcher-death");
    let mut launcher = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "launcher_death_takes_the_sandbox_with_it",
            "--nocapture",
        ])
        .env(LAUNCHER_ENV, &state.0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(launcher.stdout.take().unwrap());
    let mut cgroups = Vec::new();
    let pid: u32 = loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "child ended"
        );
        if let Some(d) = line.trim().strip_prefix("CG ") {
            cgroups.push(std::path::PathBuf::from(d));
        }
        if let Some(p) = line.trim().strip_prefix("PID1 ") {
            break p.parse().unwrap();
        }
    };
    let pidns = ns_inode(pid, "pid").unwrap();
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // The monitor sees the control socket close and kills PID 1; the namespace empties.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !pids_in("pid", &pidns).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "sandbox outlived its launcher"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its cgroups stay behind (nobody was left to remove them) until the next sandbox with
    // limits sweeps them, once the monitor has exited too.
    for d in &cgroups {
        while std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "monitor outlived its launcher"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let state2 = State::new("sweeper");
    let cfg = config(&state2, "true").with_limits(Limits::default().with_pids(64));
    let mut sb = Sandbox::start(cfg).unwrap();
    sb.wait().unwrap();
    for d in cgroups {
        assert!(!d.exists(), "stale cgroup {} not swept", d.display());
    }
}

/// Set in the child copy of this test binary that runs as an unprivileged user.
const ROOTLESS_ENV: &str = "SBX_NS_TEST_ROOTLESS_STATE";

#[test]
fn works_rootless_where_the_host_allows() {
    if let Some(state) = std::env::var_os(ROOTLESS_ENV) {
        // Child role, as uid 65534: no TAP (/dev/net/tun is root's), no cgroups.
        let state = std::path::PathBuf::from(state);
        let support = host_support(&helper(), &state);
        println!("SUPPORT {support:?}");
        let cfg = Config::new(
            common::busybox_root(),
            &state,
            Init::new(
                "/bin/sh",
                ["-c", "id -u; cat /proc/self/uid_map; echo x > /written"],
            ),
        )
        .with_helper(helper())
        .with_network(false);
        let out = common::run(cfg);
        assert_eq!(out.exit, sbx_ns::Exit::Code(0));
        return;
    }
    let _serial = serial();
    const NOBODY: u32 = 65534;
    let state = State::new("rootless");
    std::os::unix::fs::chown(&state.0, Some(NOBODY), Some(NOBODY)).unwrap();
    // Build the shared root as root first; the child only reads it.
    common::busybox_root();
    let out = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "works_rootless_where_the_host_allows",
                "--nocapture",
            ])
            .env(ROOTLESS_ENV, &state.0)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    if stdout.contains("SUPPORT Support { ok: false") && stdout.contains("user namespace:") {
        println!("SKIPPED: this host forbids unprivileged user namespaces");
        return;
    }
    assert!(out.status.success(), "rootless run failed");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("--- stdout"))
        .unwrap();
    assert_eq!(lines[at + 1], "0", "root inside");
    let map: Vec<&str> = lines[at + 2].split_whitespace().collect();
    assert_eq!(
        map,
        ["0", "65534", "1"],
        "mapped to the invoking (unprivileged) user"
    );
    let meta = std::fs::metadata(state.0.join("upper/written")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), NOBODY);
}
