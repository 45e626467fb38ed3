//! Policies: presets, scoped rules and decisions.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::address::classify;
use super::host::Host;
use super::resource::Resource;
use crate::error::{Error, Result};

/// The default stance of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Everything public is allowed unless denied.
    AllowAll,
    /// Deny by default plus [`BALANCED_ALLOWLIST`].
    #[default]
    Balanced,
    /// Nothing is allowed unless a rule allows it.
    DenyAll,
}

impl Preset {
    /// The preset's name as used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::AllowAll => "allow-all",
            Preset::Balanced => "balanced",
            Preset::DenyAll => "deny-all",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Preset> {
        match s {
            "allow-all" => Ok(Preset::AllowAll),
            "balanced" => Ok(Preset::Balanced),
            "deny-all" => Ok(Preset::DenyAll),
            other => Err(Error::UnknownPreset(other.chars().take(40).collect())),
        }
    }
}

/// The `balanced` preset's allowlist: AI APIs, package registries and code hosts, HTTPS only
/// (plus plain HTTP for Debian's mirrors, whose packages are signed).
pub const BALANCED_ALLOWLIST: &[&str] = &[
    // AI APIs.
    "api.openai.com:443",
    "api.anthropic.com:443",
    "statsig.anthropic.com:443",
    "generativelanguage.googleapis.com:443",
    "api.githubcopilot.com:443",
    "*.githubcopilot.com:443",
    "copilot-proxy.githubusercontent.com:443",
    "api.mistral.ai:443",
    "api.groq.com:443",
    "openrouter.ai:443",
    // Package registries.
    "registry.npmjs.org:443",
    "registry.yarnpkg.com:443",
    "pypi.org:443",
    "files.pythonhosted.org:443",
    "crates.io:443",
    "index.crates.io:443",
    "static.crates.io:443",
    "proxy.golang.org:443",
    "sum.golang.org:443",
    "rubygems.org:443",
    "repo.maven.apache.org:443",
    "repo1.maven.org:443",
    "deb.debian.org:443",
    "deb.debian.org:80",
    "security.debian.org:443",
    "security.debian.org:80",
    // Code hosts.
    "github.com:443",
    "api.github.com:443",
    "codeload.github.com:443",
    "*.githubusercontent.com:443",
    "gitlab.com:443",
    "bitbucket.org:443",
];

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Allow, with TLS interception and credential injection (`forward`).
    Allow,
    /// Deny. Deny beats every allow, regardless of specificity.
    Deny,
    /// Allow as an uninspected tunnel (`forward-bypass`): no interception, no injection.
    Bypass,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Bypass => "bypass",
        }
    }
}

/// One rule: an action on a resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// What happens on a match.
    pub action: Action,
    /// What the rule matches.
    pub resource: Resource,
}

impl Rule {
    /// A rule from an action and a resource string (parsed and validated now).
    pub fn new(action: Action, resource: &str) -> Result<Rule> {
        Ok(Rule {
            action,
            resource: Resource::parse(resource)?,
        })
    }
}

/// Where a rule applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every sandbox.
    Global,
    /// One sandbox, by name.
    Sandbox(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Sandbox(s) => write!(f, "sandbox/{s}"),
        }
    }
}

