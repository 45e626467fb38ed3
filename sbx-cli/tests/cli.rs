//! The `sbx` binary as users run it.

use std::os::unix::process::CommandExt;
use std::process::Command;

fn sbx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sbx"))
}

#[test]
fn diagnose_reports_kvm_and_data_dir() {
    let out = sbx()
        .arg("diagnose")
        .env("SBX_HOME", "/tmp/sbx-cli-test-home")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("kvm:"), "{text}");
    assert!(
        text.contains("data dir:        /tmp/sbx-cli-test-home"),
        "{text}"
    );
}

#[test]
fn diagnose_json_is_machine_readable() {
    let out = sbx()
        .args(["diagnose", "--json"])
        .env("SBX_HOME", "/tmp/x\"y")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("{\"kvm\":{\"available\":"), "{text}");
    assert!(text.contains("\"data_dir\":\"/tmp/x\\\"y\""), "{text}");
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = sbx().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
}

#[test]
fn sbx_is_also_the_guest_agent_under_its_name() {
    // Invoked as `sbx-guest` (argv[0]), the binary is the agent: its own --help, not clap's.
    let out = Command::new(env!("CARGO_BIN_EXE_sbx"))
        .arg0("sbx-guest")
        .arg("--help")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("--listen-fd"), "{text}");
    assert!(!text.contains("Report what this host supports"), "{text}");
}
