//! `sbx image` without building anything (the builds are tested in sbx-image).

use std::process::Command;

fn sbx(home: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sbx"));
    c.env("SBX_HOME", home);
    c
}

#[test]
fn ls_on_an_empty_data_dir() {
    let home = format!("/tmp/sbx-cli-image-ls-{}", std::process::id());
    let out = sbx(&home).args(["image", "ls"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        format!("no images in {home}/images (run `sbx image build`)\n")
    );
    let out = sbx(&home).args(["image", "ls", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "[]\n");
}

#[test]
fn build_with_a_missing_agent_fails_before_building() {
    let home = format!("/tmp/sbx-cli-image-build-{}", std::process::id());
    let out = sbx(&home)
        .args(["image", "build", "--agent", "/nonexistent/sbx-guest"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err, "sbx: guest agent not found: /nonexistent/sbx-guest\n");
    assert!(!std::path::Path::new(&home).join("images").exists());
}

#[test]
fn build_rejects_an_unknown_image_kind() {
    let out = sbx("/tmp/sbx-cli-image-x")
        .args(["image", "build", "--only", "docker"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("possible values: rootfs, kernel"), "{err}");
}