/// Why a request or connection was allowed or blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Reason {
    /// An allow or bypass rule matched the destination.
    DomainAllowed,
    /// A deny rule matched the destination.
    DomainBlocked,
    /// The `allow-all` preset allowed it.
    DefaultAllow,
    /// No rule matched and the preset denies by default.
    DefaultDeny,
    /// The destination resolved to (or is) a non-public address no rule names.
    PrivateAddress,
    /// The destination address would reach the proxy itself.
    ProxyLoop,
    /// SNI, `Host` or `:authority` disagreed with the CONNECT or URI destination.
    IdentityMismatch,
    /// A credential sentinel was sent to a host the credential is not bound to.
    CredentialExfiltration,
    /// The upstream's TLS certificate failed verification.
    UpstreamTls,
    /// The client's TLS handshake with the proxy failed (often a client that pins
    /// certificates or does not trust the sandbox CA: consider a `bypass` rule).
    ClientTls,
    /// The credential provider had no value for a credential the request needed.
    CredentialUnavailable,
    /// The upstream could not be resolved or reached.
    UpstreamUnreachable,
    /// The request was malformed or ambiguous (smuggling shapes, origin-form, bad URI).
    BadRequest,
    /// A limit (connections, header size, timeout) was hit.
    LimitExceeded,
    /// A transparently intercepted connection carried no server name (no TLS SNI, no `Host`).
    NoServerName,
    /// The server name of a transparently intercepted connection is not a name the sandbox
    /// resolved to this address through the gateway DNS.
    DnsMismatch,
    /// The protocol is not forwarded at all (UDP other than gateway DNS, ICMP, IPv6, ...).
    ProtocolNotAllowed,
}

impl Reason {
    /// The kebab-case name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DomainAllowed => "domain-allowed",
            Reason::DomainBlocked => "domain-blocked",
            Reason::DefaultAllow => "default-allow",
            Reason::DefaultDeny => "default-deny",
            Reason::PrivateAddress => "private-address",
            Reason::ProxyLoop => "proxy-loop",
            Reason::IdentityMismatch => "identity-mismatch",
            Reason::CredentialExfiltration => "credential-exfiltration",
            Reason::UpstreamTls => "upstream-tls",
            Reason::CredentialUnavailable => "credential-unavailable",
            Reason::ClientTls => "client-tls",
            Reason::UpstreamUnreachable => "upstream-unreachable",
            Reason::BadRequest => "bad-request",
            Reason::LimitExceeded => "limit-exceeded",
            Reason::NoServerName => "no-server-name",
            Reason::DnsMismatch => "dns-mismatch",
            Reason::ProtocolNotAllowed => "protocol-not-allowed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Allowed or blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The destination may be reached.
    Allow,
    /// The destination is refused.
    Deny,
}

/// A policy decision with the rule that produced it and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// When allowed: tunnel without inspection (`forward-bypass`).
    pub bypass: bool,
    /// The matching rule, as `scope:action resource` (e.g. `global:allow *.github.com`,
    /// `preset/balanced:allow pypi.org:443`), or `None` for a preset default.
    pub rule: Option<String>,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// True when allowed.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    pub(crate) fn deny(reason: Reason, rule: Option<String>) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            bypass: false,
            rule,
            reason,
        }
    }
}

/// A network policy: a preset plus global and per-sandbox rules.
///
/// Deny beats allow regardless of specificity; `bypass` is an allow that also turns off
/// interception. Rules are validated when added, and deserialisation re-validates every
/// resource, so a `Policy` value is always well-formed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    preset: Preset,
    #[serde(default)]
    global: Vec<Rule>,
    #[serde(default)]
    sandboxes: BTreeMap<String, Vec<Rule>>,
}

struct Matched<'a> {
    scope: String,
    rule: &'a Rule,
}

impl Policy {
    /// An empty policy with a preset.
    pub fn new(preset: Preset) -> Policy {
        Policy {
            preset,
            global: Vec::new(),
            sandboxes: BTreeMap::new(),
        }
    }

    /// Reads a policy from JSON, validating every rule.
    pub fn from_json(json: &str) -> Result<Policy> {
        let p: Policy = serde_json::from_str(json).map_err(Error::InvalidPolicy)?;
        for name in p.sandboxes.keys() {
            validate_sandbox_name(name)?;
        }
        Ok(p)
    }

    /// Writes the policy as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The preset.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// Changes the preset.
    pub fn set_preset(&mut self, preset: Preset) {
        self.preset = preset;
    }

    /// Adds a rule to a scope (duplicates are ignored).
    pub fn add(&mut self, scope: &Scope, rule: Rule) -> Result<()> {
        let list = match scope {
            Scope::Global => &mut self.global,
            Scope::Sandbox(name) => {
                validate_sandbox_name(name)?;
                self.sandboxes.entry(name.clone()).or_default()
            }
        };
        if !list.contains(&rule) {
            list.push(rule);
        }
        Ok(())
    }

