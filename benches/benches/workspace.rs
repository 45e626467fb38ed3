//! A build-like workload on a sandbox's workspace versus the same on the host, in one run:
//! untar a tree of 20,000 small files, `git init` + `git add -A`, `git status`, delete it.
//!
//! - **host**: the workload in a folder on the host file system.
//! - **mount**: a namespace sandbox (`sbx create shell W`): the workload in the workspace
//!   `W`, a bind mount of the host folder, as `agent`.
//! - **clone**: a clone-mode sandbox (`sbx create --clone shell REPO`): the workload in the
//!   clone, on the sandbox's own disk (the overlay's writable layer), as `agent`.
//!
//! Each phase is timed inside the sandbox by the workload script itself (`date +%s%N`), so
//! the `sbx exec` round trip is not counted. Median of `SBX_BENCH_WS_RUNS` (default 5) runs.
//! The microVM path (virtio-fs through virtiofsd) cannot run on these hosts (no hardware KVM).
//!
//! Uses `SBX_BIN` or the `sbx` next to this bench's target folder, and images from
//! `SBX_IMAGES_DIR` (default: the store the tests share under `CARGO_TARGET_TMPDIR`). Needs
//! root, tar and git.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sbx_benches::median;

const FILES: usize = 20_000;
const PER_DIR: usize = 100;
/// The host user the sandboxes are created for (as through `sudo`), so `agent` owns the
/// workspace.
const USER: (u32, u32) = (4242, 4242);
const PHASES: [&str; 5] = ["untar", "git add", "git status", "delete", "total"];

/// Runs in the work folder's parent: `$1` tarball, `$2` work folder. Prints nanoseconds per
/// phase.
const SCRIPT: &str = r#"set -e
t() { date +%s%N; }
mkdir "$2"; cd "$2"
a=$(t); tar xf "$1"; b=$(t)
git init -q; git add -A; c=$(t)
git status --porcelain >/dev/null; d=$(t)
cd ..; rm -rf "$2"; e=$(t)
echo "$((b-a)) $((c-b)) $((d-c)) $((e-d)) $((e-a))"
"#;

fn sbx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SBX_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target folder")
        .join("sbx");
    assert!(
        bin.is_file(),
        "{} missing: build sbx-cli first (or set SBX_BIN)",
        bin.display()
    );
    bin
}

fn images_dir() -> PathBuf {
    std::env::var_os("SBX_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbx-image-store"))
}

struct Sbx {
    bin: PathBuf,
    home: PathBuf,
}

impl Sbx {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("SBX_HOME", &self.home)
            .env("SBX_IMAGES_DIR", images_dir())
            .env("SUDO_UID", USER.0.to_string())
            .env("SUDO_GID", USER.1.to_string())
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run sbx");
        assert!(
            out.status.success(),
            "sbx {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Sbx {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-f", "--all"]).output();
    }
}

