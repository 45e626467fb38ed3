//! `sbx kit validate|inspect|schema` on the sbx-kit fixtures and the built-in templates.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `sbx` in the sbx-kit crate so fixture paths (and so the snapshots) are relative.
fn sbx(args: &[&str]) -> Output {
    let kit_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sbx-kit");
    Command::new(env!("CARGO_BIN_EXE_sbx"))
        .args(args)
        .current_dir(kit_dir)
        .env_remove("SBX_LOG")
        // Help text wraps at the terminal width; pin it for the snapshots.
        .env("COLUMNS", "100")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn validate_prints_a_one_line_summary() {
    let out = sbx(&[
        "kit",
        "validate",
        "tests/fixtures/valid/copilot-enterprise-fix",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "tests/fixtures/valid/copilot-enterprise-fix/spec.yaml: valid mixin `copilot-enterprise-fix` (1 service domain)\n"
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    let out = sbx(&[
        "kit",
        "validate",
        "tests/fixtures/valid/python-dev/spec.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!("validate_python_dev", text(&out.stdout));
}

#[test]
fn every_valid_fixture_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sbx-kit/tests/fixtures/valid");
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let out = sbx(&["kit", "validate", &format!("tests/fixtures/valid/{name}")]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).lines().count(), 1, "{name}");
    }
}

#[test]
fn validate_lists_every_error_and_exits_1() {
    let out = sbx(&["kit", "validate", "tests/fixtures/invalid/several-mistakes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    insta::assert_snapshot!("validate_several_mistakes", text(&out.stderr));
}

#[test]
fn every_invalid_fixture_fails_with_located_errors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sbx-kit/tests/fixtures/invalid");
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let path = format!("tests/fixtures/invalid/{name}");
        let out = sbx(&["kit", "validate", &path]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!("{path}/spec.yaml:")),
            "{name}: {err}"
        );
        let last = err.lines().last().unwrap();
        assert!(
            last.starts_with(&format!("sbx: invalid kit {path}/spec.yaml: ")),
            "{name}: {last}"
        );
    }
}

#[test]
fn validate_reports_a_missing_folder() {
    let out = sbx(&["kit", "validate", "tests/fixtures/nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "sbx: cannot read tests/fixtures/nope: No such file or directory (os error 2)\n"
    );
}

#[test]
fn inspect_applies_the_seed_mixin_to_copilot() {
    let out = sbx(&[
        "kit",
        "inspect",
        "--agent",
        "copilot",
        "tests/fixtures/valid/copilot-enterprise-fix",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("  api.enterprise.githubcopilot.com  github  kit:copilot-enterprise-fix\n"),
        "{stdout}"
    );
    insta::assert_snapshot!("inspect_copilot_enterprise", stdout);
}

#[test]
fn inspect_json_is_the_merged_kit() {
    let out = sbx(&[
        "kit",
        "inspect",
        "--json",
        "--agent",
        "copilot",
        "tests/fixtures/valid/copilot-enterprise-fix",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agent"], "copilot");
    assert_eq!(v["command"], serde_json::json!(["copilot", "--yolo"]));
    assert_eq!(
        v["kits"],
        serde_json::json!(["template:copilot", "kit:copilot-enterprise-fix"])
    );
    let services = v["services"].as_array().unwrap();
    let fix = services
        .iter()
        .find(|s| s["domain"] == "api.enterprise.githubcopilot.com")
        .unwrap();
    assert_eq!(fix["service"], "github");
    assert_eq!(fix["origin"], "kit:copilot-enterprise-fix");
    assert_eq!(v["credentials"][0]["env"], "GH_TOKEN");
}

#[test]
fn inspect_a_mixin_alone_and_an_agent_kit() {
    let out = sbx(&["kit", "inspect", "tests/fixtures/valid/python-dev"]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!("inspect_python_dev", text(&out.stdout));

    let out = sbx(&[
        "kit",
        "inspect",
        "--json",
        "tests/fixtures/valid/full-agent",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["command"], serde_json::json!(["my-agent", "--auto"]));
    assert_eq!(v["agentEnv"][0]["name"], "MY_AGENT_LOG");
    let bypass = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "bypass")
        .unwrap();
    assert_eq!(bypass["domain"], "pinned.example.com");
    assert_eq!(bypass["origin"], "kit:full-agent");
}

#[test]
fn inspect_built_in_templates() {
    for name in ["shell", "copilot", "claude", "codex", "gemini"] {
        let out = sbx(&["kit", "inspect", "--json", &format!("template:{name}")]);
        assert_eq!(out.status.code(), Some(0), "{name}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["agent"], name);
        assert_eq!(v["kits"], serde_json::json!([format!("template:{name}")]));
    }
}

#[test]
fn inspect_refuses_what_cannot_merge() {
    let out = sbx(&[
        "kit",
        "inspect",
        "--agent",
        "copilot",
        "tests/fixtures/valid/full-agent",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "sbx: kit:full-agent is an agent kit; --agent applies to mixins\n"
    );
    let out = sbx(&[
        "kit",
        "inspect",
        "--agent",
        "cursor",
        "tests/fixtures/valid/python-dev",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "sbx: no built-in agent template \"cursor\" (templates: shell, copilot, claude, codex, gemini)\n"
    );
    let out = sbx(&[
        "kit",
        "inspect",
        "tests/fixtures/invalid/unknown-field-typo",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(did you mean `allowedDomains`?)"));
}

#[test]
fn schema_prints_the_committed_schema() {
    let out = sbx(&["kit", "schema"]);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sbx-kit/spec.schema.json"),
    )
    .unwrap();
    assert_eq!(text(&out.stdout), committed);
}

#[test]
fn kit_help() {
    let out = sbx(&["kit", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!("kit_help", text(&out.stdout));
    let out = sbx(&["kit", "validate"]);
    assert_eq!(out.status.code(), Some(2));
}
