//! The exec service through the public client API, with the agent as PID 1 of a namespace.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{within, Sandbox};
use sbx_exec::{Error, ExecRequest, ExitStatus, RemoteErrorKind, User, WindowSize};

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

#[test]
fn exit_codes_and_signals_pass_through() {
    let sb = Sandbox::start();
    for code in [0, 1, 3, 255] {
        let out = sb.client.output(sh(&format!("exit {code}"))).unwrap();
        assert_eq!(out.status, ExitStatus::Code(code));
    }
    let out = sb.client.output(sh("kill -9 $$")).unwrap();
    assert_eq!(out.status.signal(), Some(9));
    let out = sb.client.output(sh("kill -TERM $$")).unwrap();
    assert_eq!(out.status.signal(), Some(15));
    assert_eq!(out.status.shell_code(), 143);
}

#[test]
fn stdout_and_stderr_stay_separate() {
    let sb = Sandbox::start();
    let out = sb
        .client
        .output(sh("echo out1; echo err1 >&2; echo out2; echo err2 >&2"))
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"out1\nout2\n");
    assert_eq!(out.stderr, b"err1\nerr2\n");
}

#[test]
fn stdin_reaches_the_command_and_eof_ends_it() {
    let sb = Sandbox::start();
    let mut s = sb.client.exec(ExecRequest::new(["cat"])).unwrap();
    let mut out = s.take_stdout().unwrap();
    let mut stdin = s.take_stdin().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    drop(stdin);
    let mut v = Vec::new();
    out.read_to_end(&mut v).unwrap();
    assert_eq!(v, b"hello\n");
    assert!(s.wait().unwrap().success());
}

#[test]
fn tty_with_and_without_pty() {
    let sb = Sandbox::start();
    let out = sb
        .client
        .output(ExecRequest::new(["tty"]).tty(WindowSize::new(24, 80)))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("/dev/pts/"));
    assert!(out.stderr.is_empty());
    let out = sb.client.output(ExecRequest::new(["tty"])).unwrap();
    assert_eq!(out.status, ExitStatus::Code(1));
    assert_eq!(out.stdout, b"not a tty\n");
}

