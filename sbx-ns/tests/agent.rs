//! The guest agent as PID 1 and the exec protocol over the state folder's Unix socket.

#![allow(clippy::print_stdout)]

mod common;

use std::io::Read;
use std::time::Duration;

use common::{busybox_root, helper, State};
use sbx_exec::{ExecRequest, ExitStatus, WindowSize};
use sbx_ns::{AgentOptions, Config, Exit, Init, Sandbox};

fn agent() -> AgentOptions {
    AgentOptions::default().with_exe(env!("CARGO_BIN_EXE_sbx-ns-helper"))
}

fn start(state: &State) -> Sandbox {
    // The agent replaces this init program; its environment and cwd carry over.
    let cfg = Config::new(
        busybox_root(),
        &state.0,
        Init::new("/bin/sh", Vec::<String>::new()),
    )
    .with_helper(helper());
    Sandbox::builder(cfg)
        .agent(agent())
        .start()
        .expect("start agent sandbox")
}

#[test]
fn exec_runs_commands_with_separate_streams_and_exit_codes() {
    let state = State::new("agent-exec");
    let sb = start(&state);
    let sock = sb.exec_socket().unwrap().to_path_buf();
    assert!(sock.starts_with(&state.0));
    let client = sb.client().unwrap();
    let out = client
        .output(ExecRequest::new([
            "sh",
            "-c",
            "id -u; echo err >&2; exit 5",
        ]))
        .unwrap();
    assert_eq!(out.stdout, b"0\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status, ExitStatus::Code(5));
    // The agent is PID 1 and the commands run in the sandbox's namespaces.
    let out = client
        .output(ExecRequest::new([
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; hostname",
        ]))
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("/.sbx/sbx-guest"), "{text}");
    assert!(text.ends_with("sbx\n"));
    // Signals come back as such.
    let out = client
        .output(ExecRequest::new(["sh", "-c", "kill -9 $$"]))
        .unwrap();
    assert!(matches!(out.status, ExitStatus::Signal { signal: 9, .. }));
    assert_eq!(sb.shutdown(Duration::from_secs(5)).unwrap(), Exit::Code(0));
    assert!(!sock.exists(), "socket removed at stop");
}

#[test]
fn exec_on_a_pty() {
    let state = State::new("agent-pty");
    let sb = start(&state);
    let mut req = ExecRequest::new(["sh", "-c", "tty; stty size"]);
    req.tty = Some(WindowSize::new(33, 101));
    let mut s = sb.client().unwrap().exec(req).unwrap();
    s.close_stdin();
    let mut out = String::new();
    s.take_stdout().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(s.wait().unwrap(), ExitStatus::Code(0));
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("33 101"), "{out}");
}

#[test]
fn exec_inside_is_still_confined() {
    let state = State::new("agent-confined");
    let sb = start(&state);
    let out = sb
        .client()
        .unwrap()
        .output(ExecRequest::new([
            "sh",
            "-c",
            "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; probe keyctl-user; ls /.sbx",
        ]))
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("NoNewPrivs:\t1"));
    assert!(text.contains("Seccomp:\t2"));
    assert!(text.contains("keyctl-user DENIED"));
    // The agent's directory is read-only.
    let out = sb
        .client()
        .unwrap()
        .output(ExecRequest::new([
            "sh",
            "-c",
            "echo x > /.sbx/sbx-guest && echo WROTE",
        ]))
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("WROTE"));
}

#[test]
fn shutdown_leaves_nothing_running() {
    let state = State::new("agent-stop");
    let sb = start(&state);
    let client = sb.client().unwrap();
    let mut bg = client
        .exec(ExecRequest::new(["sh", "-c", "sleep 1000 & sleep 1000"]))
        .unwrap();
    bg.close_stdin();
    let pid = sb.pid();
    let pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let exit = sb.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(exit, Exit::Code(0));
    let left: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|p: &u32| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&pidns)
        })
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    // The exec that was running sees its command end.
    assert!(bg.wait().is_ok() || bg.try_wait().is_err());
}

#[test]
fn a_shared_install_dir_is_reused_while_current() {
    use std::os::unix::fs::MetadataExt;
    let shared = State::new("agent-shared");
    let opts = agent().with_install_dir(shared.0.join("agent"));
    let mut inodes = Vec::new();
    for i in 0..2 {
        let state = State::new(&format!("agent-shared-{i}"));
        let cfg = Config::new(
            busybox_root(),
            &state.0,
            Init::new("/bin/sh", Vec::<String>::new()),
        )
        .with_helper(helper());
        let sb = Sandbox::builder(cfg).agent(opts.clone()).start().unwrap();
        let out = sb
            .client()
            .unwrap()
            .output(ExecRequest::new(["true"]))
            .unwrap();
        assert!(out.status.success());
        sb.shutdown(Duration::from_secs(5)).unwrap();
        let meta = std::fs::metadata(shared.0.join("agent/.sbx/sbx-guest")).unwrap();
        inodes.push((meta.ino(), meta.mtime_nsec()));
        // Nothing was installed into the sandbox's own state folder.
        assert!(!state.0.join("agent").exists());
    }
    assert_eq!(
        inodes[0], inodes[1],
        "the second start copied the agent again"
    );
}