    /// Adds an `allow` rule; the resource is parsed now.
    pub fn allow(&mut self, scope: &Scope, resource: &str) -> Result<()> {
        self.add(scope, Rule::new(Action::Allow, resource)?)
    }

    /// Adds a `deny` rule; the resource is parsed now.
    pub fn deny(&mut self, scope: &Scope, resource: &str) -> Result<()> {
        self.add(scope, Rule::new(Action::Deny, resource)?)
    }

    /// Adds a `bypass` (`forward-bypass`) rule; the resource is parsed now.
    pub fn bypass(&mut self, scope: &Scope, resource: &str) -> Result<()> {
        self.add(scope, Rule::new(Action::Bypass, resource)?)
    }

    /// Removes every rule with this resource from a scope; returns how many were removed.
    pub fn remove(&mut self, scope: &Scope, resource: &Resource) -> usize {
        let list = match scope {
            Scope::Global => Some(&mut self.global),
            Scope::Sandbox(name) => self.sandboxes.get_mut(name),
        };
        let Some(list) = list else { return 0 };
        let before = list.len();
        list.retain(|r| &r.resource != resource);
        before - list.len()
    }

    /// Every rule with its scope, global first.
    pub fn rules(&self) -> impl Iterator<Item = (Scope, &Rule)> {
        self.global.iter().map(|r| (Scope::Global, r)).chain(
            self.sandboxes
                .iter()
                .flat_map(|(s, rules)| rules.iter().map(move |r| (Scope::Sandbox(s.clone()), r))),
        )
    }

