//! The `sbx` CLI on the namespace backend and the default Debian image: `sbx exec NAME true`
//! into a running sandbox, and the cold path (`sbx create`, first `sbx exec NAME true`, which
//! starts the supervisor and the sandbox, `sbx rm -f`), median of 20 each, next to the floors
//! measured in the same run on the same image: a bare sbx-ns start to first `exec true`, a bare
//! `exec true` round trip over the exec socket, and spawning `sbx --version`.
//!
//! Uses the release `sbx` next to this bench's folder (`cargo build --release -p sbx-cli`
//! first) or `SBX_BIN`; images from `SBX_IMAGES_DIR` (default: the store the tests share under
//! `CARGO_TARGET_TMPDIR`). This binary is also the bare sandbox's setup helper and agent.
//! Needs root. `SBX_BENCH_CLI_RUNS` overrides the 20 runs.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sbx_benches::{median, percentile};
use sbx_exec::ExecRequest;
use sbx_ns::{AgentOptions, Config, Init, Sandbox};

fn report(name: &str, samples: &[Duration]) {
    println!(
        "{name:<52} median {:>8.2} ms  p90 {:>8.2} ms  (n={})",
        median(samples).as_secs_f64() * 1e3,
        percentile(samples, 90.0).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn sbx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SBX_BIN") {
        return p.into();
    }
    // target/<profile>/deps/cli-<hash> -> target/<profile>/sbx
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target folder")
        .join("sbx");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo build --release -p sbx-cli` first (or set SBX_BIN)",
        bin.display()
    );
    bin
}

struct Sbx {
    bin: PathBuf,
    home: PathBuf,
    images: PathBuf,
}

impl Sbx {
    fn run(&self, args: &[&str]) {
        let out = Command::new(&self.bin)
            .args(args)
            .env("SBX_HOME", &self.home)
            .env("SBX_IMAGES_DIR", &self.images)
            .stdin(Stdio::null())
            .output()
            .expect("run sbx");
        assert!(
            out.status.success(),
            "sbx {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn timed(&self, args: &[&str]) -> Duration {
        let t = Instant::now();
        self.run(args);
        t.elapsed()
    }
}

fn main() {
    sbx_ns::run_if_helper();
    sbx_guest::run_if_agent();
    let runs: usize = if std::env::args().any(|a| a == "--bench") {
        std::env::var("SBX_BENCH_CLI_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20)
    } else {
        2
    };
    let dir = std::env::temp_dir().join(format!("sbx-bench-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let images = std::env::var_os("SBX_IMAGES_DIR").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbx-image-store"),
        PathBuf::from,
    );
    let sbx = Sbx {
        bin: sbx_bin(),
        home: dir.join("home"),
        images: images.clone(),
    };
    std::fs::create_dir_all(&sbx.home).unwrap();
    std::fs::write(
        sbx.home.join("config.json"),
        r#"{"default_policy":"balanced"}"#,
    )
    .unwrap();
    let flags = ["--isolation", "namespace", "shell"];

    // Warm-up: builds the image if the store has none, installs nothing else.
    let mut args = vec!["create", "--name", "warm"];
    args.extend(flags);
    sbx.run(&args);
    sbx.run(&["exec", "warm", "true"]);

    let mut version = Vec::new();
    for _ in 0..runs {
        version.push(sbx.timed(&["--version"]));
    }
    let mut hot = Vec::new();
    for _ in 0..runs {
        hot.push(sbx.timed(&["exec", "warm", "true"]));
    }
    sbx.run(&["rm", "-f", "warm"]);

    let (mut create, mut first, mut rm, mut cold) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let name = format!("cold-{i}");
        let mut args = vec!["create", "--name", &name];
        args.extend(flags);
        let c = sbx.timed(&args);
        let f = sbx.timed(&["exec", &name, "true"]);
        let r = sbx.timed(&["rm", "-f", &name]);
        create.push(c);
        first.push(f);
        rm.push(r);
        cold.push(c + f + r);
    }

    // Floors: the bare backend on the same root directory.
    let store = sbx_image::Store::new(&images);
    let rootfs = store
        .current(sbx_image::ImageKind::Rootfs, "default")
        .expect("image store")
        .expect("default rootfs")
        .rootfs_dir();
    let mut bare_ready = Vec::new();
    let mut bare_rtt = Vec::new();
    for i in 0..runs {
        let state = dir.join(format!("bare-{i}"));
        let config = Config::new(&rootfs, &state, Init::new("/bin/sh", Vec::<String>::new()))
            .with_network(false)
            .with_setuid(true);
        let t = Instant::now();
        let sb = Sandbox::builder(config)
            .agent(AgentOptions::default().with_install_dir(dir.join("agent")))
            .start()
            .expect("bare sandbox");
        let client = sb.client().expect("agent");
        assert!(client
            .output(ExecRequest::new(["true"]))
            .unwrap()
            .status
            .success());
        bare_ready.push(t.elapsed());
        for _ in 0..5 {
            let t = Instant::now();
            assert!(client
                .output(ExecRequest::new(["true"]))
                .unwrap()
                .status
                .success());
            bare_rtt.push(t.elapsed());
        }
        sb.shutdown(Duration::from_secs(2)).expect("shutdown");
        let _ = std::fs::remove_dir_all(&state);
    }

    println!("sbx CLI, namespace backend, Debian image, {runs} runs");
    report("floor: spawn `sbx --version`", &version);
    report("floor: bare sbx-ns `exec true` round trip", &bare_rtt);
    report("`sbx exec NAME true` (running sandbox)", &hot);
    report("floor: bare sbx-ns start to first `exec true`", &bare_ready);
    report("`sbx create`", &create);
    report("first `sbx exec NAME true` (starts it)", &first);
    report("`sbx rm -f` (stops it, deletes)", &rm);
    report("cold `true`: create + exec + rm", &cold);
    println!(
        "ratios: hot exec / bare round trip {:.1}x; first exec / bare start {:.1}x",
        median(&hot).as_secs_f64() / median(&bare_rtt).as_secs_f64(),
        median(&first).as_secs_f64() / median(&bare_ready).as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
