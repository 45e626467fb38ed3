//! Merging an agent with mixins.

use sbx_kit::{merge, merge_mixins, template, Error, Kit, RuleAction, User};

fn mixin(name: &str, body: &str) -> Kit {
    let src = format!("schemaVersion: \"1\"\nkind: mixin\nname: {name}\n{body}");
    Kit::parse(&src, "spec.yaml").unwrap_or_else(|e| {
        let d: Vec<String> = e.diagnostics().iter().map(ToString::to_string).collect();
        panic!("{e}: {d:?}")
    })
}

fn copilot() -> Kit {
    template("copilot").unwrap()
}

#[test]
fn seed_example_binds_the_enterprise_host_to_github() {
    let fix = Kit::from_dir("tests/fixtures/valid/copilot-enterprise-fix").unwrap();
    let r = merge(&copilot(), &[fix]).unwrap();

    assert_eq!(r.agent.as_deref(), Some("copilot"));
    assert_eq!(r.command, ["copilot", "--yolo"]);
    let kits: Vec<String> = r.kits.iter().map(ToString::to_string).collect();
    assert_eq!(kits, ["template:copilot", "kit:copilot-enterprise-fix"]);

    let host = "api.enterprise.githubcopilot.com".parse().unwrap();
    let b = r.service_for(&host).expect("bound");
    assert_eq!(b.service, "github");
    assert_eq!(b.origin.to_string(), "kit:copilot-enterprise-fix");
    let allow: Vec<_> = r.rules.iter().filter(|x| x.domain == host).collect();
    assert_eq!(allow.len(), 1);
    assert_eq!(allow[0].action, RuleAction::Allow);
    assert_eq!(allow[0].origin.to_string(), "kit:copilot-enterprise-fix");

    // The template's own bindings and credential are untouched.
    let gh = r.service_for(&"api.github.com".parse().unwrap()).unwrap();
    assert_eq!(gh.origin.to_string(), "template:copilot");
    assert_eq!(r.credentials.len(), 1);
    assert_eq!(r.credentials[0].env, "GH_TOKEN");
    assert_eq!(r.credentials[0].origin.to_string(), "template:copilot");
}

#[test]
fn lists_append_and_dedupe_keeping_the_first_origin() {
    let m = mixin(
        "npm",
        "network:\n  allowedDomains: [registry.npmjs.org, registry.yarnpkg.com]\n",
    );
    let r = merge(&copilot(), &[m]).unwrap();
    let npm: Vec<_> = r
        .rules
        .iter()
        .filter(|x| x.domain.to_string() == "registry.npmjs.org")
        .collect();
    assert_eq!(npm.len(), 1);
    assert_eq!(npm[0].origin.to_string(), "template:copilot");
    let yarn = r
        .rules
        .iter()
        .find(|x| x.domain.to_string() == "registry.yarnpkg.com")
        .unwrap();
    assert_eq!(yarn.origin.to_string(), "kit:npm");
    // Order: the template's rules first, then the mixin's.
    let last = r.rules.last().unwrap();
    assert_eq!(last.domain.to_string(), "registry.yarnpkg.com");
}

#[test]
fn deny_from_a_mixin_is_kept_next_to_the_template_allow() {
    let m = mixin(
        "no-npm",
        "network:\n  deniedDomains: [registry.npmjs.org]\n",
    );
    let r = merge(&copilot(), &[m]).unwrap();
    let actions: Vec<_> = r
        .rules
        .iter()
        .filter(|x| x.domain.to_string() == "registry.npmjs.org")
        .map(|x| (x.action, x.origin.to_string()))
        .collect();
    assert_eq!(
        actions,
        [
            (RuleAction::Allow, "template:copilot".to_owned()),
            (RuleAction::Deny, "kit:no-npm".to_owned())
        ]
    );
}

#[test]
fn maps_merge_and_the_later_kit_wins() {
    let a = mixin(
        "a",
        "environment:\n  variables: {EDITOR: vi, PAGER: less}\n",
    );
    let b = mixin("b", "environment:\n  variables: {EDITOR: nano}\n");
    let r = merge(&copilot(), &[a, b]).unwrap();
    let get = |n: &str| r.environment.iter().find(|v| v.name == n).unwrap();
    assert_eq!(get("EDITOR").value, "nano");
    assert_eq!(get("EDITOR").origin.to_string(), "kit:b");
    assert_eq!(get("PAGER").origin.to_string(), "kit:a");
    assert_eq!(
        get("NPM_CONFIG_UPDATE_NOTIFIER").origin.to_string(),
        "template:copilot"
    );
}

#[test]
fn a_later_credential_declaration_replaces_the_variable() {
    let m = mixin("gh-env", "credentials:\n  github: {env: GITHUB_TOKEN}\n");
    let r = merge(&copilot(), &[m]).unwrap();
    assert_eq!(r.credentials.len(), 1);
    assert_eq!(r.credentials[0].env, "GITHUB_TOKEN");
    assert_eq!(r.credentials[0].origin.to_string(), "kit:gh-env");
}