    fn matching<'a>(
        &'a self,
        sandbox: &str,
        preset_rules: &'a [Rule],
        pred: impl Fn(&Rule) -> bool,
    ) -> Vec<Matched<'a>> {
        let mut out = Vec::new();
        for rule in &self.global {
            if pred(rule) {
                out.push(Matched {
                    scope: "global".into(),
                    rule,
                });
            }
        }
        if let Some(rules) = self.sandboxes.get(sandbox) {
            for rule in rules {
                if pred(rule) {
                    out.push(Matched {
                        scope: format!("sandbox/{sandbox}"),
                        rule,
                    });
                }
            }
        }
        for rule in preset_rules {
            if pred(rule) {
                out.push(Matched {
                    scope: format!("preset/{}", self.preset),
                    rule,
                });
            }
        }
        out
    }

    /// Decides whether `sandbox` may reach `host:port` by name (or IP literal).
    ///
    /// This is the name-level decision. The proxy then resolves the name and calls
    /// [`Policy::check_address`] on every address it would connect to.
    pub fn evaluate(&self, sandbox: &str, host: &Host, port: u16) -> Decision {
        let preset_rules = preset_rules(self.preset);
        let matched = self.matching(sandbox, preset_rules, |r| r.resource.matches(host, port));
        if let Some(m) = matched.iter().find(|m| m.rule.action == Action::Deny) {
            return Decision::deny(Reason::DomainBlocked, Some(describe(m)));
        }
        // Bypass is the more specific intent ("this client pins certificates"), so it wins
        // over a plain allow of the same destination.
        let allow = matched
            .iter()
            .find(|m| m.rule.action == Action::Bypass)
            .or_else(|| matched.iter().find(|m| m.rule.action == Action::Allow));
        if let Some(m) = allow {
            return Decision {
                verdict: Verdict::Allow,
                bypass: m.rule.action == Action::Bypass,
                rule: Some(describe(m)),
                reason: Reason::DomainAllowed,
            };
        }
        match self.preset {
            Preset::AllowAll => Decision {
                verdict: Verdict::Allow,
                bypass: false,
                rule: None,
                reason: Reason::DefaultAllow,
            },
            Preset::Balanced | Preset::DenyAll => Decision::deny(Reason::DefaultDeny, None),
        }
    }

    /// Decides whether `sandbox` may look `host` up at all (the gateway DNS asks this before
    /// resolving): allowed when some allow or bypass rule (or the `allow-all` preset) could
    /// allow the host on some port. Deny still wins: a deny rule without a port that matches
    /// the host denies the name even under `**` or `allow-all`; a deny rule with a port only
    /// cancels allow rules for that same port.
    pub fn allows_host_on_any_port(&self, sandbox: &str, host: &Host) -> Decision {
        let preset_rules = preset_rules(self.preset);
        let matched = self.matching(sandbox, preset_rules, |r| r.resource.matches_host(host));
        let is_deny = |m: &&Matched<'_>| m.rule.action == Action::Deny;
        if let Some(m) = matched
            .iter()
            .filter(is_deny)
            .find(|m| m.rule.resource.port().is_none())
        {
            return Decision::deny(Reason::DomainBlocked, Some(describe(m)));
        }
        let port_denied = |port: u16| {
            matched
                .iter()
                .filter(is_deny)
                .any(|m| m.rule.resource.port() == Some(port))
        };
        let allow = matched
            .iter()
            .filter(|m| !is_deny(m))
            .find(|m| match m.rule.resource.port() {
                Some(port) => !port_denied(port),
                None => true,
            });
        if let Some(m) = allow {
            return Decision {
                verdict: Verdict::Allow,
                bypass: m.rule.action == Action::Bypass,
                rule: Some(describe(m)),
                reason: Reason::DomainAllowed,
            };
        }
        match self.preset {
            Preset::AllowAll => Decision {
                verdict: Verdict::Allow,
                bypass: false,
                rule: None,
                reason: Reason::DefaultAllow,
            },
            Preset::Balanced | Preset::DenyAll => Decision::deny(Reason::DefaultDeny, None),
        }
    }

    /// Checks one resolved (or literal) address for `sandbox`.
    ///
    /// Returns a denial when a deny rule names the address, or when the address is not public
    /// and no allow/bypass rule names that IP or a range containing it. Returns `None` when the
    /// address may be used.
    pub fn check_address(&self, sandbox: &str, ip: IpAddr, port: u16) -> Option<Decision> {
        let matched = self.matching(sandbox, &[], |r| r.resource.names_address(ip, port));
        if let Some(m) = matched.iter().find(|m| m.rule.action == Action::Deny) {
            return Some(Decision::deny(Reason::DomainBlocked, Some(describe(m))));
        }
        if classify(ip).is_public() {
            return None;
        }
        if matched.iter().any(|m| m.rule.action != Action::Deny) {
            return None;
        }
        Some(Decision::deny(Reason::PrivateAddress, None))
    }
}

fn describe(m: &Matched<'_>) -> String {
    format!("{}:{} {}", m.scope, m.rule.action.as_str(), m.rule.resource)
}

fn preset_rules(preset: Preset) -> &'static [Rule] {
    static BALANCED: OnceLock<Vec<Rule>> = OnceLock::new();
    match preset {
        Preset::Balanced => BALANCED.get_or_init(|| {
            BALANCED_ALLOWLIST
                .iter()
                .filter_map(|r| Rule::new(Action::Allow, r).ok())
                .collect()
        }),
        Preset::AllowAll | Preset::DenyAll => &[],
    }
}

