//! Escape attempts from inside a busybox sandbox. Each must fail.

#![allow(clippy::print_stdout)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use common::{config, sh, State};
use sbx_ns::{Exit, LimitState, Limits, Sandbox};

fn host_shadow_first_line() -> String {
    let s = std::fs::read_to_string("/etc/shadow").expect("tests run as root");
    s.lines().next().unwrap().to_string()
}

#[test]
fn host_shadow_is_not_readable_through_proc_root() {
    let shadow = host_shadow_first_line();
    let o = sh(
        "proc-root",
        "for p in /proc/1/root /proc/self/root /proc/[0-9]*/root /proc/1/cwd/..; do cat $p/etc/shadow; done 2>&1; ls /proc/1/root/",
    );
    assert!(!o.stdout.contains(&shadow));
    // /proc/1/root is the sandbox's own root.
    assert!(o.stdout.contains("No such file or directory"));
    assert!(o.stdout.lines().any(|l| l == "sbin"));
}

#[test]
fn host_device_cannot_be_mounted() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_dev = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .to_string();
    let (maj, min) = root_dev.split_once(':').unwrap();
    let script = format!(
        "mknod /tmp/disk b {maj} {min}; mount /tmp/disk /mnt && echo MOUNTED-DEV; \
         mount -t ext4 /tmp/disk /mnt && echo MOUNTED-EXT4; \
         mount -t proc proc /mnt && echo MOUNTED-PROC; \
         mount -t tmpfs t /mnt && echo MOUNTED-TMPFS; \
         mount --bind / /mnt && echo MOUNTED-BIND; \
         mount -o remount,rw /sys && echo REMOUNTED-SYS; \
         umount /proc/sys && echo UNMOUNTED; \
         grep -c ' /mnt ' /proc/mounts"
    );
    let o = sh("mount", &script);
    assert!(!o.stdout.contains("MOUNTED"), "{}", o.stdout);
    assert_eq!(o.stdout.trim(), "0");
}

fn add_host_key(secret: &str) -> i64 {
    let name = format!("sbx-ns-test-{}", std::process::id());
    let ty = c"user";
    let desc = std::ffi::CString::new(name).unwrap();
    // SAFETY: add_key reads two NUL-terminated strings and `secret.len()` bytes of payload.
    let serial = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            secret.as_ptr(),
            secret.len(),
            -4i32, // KEY_SPEC_USER_KEYRING
        )
    };
    assert!(
        serial > 0,
        "add_key on the host: {}",
        std::io::Error::last_os_error()
    );
    serial
}

fn host_read_key(serial: i64) -> String {
    let mut buf = [0u8; 128];
    // SAFETY: KEYCTL_READ writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::syscall(libc::SYS_keyctl, 11, serial, buf.as_mut_ptr(), buf.len(), 0) };
    assert!(n >= 0, "host reads its own key");
    String::from_utf8_lossy(&buf[..n as usize]).into_owned()
}

#[test]
fn host_keyring_is_unreachable() {
    let secret = "keyring-secret-51d9";
    let serial = add_host_key(secret);
    // The key is really there for the host user (the sandbox runs as that same user).
    assert_eq!(host_read_key(serial), secret);
    let o = sh(
        "keyring",
        &format!("probe keyctl-read {serial}; probe keyctl-user; probe add-key; cat /proc/keys /proc/key-users 2>&1"),
    );
    // SAFETY: KEYCTL_INVALIDATE takes the serial only.
    unsafe { libc::syscall(libc::SYS_keyctl, 21, serial, 0, 0, 0) };
    assert!(!o.stdout.contains(secret));
    for what in ["keyctl-read", "keyctl-user", "add-key"] {
        assert!(
            o.stdout.contains(&format!("{what} DENIED")),
            "{what}: {}",
            o.stdout
        );
    }
    assert!(
        !o.stdout.contains(&format!("{serial:08x}")),
        "key listed in /proc/keys"
    );
}

#[test]
fn user_namespace_cannot_be_created() {
    let o = sh(
        "userns",
        "probe userns; echo probe=$?; unshare -U true && echo UNSHARE-U; unshare -m true && echo UNSHARE-M; unshare -n true && echo UNSHARE-N",
    );
    assert!(o.stdout.contains("unshare-user DENIED"));
    assert!(o.stdout.contains("clone-user DENIED"));
    assert!(o.stdout.contains("probe=0"));
    assert!(!o.stdout.contains("UNSHARE"));
}

#[test]
fn kernel_modules_cannot_be_loaded() {
    let o = sh(
        "module",
        "probe module; echo probe=$?; echo /bin/sh > /proc/sys/kernel/modprobe && echo MODPROBE-SET; echo done",
    );
    for what in ["init_module", "finit_module", "delete_module"] {
        assert!(o.stdout.contains(&format!("{what} DENIED")), "{what}");
    }
    assert!(o.stdout.contains("probe=0"));
    assert!(!o.stdout.contains("MODPROBE-SET"));
    assert!(o.stdout.contains("done"));
    if let Ok(helper) = std::fs::read_to_string("/proc/sys/kernel/modprobe") {
        assert_ne!(helper.trim(), "/bin/sh");
    }
}

