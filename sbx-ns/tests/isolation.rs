//! What the sandbox sees of itself and of the host (busybox root, real namespaces, as root).

#![allow(clippy::print_stdout)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{config, sh, State, BASE_MARKER};
use sbx_ns::{Bind, Exit, FrameDevice, Sandbox};

#[test]
fn busybox_exec_works_and_exit_code_passes_through() {
    let o = sh("exec", "echo hello; echo oops >&2; exit 7");
    assert_eq!(o.stdout, "hello\n");
    assert_eq!(o.stderr, "oops\n");
    assert_eq!(o.exit, Exit::Code(7));
}

#[test]
fn killed_by_signal_is_reported() {
    // PID 1 ignores signals it has no handler for when they come from inside, even SIGKILL:
    // the shell survives its own kill -9. A child killed by a signal shows up as 128+N.
    let o = sh("signal", "kill -9 $$; sh -c 'kill -9 $$'; echo $?");
    assert_eq!(o.stdout.trim(), "137");
    assert_eq!(o.exit, Exit::Code(0));
    // From the host, SIGKILL ends PID 1 and the exit says so.
    let state = State::new("signal-host");
    let mut sb = Sandbox::start(config(&state, "exec sleep 60")).unwrap();
    sb.signal(libc::SIGKILL).unwrap();
    assert_eq!(sb.wait().unwrap(), Exit::Signal(libc::SIGKILL));
}

#[test]
fn id_is_root_inside_and_the_invoking_user_outside() {
    let state = State::new("id");
    let mut sb = Sandbox::builder(config(&state, "id -u; id -g; exec sleep 60"))
        .stdout(Stdio::piped())
        .start()
        .unwrap();
    let mut lines = BufReader::new(sb.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "0");
    assert_eq!(lines.next().unwrap().unwrap(), "0");
    let status = std::fs::read_to_string(format!("/proc/{}/status", sb.pid())).unwrap();
    let field = |name: &str| -> Vec<u32> {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    assert_eq!(field("Uid:"), vec![uid; 4], "host view of PID 1's uids");
    assert_eq!(field("Gid:"), vec![gid; 4], "host view of PID 1's gids");
    let map = std::fs::read_to_string(format!("/proc/{}/uid_map", sb.pid())).unwrap();
    let first: Vec<u64> = map
        .split_whitespace()
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        first,
        vec![0, u64::from(uid)],
        "uid 0 inside maps to the invoker"
    );
    sb.stop().unwrap();
}

#[test]
fn namespaces_are_all_new() {
    let state = State::new("ns");
    let sb = Sandbox::builder(config(&state, "exec sleep 60"))
        .start()
        .unwrap();
    for ns in ["user", "mnt", "pid", "net", "uts", "ipc", "cgroup"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let theirs = std::fs::read_link(format!("/proc/{}/ns/{ns}", sb.pid())).unwrap();
        assert_ne!(ours, theirs, "{ns} namespace is shared with the host");
    }
    sb.stop().unwrap();
}

#[test]
fn privileges_are_reduced() {
    let o = sh(
        "privs",
        "grep -E '^(CapBnd|CapEff|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    let get = |k: &str| {
        o.stdout
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_string()
    };
    let kept: u64 = sbx_ns::KEPT_CAPABILITIES
        .iter()
        .map(|(c, _)| 1u64 << c)
        .sum();
    assert_eq!(u64::from_str_radix(&get("CapBnd:"), 16).unwrap(), kept);
    assert_eq!(u64::from_str_radix(&get("CapEff:"), 16).unwrap(), kept);
    assert_eq!(get("CapInh:"), "0000000000000000");
    assert_eq!(get("CapAmb:"), "0000000000000000");
    assert_eq!(get("NoNewPrivs:"), "1");
    assert_eq!(get("Seccomp:"), "2");
}

