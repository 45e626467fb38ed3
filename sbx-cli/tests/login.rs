//! `sbx login` as users run it: the flag, the interactive menu on a terminal, the refusal
//! without one, and what it stores.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn sbx(home: &Path, args: &[&str], stdin: &str) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sbx"))
        .args(args)
        .env("SBX_HOME", home)
        .env_remove("SBX_LOG")
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn config(home: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(home.join("config.json")).unwrap()).unwrap()
}

#[test]
fn login_with_a_flag_stores_the_choice() {
    let home = tempfile::tempdir().unwrap();
    let out = sbx(home.path(), &["login", "--policy", "locked-down"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr, "");
    insta::assert_snapshot!("login_locked_down", out.stdout);
    assert_eq!(config(home.path())["default_policy"], "locked-down");

    let out = sbx(home.path(), &["login", "--policy", "open"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(config(home.path())["default_policy"], "open");
    let out = sbx(home.path(), &["login", "--policy", "open"], "");
    assert!(
        out.stdout
            .starts_with("default network policy: open (unchanged)\n"),
        "{}",
        out.stdout
    );
    // Only the config file (and the policy lock) were written: no temp files left behind.
    let mut names: Vec<String> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "policy"]);
}

#[test]
fn login_replaces_a_set_default_override() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("policy")).unwrap();
    std::fs::write(
        home.path().join("policy/global.json"),
        r#"{"preset": "allow-all", "rules": [{"action": "deny", "resource": "x.example"}]}"#,
    )
    .unwrap();
    let out = sbx(home.path(), &["login", "--policy", "balanced"], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("(replaces the preset allow-all set with `sbx policy set-default`)"),
        "{}",
        out.stdout
    );
    let global: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join("policy/global.json")).unwrap(),
    )
    .unwrap();
    assert!(global.get("preset").is_none(), "{global}");
    assert_eq!(global["rules"][0]["resource"], "x.example");
}

#[test]
fn login_without_a_flag_needs_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let out = sbx(home.path(), &["login"], "2\n");
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    insta::assert_snapshot!("login_not_a_terminal", out.stderr);
    assert!(!home.path().join("config.json").exists());
}

#[test]
fn bad_policy_names_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    let out = sbx(home.path(), &["login", "--policy", "allow-all"], "");
    assert_eq!(out.code, 2);
    insta::assert_snapshot!("login_bad_policy", out.stderr);
}

#[test]
fn login_help() {
    let home = tempfile::tempdir().unwrap();
    let out = sbx(home.path(), &["login", "--help"], "");
    assert_eq!(out.code, 0);
    insta::assert_snapshot!("login_help", out.stdout);
}

/// Runs `sbx login` on a pseudo-terminal (util-linux `script`), typing `input`.
fn login_on_a_terminal(home: &Path, input: &str) -> Option<Out> {
    on_a_terminal(home, "login", input)
}

/// Runs `sbx ARGS` on a pseudo-terminal (util-linux `script`), typing `input`.
fn on_a_terminal(home: &Path, args: &str, input: &str) -> Option<Out> {
    let probe = Command::new("script").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED: util-linux `script` is not installed");
        }
        return None;
    }
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_sbx"));
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("SBX_HOME", home)
        .env_remove("SBX_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(input.as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    Some(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[test]
fn login_on_a_terminal_shows_a_menu() {
    let home = tempfile::tempdir().unwrap();
    let Some(out) = login_on_a_terminal(home.path(), "7\n3\n") else {
        return;
    };
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1) open"), "{}", out.stdout);
    assert!(
        out.stdout.contains("2) balanced (default)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Please answer 1, 2 or 3."),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("default network policy: locked-down"),
        "{}",
        out.stdout
    );
    assert_eq!(config(home.path())["default_policy"], "locked-down");

    // Enter alone takes the default.
    let home = tempfile::tempdir().unwrap();
    let out = login_on_a_terminal(home.path(), "\n").unwrap();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(config(home.path())["default_policy"], "balanced");
}

#[test]
fn other_commands_ask_on_first_use_on_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let Some(out) = on_a_terminal(home.path(), "policy ls", "1\n") else {
        return;
    };
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("Choose the default network policy"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("preset: allow-all (chosen at `sbx login`)"),
        "{}",
        out.stdout
    );
    assert_eq!(config(home.path())["default_policy"], "open");
}
