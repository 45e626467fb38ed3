//! Namespace sandbox (sbx-ns): start to first exec ready, and `exec true` round trip into a
//! running sandbox, median of 50 each, next to the floor measured in the same run: util-linux
//! `unshare` (user, mount, pid, net, uts, ipc namespaces) + `chroot` running `/bin/true` in the
//! same busybox image.
//!
//! This binary is also the sandbox's setup helper and its agent (multi-call hooks first in
//! `main`). Needs root (or unprivileged user namespaces), util-linux `unshare` and
//! `busybox` (busybox-static). `SBX_BENCH_NS_RUNS` overrides the 50 runs.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sbx_benches::{median, percentile};
use sbx_exec::ExecRequest;
use sbx_ns::{AgentOptions, Config, Init, Sandbox};

fn busybox_root(root: &Path) -> std::io::Result<()> {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
}

fn config(root: &Path, state: &Path) -> Config {
    Config::new(root, state, Init::new("/bin/sh", Vec::<String>::new())).with_network(false)
}

fn start(root: &Path, state: &Path) -> Sandbox {
    // Installed once, next to the states (as sbx keeps it in its data directory).
    let install = state.parent().expect("state in a folder").join("agent");
    Sandbox::builder(config(root, state))
        .agent(AgentOptions::default().with_install_dir(install))
        .start()
        .expect("start sandbox")
}

fn exec_true(sb: &Sandbox) {
    let out = sb
        .client()
        .expect("agent")
        .output(ExecRequest::new(["/bin/true"]))
        .expect("exec true");
    assert!(out.status.success());
}

fn report(name: &str, samples: &[Duration]) {
    println!(
        "{name:<44} median {:>8.2} ms  p90 {:>8.2} ms  (n={})",
        median(samples).as_secs_f64() * 1e3,
        percentile(samples, 90.0).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn main() {
    sbx_ns::run_if_helper();
    sbx_guest::run_if_agent();
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once as a smoke test.
    let runs: usize = if std::env::args().any(|a| a == "--bench") {
        std::env::var("SBX_BENCH_NS_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50)
    } else {
        2
    };
    let dir = std::env::temp_dir().join(format!("sbx-bench-ns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    busybox_root(&root).expect("busybox root (apt-get install busybox-static)");

    // Floor: namespaces + chroot + exec of /bin/true, process start to exit.
    let mut floor = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let st = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "--pid",
                "--fork",
                "--net",
            ])
            .args(["--uts", "--ipc", "chroot"])
            .arg(&root)
            .arg("/bin/true")
            .stdin(Stdio::null())
            .status()
            .expect("run unshare (util-linux)");
        floor.push(t.elapsed());
        assert!(st.success(), "unshare + chroot failed");
    }

    // Start to first exec done (includes installing the agent into the state folder), then
    // stop, each on a fresh state folder.
    let mut ready = Vec::new();
    let mut stop = Vec::new();
    for i in 0..runs {
        let state: PathBuf = dir.join(format!("state-{i}"));
        let t = Instant::now();
        let sb = start(&root, &state);
        exec_true(&sb);
        ready.push(t.elapsed());
        let t = Instant::now();
        sb.shutdown(Duration::from_secs(2)).expect("shutdown");
        stop.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&state);
    }

    // exec true round trips into one running sandbox.
    let state = dir.join("state-rt");
    let sb = start(&root, &state);
    exec_true(&sb);
    let mut rtt = Vec::new();
    for _ in 0..runs.max(50) {
        let t = Instant::now();
        exec_true(&sb);
        rtt.push(t.elapsed());
    }
    sb.shutdown(Duration::from_secs(2)).expect("shutdown");

    println!("namespace sandbox, busybox root, {runs} runs");
    report("floor: unshare + chroot /bin/true", &floor);
    report("sbx-ns: start to first `exec true` done", &ready);
    report("sbx-ns: shutdown (agent stops, ns gone)", &stop);
    report("sbx-ns: `exec true` round trip", &rtt);
    println!(
        "ratio start-to-ready / floor: {:.1}x",
        median(&ready).as_secs_f64() / median(&floor).as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
