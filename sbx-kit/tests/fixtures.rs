//! Every folder under `tests/fixtures/valid` must validate; every folder under
//! `tests/fixtures/invalid` must fail with exactly the diagnostics in its snapshot.

use std::path::{Path, PathBuf};

use sbx_kit::{Error, Kit};

fn fixtures(kind: &str) -> Vec<(String, PathBuf)> {
    // Relative paths keep the file names in the snapshots independent of the checkout.
    let dir = Path::new("tests/fixtures").join(kind);
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                dir.join(e.file_name()),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn valid_fixtures_validate() {
    let valid = fixtures("valid");
    assert!(valid.len() >= 5, "{valid:?}");
    for (name, dir) in valid {
        let kit = Kit::from_dir(&dir).unwrap_or_else(|e| {
            let lines: Vec<String> = e.diagnostics().iter().map(ToString::to_string).collect();
            panic!("{name}: {e}\n{}", lines.join("\n"))
        });
        assert_eq!(
            kit.name(),
            name,
            "fixture folders are named after their kit"
        );
    }
}

#[test]
fn invalid_fixtures_fail_with_exact_messages() {
    let invalid = fixtures("invalid");
    assert!(invalid.len() >= 15, "{invalid:?}");
    for (name, dir) in invalid {
        let err = match Kit::from_dir(&dir) {
            Ok(kit) => panic!("{name} validated: {kit:?}"),
            Err(e) => e,
        };
        let Error::Invalid { diagnostics, .. } = &err else {
            panic!("{name}: not a validation error: {err}");
        };
        assert!(!diagnostics.is_empty(), "{name}");
        for d in diagnostics {
            assert!(d.line >= 1 && d.column >= 1, "{name}: {d}");
            assert!(d.file.ends_with("spec.yaml"), "{name}: {d}");
        }
        let mut report = format!("{err}\n");
        for d in diagnostics {
            report.push('\n');
            report.push_str(&d.render());
            report.push('\n');
        }
        insta::assert_snapshot!(name, report);
    }
}

/// The snapshots pin each fixture to the mistake it is about.
#[test]
fn each_invalid_fixture_is_about_a_different_mistake() {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (name, dir) in fixtures("invalid") {
        let err = Kit::from_dir(&dir).unwrap_err();
        let first = err.diagnostics()[0].message.clone();
        if let Some((other, _)) = seen.iter().find(|(_, m)| *m == first) {
            panic!("{name} and {other} report the same first message: {first}");
        }
        seen.push((name, first));
    }
}

#[test]
fn missing_folder_is_an_io_error() {
    let err = Kit::from_dir("tests/fixtures/does-not-exist").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

#[test]
fn a_spec_file_can_be_given_directly() {
    let kit = Kit::from_dir("tests/fixtures/valid/nothing-at-all/spec.yaml").unwrap();
    assert_eq!(kit.name(), "nothing-at-all");
}
