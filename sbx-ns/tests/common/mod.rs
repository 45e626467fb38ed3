//! Shared helpers for the integration tests: a busybox root built at test time, a static C
//! probe for the syscalls busybox has no applet for, and a runner.

#![allow(dead_code, clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sbx_ns::{Config, Exit, Helper, Init, Sandbox};

pub const BUSYBOX_CANDIDATES: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// A file in the base image the tests check for changes.
pub const BASE_MARKER: &str = "etc/sbx-base-marker";

pub fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sbx-ns-tests")
}

fn static_busybox() -> PathBuf {
    for c in BUSYBOX_CANDIDATES {
        let out = Command::new("file").arg("-L").arg(c).output();
        let is_static = match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).contains("statically linked"),
            // No `file`: trust the path if it exists.
            Err(_) => Path::new(c).exists(),
        };
        if is_static {
            return PathBuf::from(c);
        }
    }
    panic!("a static busybox is required: apt-get install -y busybox-static");
}

const PROBE_C: &str = include_str!("probe.c");

/// Compiles the probe statically (cc is always there: Rust links with it).
fn build_probe(out: &Path) {
    let src = out.with_extension("c");
    std::fs::write(&src, PROBE_C).unwrap();
    let st = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(st.success(), "cc failed to build the probe");
}

/// A minimal busybox root (read-only base for every test), built once per test binary.
pub fn busybox_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        // Shared by every test binary and run; rebuilt when the probe's source changes.
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (PROBE_C, BASE_MARKER, 1u32).hash(&mut h);
        let done = tmp_root().join(format!("busybox-root-{:016x}", h.finish()));
        if done.join(BASE_MARKER).exists() {
            return done;
        }
        let root = tmp_root().join(format!("busybox-root-building-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(static_busybox(), root.join("bin/busybox")).unwrap();
        let list = Command::new(root.join("bin/busybox"))
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
        build_probe(&root.join("bin/probe"));
        std::fs::remove_file(root.join("bin/probe.c")).unwrap();
        // The marker goes last: its presence means the root is complete.
        std::fs::write(root.join(BASE_MARKER), "base\n").unwrap();
        match std::fs::rename(&root, &done) {
            Ok(()) => done,
            // Another test binary finished first; use its copy.
            Err(_) if done.join(BASE_MARKER).exists() => {
                let _ = std::fs::remove_dir_all(&root);
                done
            }
            Err(e) => panic!("rename {}: {e}", root.display()),
        }
    })
    .clone()
}

/// A fresh state folder, removed on drop.
pub struct State(pub PathBuf);

impl State {
    pub fn new(name: &str) -> State {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = tmp_root().join(format!("state-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        State(p)
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn helper() -> Helper {
    Helper::Path(PathBuf::from(env!("CARGO_BIN_EXE_sbx-ns-helper")))
}

pub fn config(state: &State, script: &str) -> Config {
    Config::new(
        busybox_root(),
        &state.0,
        Init::new("/bin/sh", ["-c", script]),
    )
    .with_helper(helper())
}

pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub exit: Exit,
}

/// Runs `config` to completion, capturing PID 1's output.
pub fn run(config: Config) -> Output {
    let mut sb = Sandbox::builder(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .expect("start sandbox");
    let mut err_pipe = sb.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    sb.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let exit = sb.wait().unwrap();
    let stderr = err_thread.join().unwrap();
    println!("--- stdout\n{stdout}--- stderr\n{stderr}--- exit {exit:?}");
    Output {
        stdout,
        stderr,
        exit,
    }
}

/// Runs a shell script in a fresh busybox sandbox.
pub fn sh(name: &str, script: &str) -> Output {
    let state = State::new(name);
    run(config(&state, script))
}
