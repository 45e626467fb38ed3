//! A Debian base image: built once with `mmdebstrap` (minbase, bookworm) into the test scratch
//! folder, or taken from `SBX_NS_DEBIAN_ROOT`. Skipped, with the reason printed, only when
//! neither is available (mmdebstrap missing, or no Debian mirror reachable).

#![allow(clippy::print_stdout)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{helper, State};
use sbx_exec::{ExecRequest, ExitStatus, User};
use sbx_ns::{AgentOptions, Config, Exit, Init, Sandbox};

fn debian_root() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SBX_NS_DEBIAN_ROOT") {
        return Ok(PathBuf::from(p));
    }
    let done = common::tmp_root().join("debian-bookworm-minbase");
    if done.join("etc/debian_version").exists() {
        return Ok(done);
    }
    let building = common::tmp_root().join(format!("debian-building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(common::tmp_root()).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let out = Command::new("mmdebstrap")
        .args(["--variant=minbase", "--include=procps", "bookworm"])
        .arg(&building)
        .output()
        .map_err(|e| format!("mmdebstrap not available ({e}); apt-get install -y mmdebstrap"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        return Err(format!(
            "mmdebstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    println!("built a Debian root in {:?}", started.elapsed());
    std::fs::rename(&building, &done).map_err(|e| e.to_string())?;
    Ok(done)
}

#[test]
fn debian_root_exec_ids_isolation_and_upper_layer() {
    let root = match debian_root() {
        Ok(r) => r,
        Err(reason) => {
            println!("SKIPPED: no Debian root: {reason}");
            return;
        }
    };
    let version_before = std::fs::read_to_string(root.join("etc/debian_version")).unwrap();
    let state = State::new("debian");
    let cfg = Config::new(&root, &state.0, Init::new("/bin/sh", Vec::<String>::new()))
        .with_helper(helper());
    let upper = cfg.upper_dir();
    let sb = Sandbox::builder(cfg)
        .agent(AgentOptions::default().with_exe(env!("CARGO_BIN_EXE_sbx-ns-helper")))
        .start()
        .unwrap();
    let c = sb.client().unwrap();
    let run = |argv: &[&str]| {
        let o = c.output(ExecRequest::new(argv)).unwrap();
        (o.status, String::from_utf8_lossy(&o.stdout).into_owned())
    };

    // Debian's own userland runs (glibc from the image; the agent brought its own).
    let (st, out) = run(&[
        "bash",
        "-c",
        "id -u; cat /etc/debian_version; ps -e -o pid= | wc -l",
    ]);
    assert_eq!(st, ExitStatus::Code(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], version_before.trim());
    assert!(
        lines[2].trim().parse::<u32>().unwrap() <= 6,
        "only the sandbox's processes"
    );

    // Root inside is the invoking user outside.
    let status = std::fs::read_to_string(format!("/proc/{}/status", sb.pid())).unwrap();
    let uid = nix::unistd::geteuid().as_raw();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        line.split_whitespace()
            .skip(1)
            .all(|v| v == uid.to_string()),
        "{line}"
    );

    // Other users of the image work when the invoker may map them (root here).
    let mut req = ExecRequest::new(["id", "-u"]);
    req.user = Some(User::Name("nobody".into()));
    let o = c.output(req).unwrap();
    if uid == 0 {
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "65534");
    }

    // Host files are not there; writes land in the upper layer; the base stays unchanged.
    let host_only = std::env::current_dir().unwrap();
    let (_, out) = run(&[
        "bash",
        "-c",
        &format!(
            "test -e {} && echo VISIBLE; echo hi > /etc/sbx-written; rm /etc/debian_version; echo done",
            host_only.display()
        ),
    ]);
    assert!(!out.contains("VISIBLE"));
    assert!(out.contains("done"));
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/sbx-written")).unwrap(),
        "hi\n"
    );
    assert!(!root.join("etc/sbx-written").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/debian_version")).unwrap(),
        version_before
    );

    assert_eq!(sb.shutdown(Duration::from_secs(5)).unwrap(), Exit::Code(0));
}