/// Sandbox names: letters, digits, `-`, `.`, `+`, `_`; 1 to 128 characters.
fn validate_sandbox_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.+_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSandboxName(name.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Host {
        Host::parse(s).unwrap()
    }
    fn sb(s: &str) -> Scope {
        Scope::Sandbox(s.into())
    }

    #[test]
    fn balanced_allowlist_parses() {
        assert_eq!(
            preset_rules(Preset::Balanced).len(),
            BALANCED_ALLOWLIST.len()
        );
    }

    #[test]
    fn presets() {
        let all = Policy::new(Preset::AllowAll);
        let d = all.evaluate("s", &h("example.com"), 443);
        assert!(d.is_allowed());
        assert_eq!(d.reason, Reason::DefaultAllow);
        let none = Policy::new(Preset::DenyAll);
        let d = none.evaluate("s", &h("api.openai.com"), 443);
        assert!(!d.is_allowed());
        assert_eq!(d.reason, Reason::DefaultDeny);
        let bal = Policy::new(Preset::Balanced);
        let d = bal.evaluate("s", &h("api.openai.com"), 443);
        assert!(d.is_allowed());
        assert_eq!(
            d.rule.as_deref(),
            Some("preset/balanced:allow api.openai.com:443")
        );
        assert!(!bal.evaluate("s", &h("api.openai.com"), 80).is_allowed());
        assert!(bal
            .evaluate("s", &h("raw.githubusercontent.com"), 443)
            .is_allowed());
        assert!(!bal.evaluate("s", &h("example.com"), 443).is_allowed());
    }

    #[test]
    fn deny_beats_allow_regardless_of_specificity() {
        let mut p = Policy::new(Preset::DenyAll);
        p.allow(&Scope::Global, "api.example.com:443").unwrap();
        p.deny(&Scope::Global, "*.example.com").unwrap();
        let d = p.evaluate("s", &h("api.example.com"), 443);
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.reason, Reason::DomainBlocked);
        assert_eq!(d.rule.as_deref(), Some("global:deny *.example.com"));
        // A global deny also beats a sandbox allow, and a preset allow.
        let mut p = Policy::new(Preset::Balanced);
        p.deny(&Scope::Global, "pypi.org").unwrap();
        p.allow(&sb("a"), "pypi.org").unwrap();
        assert!(!p.evaluate("a", &h("pypi.org"), 443).is_allowed());
    }

    #[test]
    fn sandbox_rules_apply_only_to_their_sandbox() {
        let mut p = Policy::new(Preset::DenyAll);
        p.allow(&sb("one"), "example.com").unwrap();
        assert!(p.evaluate("one", &h("example.com"), 443).is_allowed());
        assert!(!p.evaluate("two", &h("example.com"), 443).is_allowed());
        assert_eq!(
            p.evaluate("one", &h("example.com"), 443).rule.as_deref(),
            Some("sandbox/one:allow example.com")
        );
        assert!(p.allow(&sb("bad name"), "example.com").is_err());
    }

    #[test]
    fn bypass_rules_mark_the_decision() {
        let mut p = Policy::new(Preset::DenyAll);
        p.allow(&Scope::Global, "**").unwrap();
        p.bypass(&Scope::Global, "pinned.example.com").unwrap();
        let d = p.evaluate("s", &h("pinned.example.com"), 443);
        assert!(d.is_allowed() && d.bypass);
        assert!(!p.evaluate("s", &h("other.example.com"), 443).bypass);
    }

    #[test]
    fn private_addresses_need_a_rule_naming_them() {
        let mut p = Policy::new(Preset::AllowAll);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let d = p.check_address("s", lo, 80).unwrap();
        assert_eq!(d.reason, Reason::PrivateAddress);
        p.allow(&Scope::Global, "**").unwrap();
        assert!(
            p.check_address("s", lo, 80).is_some(),
            "** does not name an address"
        );
        p.allow(&Scope::Global, "127.0.0.0/8:80").unwrap();
        assert!(p.check_address("s", lo, 80).is_none());
        assert!(p.check_address("s", lo, 81).is_some());
        assert!(p
            .check_address("s", "93.184.216.34".parse().unwrap(), 80)
            .is_none());
        p.deny(&Scope::Global, "93.184.216.0/24").unwrap();
        assert_eq!(
            p.check_address("s", "93.184.216.34".parse().unwrap(), 80)
                .unwrap()
                .reason,
            Reason::DomainBlocked
        );
    }

    #[test]
    fn ip_literal_destinations_match_ip_rules_only() {
        let mut p = Policy::new(Preset::DenyAll);
        p.allow(&Scope::Global, "example.com").unwrap();
        assert!(!p.evaluate("s", &h("93.184.216.34"), 443).is_allowed());
        p.allow(&Scope::Global, "93.184.216.34:443").unwrap();
        assert!(p.evaluate("s", &h("93.184.216.34"), 443).is_allowed());
        assert!(p
            .evaluate("s", &h("[::ffff:93.184.216.34]"), 443)
            .is_allowed());
    }

    #[test]
    fn remove_and_list() {
        let mut p = Policy::new(Preset::DenyAll);
        p.allow(&Scope::Global, "a.com").unwrap();
        p.allow(&Scope::Global, "a.com").unwrap();
        p.deny(&sb("x"), "b.com").unwrap();
        assert_eq!(p.rules().count(), 2);
        assert_eq!(
            p.remove(&Scope::Global, &Resource::parse("A.com.").unwrap()),
            1
        );
        assert_eq!(p.rules().count(), 1);
    }

    #[test]
    fn json_round_trip_and_validation() {
        let mut p = Policy::new(Preset::Balanced);
        p.allow(&Scope::Global, "*.example.com:443").unwrap();
        p.bypass(&sb("s1"), "pinned.example").unwrap();
        let back = Policy::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
        let bad = r#"{"preset":"deny-all","global":[{"action":"allow","resource":"a.*.com"}]}"#;
        assert!(Policy::from_json(bad).is_err());
        let bad = r#"{"preset":"open"}"#;
        assert!(Policy::from_json(bad).is_err());
        let bad = r#"{"preset":"deny-all","sandboxes":{"a b":[]}}"#;
        assert!(Policy::from_json(bad).is_err());
    }

    #[test]
    fn host_on_any_port() {
        let mut p = Policy::new(Preset::DenyAll);
        assert_eq!(
            p.allows_host_on_any_port("s", &h("example.com")).reason,
            Reason::DefaultDeny
        );
        p.allow(&Scope::Global, "example.com:8443").unwrap();
        let d = p.allows_host_on_any_port("s", &h("example.com"));
        assert!(d.is_allowed());
        assert_eq!(d.rule.as_deref(), Some("global:allow example.com:8443"));
        assert!(!p
            .allows_host_on_any_port("s", &h("a.example.com"))
            .is_allowed());
        // A deny on the only allowed port leaves nothing to reach.
        p.deny(&Scope::Global, "example.com:8443").unwrap();
        assert!(!p
            .allows_host_on_any_port("s", &h("example.com"))
            .is_allowed());
        // A deny on another port does not deny the name.
        let mut p = Policy::new(Preset::DenyAll);
        p.allow(&Scope::Global, "*.example.com").unwrap();
        p.deny(&Scope::Global, "api.example.com:80").unwrap();
        assert!(p
            .allows_host_on_any_port("s", &h("api.example.com"))
            .is_allowed());
        // Deny without a port wins over `**` and over allow-all.
        let mut p = Policy::new(Preset::AllowAll);
        p.allow(&Scope::Global, "**").unwrap();
        p.deny(&sb("s"), "example.com").unwrap();
        let d = p.allows_host_on_any_port("s", &h("example.com"));
        assert_eq!(d.reason, Reason::DomainBlocked);
        assert_eq!(d.rule.as_deref(), Some("sandbox/s:deny example.com"));
        assert!(p
            .allows_host_on_any_port("other", &h("example.com"))
            .is_allowed());
        let p = Policy::new(Preset::AllowAll);
        assert_eq!(
            p.allows_host_on_any_port("s", &h("example.com")).reason,
            Reason::DefaultAllow
        );
        // Presets count: balanced allows its names (on 443 only) and nothing else.
        let p = Policy::new(Preset::Balanced);
        assert!(p.allows_host_on_any_port("s", &h("pypi.org")).is_allowed());
        assert!(!p
            .allows_host_on_any_port("s", &h("example.com"))
            .is_allowed());
    }

    #[test]
    fn preset_names_parse() {
        assert_eq!("deny-all".parse::<Preset>().unwrap(), Preset::DenyAll);
        assert!("open".parse::<Preset>().is_err());
    }
}