fn read_until(r: &mut impl Read, acc: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(acc).contains(needle) {
        let n = r.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "EOF before {needle:?}; got {:?}",
            String::from_utf8_lossy(acc)
        );
        acc.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn stty_size_follows_resize() {
    let sb = Sandbox::start();
    let client = sb.client.clone();
    within(30, move || {
        let req = sh("stty size; read x; stty size; exit 3").tty(WindowSize::new(24, 80));
        let mut s = client.exec(req).unwrap();
        let mut out = s.take_stdout().unwrap();
        let mut stdin = s.take_stdin().unwrap();
        let mut acc = Vec::new();
        read_until(&mut out, &mut acc, "24 80");
        s.resize(WindowSize::new(50, 132)).unwrap();
        stdin.write_all(b"\n").unwrap();
        read_until(&mut out, &mut acc, "50 132");
        out.read_to_end(&mut acc).unwrap();
        assert_eq!(s.wait().unwrap(), ExitStatus::Code(3));
    });
}

#[test]
fn user_env_and_cwd() {
    let sb = Sandbox::start();
    let c = &sb.client;
    let out = c
        .output(
            sh("id -u; id -g; id -G; echo $HOME; echo $USER; pwd").user(User::Name("agent".into())),
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\n1000\n1000 10\n/home/agent\nagent\n/home/agent\n"
    );
    let out = c
        .output(sh("id -u; id -g").user(User::Id {
            uid: 1234,
            gid: 5678,
        }))
        .unwrap();
    assert_eq!(out.stdout, b"1234\n5678\n");
    let out = c
        .output(
            sh("echo $FOO; pwd; echo $PATH")
                .env("FOO", "bar baz")
                .cwd("/tmp"),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("bar baz\n/tmp\n/usr/local/sbin:"),
        "{text}"
    );
    match c.output(ExecRequest::new(["true"]).user(User::Name("nobody-here".into()))) {
        Err(Error::Remote {
            kind: RemoteErrorKind::NoSuchUser,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match c.output(ExecRequest::new(["/no/such/program"])) {
        Err(Error::Remote {
            kind: RemoteErrorKind::Spawn,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn signal_reaches_the_command() {
    let sb = Sandbox::start();
    let client = sb.client.clone();
    within(30, move || {
        let mut s = client.exec(ExecRequest::new(["sleep", "100"])).unwrap();
        s.signal(libc::SIGTERM).unwrap();
        assert_eq!(s.wait().unwrap().signal(), Some(libc::SIGTERM));
    });
}

#[test]
fn thirty_two_concurrent_execs() {
    let sb = Sandbox::start();
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let c = sb.client.clone();
            std::thread::spawn(move || {
                let req = sh("echo out$I; sleep 0.2; echo err$I >&2; exit $((I % 7))")
                    .env("I", i.to_string());
                (i, c.output(req).unwrap())
            })
        })
        .collect();
    within(60, move || {
        for h in handles {
            let (i, out) = h.join().unwrap();
            assert_eq!(out.stdout, format!("out{i}\n").as_bytes());
            assert_eq!(out.stderr, format!("err{i}\n").as_bytes());
            assert_eq!(out.status, ExitStatus::Code(i % 7));
        }
    });
}

fn zombies(c: &sbx_exec::Client) -> usize {
    // The state is the field after the last ')' of /proc/PID/stat.
    let out = c.output(sh("cat /proc/[0-9]*/stat 2>/dev/null")).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .count()
}

#[test]
fn orphaned_zombies_are_reaped() {
    let sb = Sandbox::start();
    // Each subshell forks a short sleeper and exits at once: the sleepers are re-parented to
    // PID 1 (the agent) and become zombies there unless it reaps them.
    let out = sb
        .client
        .output(sh("for i in $(seq 30); do (sleep 0.05 &); done"))
        .unwrap();
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    std::thread::sleep(Duration::from_millis(200));
    loop {
        let z = zombies(&sb.client);
        if z == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{z} zombies remain");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ps = sb.client.output(sh("ls -d /proc/[0-9]* | wc -l")).unwrap();
    let n: usize = String::from_utf8_lossy(&ps.stdout).trim().parse().unwrap();
    assert!(n < 10, "{n} processes left");
}

#[test]
fn host_closing_mid_stream_does_not_wedge_the_agent() {
    let sb = Sandbox::start();
    let client = sb.client.clone();
    within(60, move || {
        // Output the host stops reading, then abandons.
        let mut s1 = client.exec(ExecRequest::new(["cat", "/dev/zero"])).unwrap();
        let mut out = s1.take_stdout().unwrap();
        let mut buf = vec![0u8; 65536];
        out.read_exact(&mut buf).unwrap();
        // Input the host abandons halfway.
        let mut s2 = client.exec(sh("cat >/dev/null; sleep 100")).unwrap();
        s2.stdin().unwrap().write_all(&vec![7u8; 3 << 20]).unwrap();
        let running = client.output(ExecRequest::new(["pidof", "cat"])).unwrap();
        let pids = String::from_utf8_lossy(&running.stdout)
            .split_whitespace()
            .count();
        assert_eq!(pids, 2, "both commands run before the host leaves");
        drop(out);
        drop(s1);
        drop(s2);
        // A later exec works and the abandoned commands are gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = client.output(sh("pidof cat; true")).unwrap();
            assert!(out.status.success());
            if out.stdout.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "abandoned commands still run: {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

#[test]
fn hybrid_vsock_transport_through_a_connect_proxy() {
    use std::io::BufRead;
    use std::os::unix::net::{UnixListener, UnixStream};
    let sb = Sandbox::start();
    // A stand-in for the VMM's vsock socket: `CONNECT <port>\n`, `OK <port>\n`, then bytes.
    let vmm_sock = sb.dir.0.join("vsock.sock");
    let l = UnixListener::bind(&vmm_sock).unwrap();
    let agent_sock = sb.sock.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let host = conn.unwrap();
            let mut r = std::io::BufReader::new(host.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let port = line.trim().strip_prefix("CONNECT ").unwrap().to_owned();
            let guest = UnixStream::connect(&agent_sock).unwrap();
            (&host)
                .write_all(format!("OK {port}\n").as_bytes())
                .unwrap();
            let (mut g2, mut h2) = (guest.try_clone().unwrap(), host.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut r, &mut g2);
                let _ = g2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut guest = guest;
                let _ = std::io::copy(&mut guest, &mut h2);
                let _ = h2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    let client = sbx_exec::Client::new(sbx_exec::HybridVsockTransport::new(vmm_sock, 52));
    let out = within(30, move || {
        client.output(sh("echo via vsock; exit 5")).unwrap()
    });
    assert_eq!(out.stdout, b"via vsock\n");
    assert_eq!(out.status, ExitStatus::Code(5));
}

#[test]
fn an_unread_stdout_holds_the_command_back_but_not_stderr() {
    let sb = Sandbox::start();
    let client = sb.client.clone();
    within(60, move || {
        let mut s = client
            .exec(sh("echo e1 >&2; head -c 8388608 /dev/zero; echo e2 >&2"))
            .unwrap();
        let mut err = s.take_stderr().unwrap();
        let mut out = s.take_stdout().unwrap();
        let mut acc = Vec::new();
        read_until(&mut err, &mut acc, "e1");
        // 8 MiB exceed the stdout window plus the pipe: the command must be blocked.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(s.try_wait().unwrap(), None);
        let mut n = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = out.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        assert_eq!(n, 8 << 20);
        err.read_to_end(&mut acc).unwrap();
        assert_eq!(acc, b"e1\ne2\n");
        assert!(s.wait().unwrap().success());
    });
}