fn parse(out: &str) -> Vec<Duration> {
    out.split_whitespace()
        .map(|n| Duration::from_nanos(n.parse().expect("nanoseconds")))
        .collect()
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// 20,000 files of 64 to 1,000 bytes in 200 folders, tarred.
fn make_tarball(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    for i in 0..FILES {
        let d = src.join(format!("pkg{:03}", i / PER_DIR));
        if i % PER_DIR == 0 {
            std::fs::create_dir_all(&d).unwrap();
        }
        let len = 64 + (i * 7919) % 937;
        let body: String = format!("// file {i}\n").chars().cycle().take(len).collect();
        std::fs::write(d.join(format!("f{i}.rs")), body).unwrap();
    }
    let tar = dir.join("tree.tar");
    sh(Command::new("tar")
        .arg("cf")
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("."));
    std::fs::remove_dir_all(&src).unwrap();
    tar
}

fn chown_tree(p: &Path) {
    sh(Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", USER.0, USER.1))
        .arg(p));
}

fn main() {
    if !std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
    {
        eprintln!("skipped: needs root (namespace sandboxes)");
        return;
    }
    let runs: usize = std::env::var("SBX_BENCH_WS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // Not under /tmp: clone mode refuses repositories there (the sandbox's /tmp is its own).
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let base = if ["/tmp", "/run", "/dev"]
        .iter()
        .any(|p| target.starts_with(p))
    {
        Path::new("/var/tmp")
    } else {
        target
    };
    let root = base.join(format!("bench-ws-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let sbx = Sbx {
        bin: sbx_bin(),
        home: root.join("home"),
    };
    std::fs::create_dir_all(&sbx.home).unwrap();
    std::fs::write(
        sbx.home.join("config.json"),
        r#"{"default_policy":"balanced"}"#,
    )
    .unwrap();

    // The tarball sits in the workspace (mount mode) and in a read-only extra folder (clone).
    let ws = root.join("ws");
    let tars = root.join("tars");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&tars).unwrap();
    let tar = make_tarball(&tars);
    std::fs::copy(&tar, ws.join("tree.tar")).unwrap();
    chown_tree(&ws);
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    sh(Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .arg(&repo));
    sh(Command::new("git").arg("-C").arg(&repo).args([
        "-c",
        "user.name=b",
        "-c",
        "user.email=b@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "empty",
    ]));
    chown_tree(&repo);

    let ro = format!("{}:ro", tars.display());
    sbx.ok(&[
        "create",
        "--name",
        "mount",
        "--isolation",
        "namespace",
        "-m",
        "2g",
        "shell",
        ws.to_str().unwrap(),
    ]);
    sbx.ok(&[
        "create",
        "--clone",
        "--name",
        "clone",
        "--isolation",
        "namespace",
        "-m",
        "2g",
        "shell",
        repo.to_str().unwrap(),
        &ro,
    ]);
    sbx.ok(&["exec", "mount", "true"]);
    sbx.ok(&["exec", "clone", "true"]);

    let host_dir = root.join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    let in_sandbox = |name: &str, tar: &Path, parent: &Path| {
        parse(&sbx.ok(&[
            "exec",
            "-w",
            parent.to_str().unwrap(),
            name,
            "sh",
            "-c",
            SCRIPT,
            "sh",
            tar.to_str().unwrap(),
            "run",
        ]))
    };
    let mut samples: Vec<(&str, Vec<Vec<Duration>>)> =
        vec![("host", vec![]), ("mount", vec![]), ("clone", vec![])];
    for _ in 0..runs {
        let host = parse(&sh(Command::new("sh")
            .current_dir(&host_dir)
            .args(["-c", SCRIPT, "sh"])
            .arg(&tar)
            .arg("run")
            .env("GIT_AUTHOR_NAME", "b")));
        samples[0].1.push(host);
        samples[1]
            .1
            .push(in_sandbox("mount", &ws.join("tree.tar"), &ws));
        samples[2].1.push(in_sandbox("clone", &tar, &repo));
    }

    println!(
        "workspace workload: {FILES} files in {} folders, median of {runs} runs (namespace backend; bind mount for `mount`, overlay upper layer for `clone`)",
        FILES / PER_DIR
    );
    println!("{:<8} {}", "", PHASES.map(|p| format!("{p:>22}")).join(""));
    let med =
        |runs: &[Vec<Duration>], i: usize| median(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
    let host_runs = samples[0].1.clone();
    for (name, runs) in &samples {
        let cells: Vec<String> = (0..PHASES.len())
            .map(|i| {
                let m = med(runs, i);
                let ratio = m.as_secs_f64() / med(&host_runs, i).as_secs_f64().max(1e-9);
                format!("{:>12.1} ms {:>5.2}x", m.as_secs_f64() * 1e3, ratio)
            })
            .collect();
        println!("{name:<8} {}", cells.join(""));
    }
    drop(sbx);
    let _ = std::fs::remove_dir_all(&root);
}