#[test]
fn host_process_cannot_be_ptraced() {
    let mut victim = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = victim.id();
    let o = sh(
        "ptrace",
        &format!("probe ptrace {pid}; probe ptrace-child && echo child-ok; ls /proc/{pid} 2>&1"),
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(o.stdout.contains("ptrace DENIED"), "{}", o.stdout);
    assert!(!o.stdout.contains("ptrace ALLOWED"));
    assert!(status.lines().any(|l| l == "TracerPid:\t0"));
    // ptrace inside the sandbox keeps working (strace and gdb are legitimate there)...
    assert!(o.stdout.contains("child-ok"));
    // ...but the host's pid is not even a process there.
    assert!(o.stdout.contains("No such file or directory"));
}

#[test]
fn host_tcp_port_on_loopback_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let o = sh(
        "tcp",
        &format!("nc -w 2 127.0.0.1 {port} </dev/null && echo CONNECTED; echo done"),
    );
    assert!(!o.stdout.contains("CONNECTED"));
    assert!(o.stdout.contains("done"));
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host listener saw a connection: {other:?}"),
    }
}

#[test]
fn vsock_is_not_a_way_out() {
    let o = sh("vsock", "probe vsock; echo probe=$?");
    assert!(o.stdout.contains("vsock DENIED"), "{}", o.stdout);
    assert!(o.stdout.contains("probe=0"));
}

#[test]
fn chroot_tricks_stay_inside() {
    let shadow = host_shadow_first_line();
    let host_path = common::tmp_root();
    let o = sh(
        "chroot",
        &format!(
            "probe chroot-escape {p}; chroot /tmp/jail /bin/sh -c true 2>/dev/null; cd /proc/1/root && ls {p} 2>&1",
            p = host_path.display()
        ),
    );
    assert!(!o.stdout.contains(&shadow));
    assert!(!o.stdout.contains("HOST VISIBLE"));
    assert!(o.stdout.contains("host path hidden"));
    assert!(o.stdout.contains("cwd: /"));
}

#[test]
fn host_kernel_parameters_are_read_only() {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let o = sh(
        "sysctl",
        &format!(
            "printf '%s' '{}' > /proc/sys/kernel/core_pattern && echo WROTE-CORE; echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null && echo WROTE-SYS; echo done",
            pattern.trim()
        ),
    );
    assert!(!o.stdout.contains("WROTE"));
    assert!(o.stdout.contains("done"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        pattern
    );
}

#[test]
fn fork_bomb_stays_within_the_pids_limit() {
    const LIMIT: u64 = 24;
    let state = State::new("forkbomb");
    let cfg = config(
        &state,
        // ash gives up at the first failed fork, so the bomb runs in a subshell; its children
        // stay behind, reparented to PID 1.
        "(i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done) 2>/dev/null; set -- /proc/[0-9]*; echo $#; exec sleep 60",
    )
    .with_limits(Limits::default().with_pids(LIMIT));
    let mut sb = Sandbox::builder(cfg)
        .stdout(Stdio::piped())
        .start()
        .unwrap();
    let dir = match &sb.limits().pids {
        LimitState::Applied { path } => path.clone(),
        LimitState::Unavailable { reason } => {
            println!("SKIPPED: the host offers no pids cgroup controller: {reason}");
            return;
        }
        other => panic!("{other:?}"),
    };
    let mut lines = BufReader::new(sb.stdout.take().unwrap()).lines();
    let seen: u64 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    assert!(seen <= LIMIT, "{seen} processes inside");
    let current: u64 = std::fs::read_to_string(dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(current <= LIMIT, "pids.current {current}");
    assert!(
        current >= LIMIT - 2,
        "the bomb should have hit the limit (pids.current {current})"
    );
    let started = std::time::Instant::now();
    assert_eq!(sb.stop().unwrap(), Exit::Signal(libc::SIGKILL));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!dir.exists(), "cgroup removed on stop");
}

#[test]
fn memory_and_cpu_limits_are_applied_or_reported() {
    let state = State::new("limits");
    let cfg = config(&state, "exec sleep 60").with_limits(
        Limits::default()
            .with_memory_bytes(128 << 20)
            .with_cpus(0.5),
    );
    let sb = Sandbox::start(cfg).unwrap();
    let read = |dir: &std::path::Path, files: &[&str]| -> Option<String> {
        files
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .map(|s| s.trim().to_string())
    };
    match &sb.limits().memory {
        LimitState::Applied { path } => {
            let v = read(path, &["memory.max", "memory.limit_in_bytes"]).unwrap();
            assert_eq!(v, (128u64 << 20).to_string());
            // PID 1 is in the group.
            let procs = read(path, &["cgroup.procs"]).unwrap();
            assert!(procs.lines().any(|p| p == sb.pid().to_string()), "{procs}");
        }
        LimitState::Unavailable { reason } => println!("SKIPPED memory: {reason}"),
        other => panic!("{other:?}"),
    }
    match &sb.limits().cpu {
        LimitState::Applied { path } => {
            let v = read(path, &["cpu.max", "cpu.cfs_quota_us"]).unwrap();
            assert!(v == "50000 100000" || v == "50000", "{v}");
        }
        LimitState::Unavailable { reason } => println!("SKIPPED cpu: {reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sb.limits().pids, LimitState::NotRequested);
    sb.stop().unwrap();
}
