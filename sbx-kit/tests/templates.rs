//! The built-in agent templates.

use sbx_kit::{
    merge, template, template_source, templates, Error, Kind, Kit, RuleAction, TEMPLATE_NAMES,
};

fn bound(kit: &Kit, domain: &str) -> Option<String> {
    kit.spec()
        .network
        .service_domains
        .iter()
        .find(|(d, _)| d.to_string() == domain)
        .map(|(_, s)| s.clone())
}

#[test]
fn every_template_validates_and_is_an_agent() {
    let all = templates().unwrap();
    assert_eq!(all.len(), 5);
    for (kit, name) in all.iter().zip(TEMPLATE_NAMES) {
        assert_eq!(kit.name(), *name);
        assert_eq!(kit.kind(), Kind::Agent);
        assert_eq!(kit.origin().to_string(), format!("template:{name}"));
        let agent = kit.spec().agent.as_ref().expect("agent section");
        assert!(!agent.command.is_empty());
        assert!(template_source(name)
            .unwrap()
            .contains(&format!("name: {name}\n")));
        // Every service a template binds has a credential the sandbox sees as a sentinel.
        for (_, service) in &kit.spec().network.service_domains {
            assert!(
                kit.spec().credentials.contains_key(service),
                "{name}: {service}"
            );
        }
    }
}

#[test]
fn copilot_injects_github_on_github_and_copilot_api_hosts() {
    let k = template("copilot").unwrap();
    assert_eq!(
        k.spec().agent.as_ref().unwrap().command,
        ["copilot", "--yolo"]
    );
    for d in [
        "api.github.com",
        "github.com",
        "api.githubcopilot.com",
        "api.individual.githubcopilot.com",
    ] {
        assert_eq!(bound(&k, d).as_deref(), Some("github"), "{d}");
    }
    assert_eq!(k.spec().credentials["github"].env, "GH_TOKEN");
    // Other Copilot hosts are reachable; tenants get their token through a mixin.
    assert!(k
        .spec()
        .network
        .allowed_domains
        .iter()
        .any(|d| d.to_string() == "*.githubcopilot.com"));
    assert_eq!(bound(&k, "api.enterprise.githubcopilot.com"), None);
}

#[test]
fn each_agent_has_its_service() {
    for (name, domain, service, env) in [
        (
            "claude",
            "api.anthropic.com",
            "anthropic",
            "ANTHROPIC_API_KEY",
        ),
        ("codex", "api.openai.com", "openai", "OPENAI_API_KEY"),
        (
            "gemini",
            "generativelanguage.googleapis.com",
            "google",
            "GEMINI_API_KEY",
        ),
    ] {
        let k = template(name).unwrap();
        assert_eq!(bound(&k, domain).as_deref(), Some(service), "{name}");
        assert_eq!(k.spec().credentials[service].env, env, "{name}");
    }
}

#[test]
fn shell_has_no_services_and_no_rules() {
    let k = template("shell").unwrap();
    assert!(k.spec().network.is_empty());
    assert!(k.spec().credentials.is_empty());
    let r = merge(&k, &[]).unwrap();
    assert!(r.rules.is_empty() && r.services.is_empty());
    assert_eq!(r.command, ["bash", "--login"]);
}

#[test]
fn template_rules_carry_the_template_origin() {
    for name in TEMPLATE_NAMES {
        let r = merge(&template(name).unwrap(), &[]).unwrap();
        let origin = format!("template:{name}");
        assert!(
            r.rules.iter().all(|x| x.origin.to_string() == origin),
            "{name}"
        );
        assert!(
            r.services.iter().all(|x| x.origin.to_string() == origin),
            "{name}"
        );
        // Service domains are allowed, by the template that bound them.
        for b in &r.services {
            assert!(
                r.rules_with(RuleAction::Allow)
                    .any(|x| x.domain == b.domain),
                "{name}: {}",
                b.domain
            );
        }
    }
}

#[test]
fn unknown_template_names_the_real_ones() {
    let err = template("cursor").unwrap_err();
    assert!(matches!(err, Error::UnknownTemplate { .. }));
    assert_eq!(
        err.to_string(),
        "no built-in agent template \"cursor\" (templates: shell, copilot, claude, codex, gemini)"
    );
}

#[test]
fn every_valid_mixin_fixture_applies_to_every_template() {
    for name in TEMPLATE_NAMES {
        let base = template(name).unwrap();
        for fixture in [
            "copilot-enterprise-fix",
            "nothing-at-all",
            "python-dev",
            "anchors",
        ] {
            let mixin = Kit::from_dir(format!("tests/fixtures/valid/{fixture}")).unwrap();
            let r = merge(&base, &[mixin]).unwrap_or_else(|e| panic!("{name} + {fixture}: {e}"));
            assert_eq!(r.kits.len(), 2);
        }
    }
}

#[test]
fn a_spec_serializes_in_its_yaml_shape() {
    let v = serde_json::to_value(template("copilot").unwrap().spec()).unwrap();
    assert_eq!(v["schemaVersion"], "1");
    assert_eq!(v["kind"], "agent");
    assert_eq!(v["network"]["serviceDomains"]["api.github.com"], "github");
    assert_eq!(v["credentials"]["github"]["env"], "GH_TOKEN");
    assert_eq!(v["commands"]["install"][0]["user"], "root");
    // Order as written in the template (serde_json::Value would sort; the text does not).
    let text = serde_json::to_string(template("copilot").unwrap().spec()).unwrap();
    let at = |s: &str| text.find(s).unwrap();
    assert!(
        at("\"api.github.com\"") < at("\"api.business.githubcopilot.com\""),
        "{text}"
    );
}