#[test]
fn host_files_are_not_visible() {
    // A host file next to the sandbox's own state and base must not be reachable by its path.
    let secret_dir = common::tmp_root().join(format!("host-only-{}", std::process::id()));
    std::fs::create_dir_all(&secret_dir).unwrap();
    let secret = secret_dir.join("secret.txt");
    std::fs::write(&secret, "host-secret-7c1f\n").unwrap();
    let state = State::new("hidden");
    let script = format!(
        "cat {s} 2>&1; ls {d} 2>&1; ls /; ls {cwd} 2>&1; cat /proc/mounts",
        s = secret.display(),
        d = secret_dir.display(),
        cwd = std::env::current_dir().unwrap().display(),
    );
    let o = common::run(config(&state, &script));
    assert!(!o.stdout.contains("host-secret-7c1f"));
    assert!(o.stdout.contains("No such file or directory"));
    // The root holds the base image's entries and the fresh mounts, nothing of the host's.
    let listing: Vec<&str> = o
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("bin"))
        .take(9)
        .collect();
    assert_eq!(
        listing,
        ["bin", "dev", "etc", "proc", "root", "sbin", "sys", "tmp", "usr"]
    );
    // Every mount is one the setup made: no host file system is mounted inside.
    let allowed_targets = [
        "/",
        "/proc",
        "/proc/sys",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/kallsyms",
        "/proc/kcore",
        "/proc/sched_debug",
        "/proc/sysrq-trigger",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/tmp",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ];
    for line in o.stdout.lines().filter(|l| l.contains(" 0 0")) {
        let target = line.split_whitespace().nth(1).unwrap();
        assert!(allowed_targets.contains(&target), "unexpected mount {line}");
    }
    std::fs::remove_dir_all(secret_dir).unwrap();
}

#[test]
fn writes_land_in_the_upper_dir_and_the_base_is_unchanged() {
    let base = common::busybox_root();
    let before = std::fs::read_to_string(base.join(BASE_MARKER)).unwrap();
    let state = State::new("upper");
    let script = format!(
        "echo new > /newfile && echo changed > /{m} && rm /bin/vi && mkdir -p /root/d && echo x > /root/d/f && cat /{m}",
        m = BASE_MARKER
    );
    let cfg = config(&state, &script);
    let upper = cfg.upper_dir();
    let o = common::run(cfg);
    assert_eq!(o.exit, Exit::Code(0));
    assert_eq!(o.stdout, "changed\n");
    assert_eq!(
        std::fs::read_to_string(upper.join("newfile")).unwrap(),
        "new\n"
    );
    // Only the invoking user can reach the writable layer on the host.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&state.0).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(
        std::fs::read_to_string(upper.join(BASE_MARKER)).unwrap(),
        "changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("root/d/f")).unwrap(),
        "x\n"
    );
    // The deletion is a whiteout (a 0:0 character device) in the upper layer.
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(upper.join("bin/vi"))
        .unwrap()
        .file_type()
        .is_char_device());
    // The base is untouched.
    assert_eq!(
        std::fs::read_to_string(base.join(BASE_MARKER)).unwrap(),
        before
    );
    assert!(!base.join("newfile").exists());
    assert!(!base.join("root/d").exists());
    assert!(std::fs::symlink_metadata(base.join("bin/vi"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn state_survives_a_restart() {
    let state = State::new("restart");
    let o = common::run(config(&state, "echo 1 > /persist"));
    assert_eq!(o.exit, Exit::Code(0));
    let o = common::run(config(&state, "cat /persist"));
    assert_eq!(o.stdout, "1\n");
}

#[test]
fn binds_are_read_only_or_read_write_as_asked() {
    let host = common::tmp_root().join(format!("binds-{}", std::process::id()));
    let (ro, rw) = (host.join("ro"), host.join("rw"));
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("in"), "ro-data\n").unwrap();
    let state = State::new("binds");
    let cfg = config(
        &state,
        "cat /mnt/ro/in; echo x > /mnt/ro/out 2>/dev/null && echo RO-WRITABLE; echo rw > /work/here/out; cat /proc/mounts | grep -c /mnt/ro",
    )
    .with_bind(Bind::new(&ro, "/mnt/ro", true))
    .with_bind(Bind::new(&rw, "/work/here", false));
    let o = common::run(cfg);
    assert!(o.stdout.starts_with("ro-data\n"));
    assert!(!o.stdout.contains("RO-WRITABLE"));
    assert!(!ro.join("out").exists());
    assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "rw\n");
    std::fs::remove_dir_all(host).unwrap();
}

#[test]
fn fresh_proc_dev_tmp_and_hostname() {
    let state = State::new("fresh");
    let cfg = config(
        &state,
        "hostname; ls /dev | tr '\\n' ' '; echo; ls -d /proc/[0-9]* | wc -l; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls -ld /tmp | cut -c1-10; echo x > /dev/null && echo null-ok",
    )
    .with_hostname("sbx-test");
    let o = common::run(cfg);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "sbx-test");
    assert_eq!(
        lines[1].trim(),
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"
    );
    // PID 1 (sh), ls, wc, and the subshell: only the sandbox's own processes exist.
    let procs: u32 = lines[2].trim().parse().unwrap();
    assert!(procs <= 4, "{procs} processes visible");
    assert!(lines[3].starts_with("/bin/sh -c"));
    assert_eq!(lines[4], "drwxrwxrwt");
    assert_eq!(lines[5], "null-ok");
}

