//! `sbx completion SHELL`: the scripts name every command, and bash parses its script.

use std::process::Command;

fn completion(shell: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sbx"))
        .args(["completion", shell])
        .env_remove("SBX_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completion_names_the_commands_and_parses() {
    let script = completion("bash");
    for word in [
        "login",
        "policy",
        "completion",
        "set-default",
        "allow",
        "deny",
        "--resource",
        "--blocked",
        "secret",
        "kit",
    ] {
        assert!(script.contains(word), "{word} missing");
    }
    assert!(
        script.contains("complete -F"),
        "not a bash completion script"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbx.bash");
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Sourcing it registers the completion function.
    let probe = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p sbx", path.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(probe.status.success() && text.contains("sbx"), "{probe:?}");
}

#[test]
fn zsh_and_fish_scripts() {
    let zsh = completion("zsh");
    assert!(
        zsh.starts_with("#compdef sbx"),
        "{}",
        &zsh[..40.min(zsh.len())]
    );
    assert!(zsh.contains("set-default"));
    let fish = completion("fish");
    assert!(fish.contains("complete -c sbx"));
    assert!(fish.contains("set-default"));
    for (shell, script) in [("zsh", &zsh), ("fish", &fish)] {
        // Syntax-check where the shell is installed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        std::fs::write(&path, script).unwrap();
        if let Ok(out) = Command::new(shell).arg("-n").arg(&path).output() {
            assert!(
                out.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sbx"))
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[possible values: bash, zsh, fish]"), "{err}");
}

#[test]
fn completion_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_sbx"))
        .args(["completion", "--help"])
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(out.status.success());
    insta::assert_snapshot!("completion_help", String::from_utf8(out.stdout).unwrap());
}