#[test]
fn commands_append_and_dedupe_files_replace_by_path() {
    let a = mixin(
        "a",
        "commands:\n  install: [{command: make, user: root}]\n  startup: [{command: [sh, -c, x], background: true}]\nfiles:\n  - {path: /etc/x, content: one}\n",
    );
    let b = mixin(
        "b",
        "commands:\n  install: [{command: make, user: root}, {command: make test}]\nfiles:\n  - {path: /etc/x, content: two, mode: \"0600\"}\n",
    );
    let r = merge(&template("shell").unwrap(), &[a, b]).unwrap();
    let install: Vec<_> = r
        .install
        .iter()
        .map(|c| {
            (
                c.spec.command.to_string(),
                c.spec.user,
                c.origin.to_string(),
            )
        })
        .collect();
    assert_eq!(
        install,
        [
            ("make".to_owned(), User::Root, "kit:a".to_owned()),
            ("make test".to_owned(), User::Agent, "kit:b".to_owned())
        ]
    );
    assert_eq!(r.startup.len(), 1);
    assert!(r.startup[0].spec.background);
    assert_eq!(r.startup[0].spec.command.argv(), ["sh", "-c", "x"]);
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].spec.content, "two");
    assert_eq!(r.files[0].spec.mode_bits(), 0o600);
    assert_eq!(r.files[0].origin.to_string(), "kit:b");
}

#[test]
fn a_mixin_cannot_be_the_base_and_an_agent_cannot_be_a_mixin() {
    let m = mixin("m", "");
    let err = merge(&m, &[]).unwrap_err();
    assert!(matches!(err, Error::WrongKind { .. }));
    assert_eq!(
        err.to_string(),
        "kit:m is a kit of kind mixin; the first kit must be an agent"
    );

    let err = merge(&copilot(), &[template("claude").unwrap()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "template:claude is a kit of kind agent; only mixins can be added to an agent"
    );
    assert!(merge_mixins(&[copilot()]).is_err());
}

#[test]
fn a_mixin_cannot_even_say_agent() {
    let err = Kit::parse(
        "schemaVersion: \"1\"\nkind: mixin\nname: m\nagent:\n  command: [sh]\n",
        "spec.yaml",
    )
    .unwrap_err();
    assert_eq!(err.diagnostics()[0].path, "agent");
}

#[test]
fn rebinding_a_service_domain_is_a_conflict() {
    let m = mixin(
        "evil",
        "network:\n  serviceDomains:\n    api.github.com: other\n",
    );
    let err = merge(&copilot(), &[m]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "template:copilot and kit:evil conflict: `api.github.com` is bound to service `github` and to `other`"
    );
}

#[test]
fn bypassing_a_service_domain_is_a_conflict_in_either_order() {
    let bypass = mixin("bypass", "network:\n  bypassDomains: [api.github.com]\n");
    let err = merge(&copilot(), &[bypass]).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("template:copilot and kit:bypass conflict"),
        "{err}"
    );

    let first = mixin("first", "network:\n  bypassDomains: [x.example.com]\n");
    let second = mixin(
        "second",
        "network:\n  serviceDomains: {x.example.com: example}\n",
    );
    let err = merge(&template("shell").unwrap(), &[first, second]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("kit:first and kit:second conflict"),
        "{err}"
    );
}

#[test]
fn a_sentinel_variable_cannot_be_shared_or_overwritten() {
    let shared = mixin("shared", "credentials:\n  gitlab: {env: GH_TOKEN}\n");
    let err = merge(&copilot(), &[shared]).unwrap_err();
    assert!(
        err.to_string()
            .contains("`GH_TOKEN` holds the sentinel for both `github` and `gitlab`"),
        "{err}"
    );

    let plain = mixin("plain", "environment:\n  variables: {GH_TOKEN: oops}\n");
    let err = merge(&copilot(), &[plain]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "template:copilot and kit:plain conflict: `GH_TOKEN` holds the sentinel for `github` and is also set as a plain variable"
    );
}

#[test]
fn mixins_alone_show_what_they_add() {
    let fix = Kit::from_dir("tests/fixtures/valid/copilot-enterprise-fix").unwrap();
    let py = Kit::from_dir("tests/fixtures/valid/python-dev").unwrap();
    let r = merge_mixins(&[fix, py]).unwrap();
    assert_eq!(r.agent, None);
    assert!(r.command.is_empty());
    assert_eq!(r.services.len(), 1);
    let pip = r
        .environment
        .iter()
        .find(|v| v.name == "PIP_DISABLE_PIP_VERSION_CHECK")
        .unwrap();
    assert_eq!(pip.value, "1");
    let uv = r
        .environment
        .iter()
        .find(|v| v.name == "UV_NO_PROGRESS")
        .unwrap();
    assert_eq!(uv.value, "true");
    let conf = r
        .files
        .iter()
        .find(|f| f.spec.path.ends_with("pip.conf"))
        .unwrap();
    assert_eq!(conf.spec.mode, "0644");
    let hello = r
        .files
        .iter()
        .find(|f| f.spec.path.ends_with("hello"))
        .unwrap();
    assert_eq!(hello.spec.mode, "0755");
}

#[test]
fn anchors_and_merge_keys_expand() {
    let k = Kit::from_dir("tests/fixtures/valid/anchors").unwrap();
    let c = &k.spec().commands;
    assert_eq!(c.install.len(), 2);
    assert_eq!(c.install[1].command.to_string(), "apt-get install -y make");
    assert_eq!(c.install[1].user, User::Root);
    assert_eq!(c.startup[0], c.install[0]);
}

#[test]
fn resolved_kits_serialize_with_origins_as_strings() {
    let fix = Kit::from_dir("tests/fixtures/valid/copilot-enterprise-fix").unwrap();
    let r = merge(&copilot(), &[fix]).unwrap();
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v["kits"],
        serde_json::json!(["template:copilot", "kit:copilot-enterprise-fix"])
    );
    assert_eq!(v["command"], serde_json::json!(["copilot", "--yolo"]));
    let svc = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["domain"] == "api.enterprise.githubcopilot.com")
        .unwrap();
    assert_eq!(svc["service"], "github");
    assert_eq!(svc["origin"], "kit:copilot-enterprise-fix");
    assert_eq!(v["install"][0]["user"], "root");
}