#[test]
fn network_has_only_lo_and_the_tap() {
    let state = State::new("net");
    let mut sb = Sandbox::builder(config(
        &state,
        "ls /sys/class/net | tr '\\n' ' '; echo; cat /sys/class/net/lo/operstate; exec sleep 60",
    ))
    .stdout(Stdio::piped())
    .start()
    .unwrap();
    let mut lines = BufReader::new(sb.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap().trim(), "eth0 lo");
    assert_eq!(lines.next().unwrap().unwrap(), "unknown"); // lo is up (no carrier state)
    let tap = sb.tap().expect("tap");
    assert_eq!(tap.name(), "eth0");
    // eth0 is up, so the kernel inside sends IPv6 neighbour/router solicitations: the only
    // frames leaving the sandbox come out of this descriptor.
    tap.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let n = loop {
        match tap.read_frame(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no frame from the sandbox"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(n >= 14, "a whole Ethernet frame");
    // A frame written by the host arrives on eth0 inside (broadcast ARP request).
    let mut frame = vec![0xff; 6];
    frame.extend([0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    frame.extend([
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 2, 2, 0, 0, 0, 0, 0, 0, 10, 0, 2, 15,
    ]);
    let rx = |pid: u32| -> u64 {
        let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
        let line = dev
            .lines()
            .find(|l| l.trim_start().starts_with("eth0:"))
            .unwrap();
        line.split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let pid = sb.pid();
    let before = rx(pid);
    sb.tap().unwrap().write_frame(&frame).unwrap();
    assert_eq!(rx(pid), before + 1, "eth0 inside received the host's frame");
    sb.stop().unwrap();
}

#[test]
fn eth0_gets_the_configured_ipv4_and_mtu_and_its_frames_reach_the_host() {
    use std::net::Ipv4Addr;
    let state = State::new("ipv4");
    let cfg = config(
        &state,
        "cat /sys/class/net/eth0/mtu; ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; ip route | grep default; ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1; exec sleep 60",
    )
    .with_ipv4(sbx_ns::Ipv4Config::new(
        Ipv4Addr::new(10, 0, 2, 15),
        24,
        Some(Ipv4Addr::new(10, 0, 2, 2)),
    )
    .with_mtu(9000));
    let mut sb = Sandbox::builder(cfg)
        .stdout(Stdio::piped())
        .start()
        .unwrap();
    let tap = sb.tap().unwrap();
    tap.set_nonblocking(true).unwrap();
    // The ping makes the kernel inside ARP for the gateway: that request comes out of the TAP.
    let mut buf = [0u8; 2048];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tap.read_frame(&mut buf) {
            Ok(n) if n >= 42 && buf[12..14] == [0x08, 0x06] => {
                assert_eq!(&buf[28..32], &[10, 0, 2, 15], "ARP sender is the sandbox");
                assert_eq!(&buf[38..42], &[10, 0, 2, 2], "ARP target is the gateway");
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no ARP from the sandbox"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let mut lines = BufReader::new(sb.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "9000", "eth0's MTU");
    assert_eq!(lines.next().unwrap().unwrap(), "inet 10.0.2.15/24");
    assert!(lines
        .next()
        .unwrap()
        .unwrap()
        .starts_with("default via 10.0.2.2 dev eth0"));
    sb.stop().unwrap();
}
