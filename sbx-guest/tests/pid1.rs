//! PID-1 duties: mounts, hostname, startup and main commands, signal forwarding, shutdown.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{within, Opts, Sandbox};
use sbx_exec::{ExecRequest, ExitStatus};

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

#[test]
fn mounts_hostname_and_pid_1() {
    let sb = Sandbox::start();
    let out = sb
        .client
        .output(sh(
            "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
             for m in /proc /sys /dev /dev/pts /dev/shm /run /tmp; do \
               grep -q \" $m \" /proc/mounts && echo mounted $m; done; \
             echo x > /dev/null && head -c 4 /dev/zero | wc -c; ls -l /dev/ptmx",
        ))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("sbx-test"));
    assert!(lines.next().unwrap().contains("/.sbx/sbx-guest"), "{text}");
    for m in [
        "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp",
    ] {
        assert!(
            text.contains(&format!("mounted {m}\n")),
            "{m} not mounted: {text}"
        );
    }
    assert!(text.contains("\n4\n"), "{text}");
}

#[test]
fn listens_on_a_socket_path() {
    let sb = Sandbox::start_with(Opts {
        listen_path: true,
        ..Opts::default()
    });
    let out = sb.client.output(ExecRequest::new(["echo", "hi"])).unwrap();
    assert_eq!(out.stdout, b"hi\n");
}

#[test]
fn shutdown_on_request_stops_everything() {
    let mut sb = Sandbox::start();
    let client = sb.client.clone();
    let mut sleeper = client.exec(ExecRequest::new(["sleep", "1000"])).unwrap();
    within(30, move || client.shutdown().unwrap());
    // The running command was terminated by the shutdown, not left behind.
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGTERM));
    let st = sb
        .wait_exit(Duration::from_secs(20))
        .expect("sandbox ended");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn main_command_exit_ends_the_sandbox_after_startup_commands() {
    let mut sb = Sandbox::start_with(Opts {
        args: &[
            "--startup",
            "echo one > /run/order",
            "--startup",
            "echo two >> /run/order",
            "--",
            "sh",
            "-c",
            "test \"$(cat /run/order)\" = \"$(printf 'one\\ntwo')\" && exit 7",
        ],
        ..Opts::default()
    });
    let st = sb
        .wait_exit(Duration::from_secs(30))
        .expect("sandbox ended");
    assert_eq!(st.code(), Some(7));
}

#[test]
fn main_command_exit_can_be_ignored() {
    let sb = Sandbox::start_with(Opts {
        args: &["--on-main-exit", "stay", "--", "true"],
        ..Opts::default()
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = sb
        .client
        .output(ExecRequest::new(["echo", "still"]))
        .unwrap();
    assert_eq!(out.stdout, b"still\n");
}

#[test]
fn signals_to_pid_1_reach_the_main_command() {
    let mut sb = Sandbox::start_with(Opts {
        args: &["--", "sleep", "1000"],
        ..Opts::default()
    });
    // Wait until the agent serves (and so has started the main command).
    let out = sb
        .client
        .output(ExecRequest::new(["pidof", "sleep"]))
        .unwrap();
    assert!(out.status.success());
    let init = sb.init_host_pid();
    // SAFETY: plain kill of a process this test started.
    assert_eq!(unsafe { libc::kill(init, libc::SIGTERM) }, 0);
    let st = sb
        .wait_exit(Duration::from_secs(20))
        .expect("sandbox ended");
    // `sleep` died of the forwarded SIGTERM; the agent exits 128 + 15.
    assert_eq!(st.code(), Some(143), "{st:?} signal {:?}", st.signal());
}

#[test]
fn sigterm_without_main_command_shuts_down() {
    let mut sb = Sandbox::start();
    assert!(sb.client.output(ExecRequest::new(["true"])).unwrap().status == ExitStatus::Code(0));
    let init = sb.init_host_pid();
    // SAFETY: plain kill of a process this test started.
    assert_eq!(unsafe { libc::kill(init, libc::SIGTERM) }, 0);
    let st = sb
        .wait_exit(Duration::from_secs(20))
        .expect("sandbox ended");
    assert_eq!(st.code(), Some(0));
}

#[test]
fn switch_root_moves_to_the_new_root_before_serving() {
    // The microVM path without a VM: start in the host's root, mount a fresh (empty) tmpfs as
    // the "root device" and switch to it. The agent must then serve from inside that root,
    // where no /bin/sh exists, with its standard mounts made there.
    let sb = Sandbox::start_with(Opts {
        host_root: true,
        args: &["--init", "--root-device", "none", "--root-fstype", "tmpfs"],
        ..Opts::default()
    });
    match sb
        .client
        .output(ExecRequest::new(["/bin/sh", "-c", "true"]))
    {
        Err(sbx_exec::Error::Remote {
            kind: sbx_exec::RemoteErrorKind::Spawn,
            message,
        }) => assert!(message.contains("No such file"), "{message}"),
        other => panic!("expected a spawn error in the empty root: {other:?}"),
    }
    assert!(std::path::Path::new("/bin/sh").exists());
}
