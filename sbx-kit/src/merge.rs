//! Merging an agent with mixins into what a sandbox will be, keeping the origin of every piece.
//!
//! Rules, applied kit by kit in order (the agent first):
//! - `agent.command` and `agent.env` come from the agent only; mixins cannot have `agent`.
//! - Domain lists append and dedupe: the first kit to name a rule keeps it (and its origin).
//! - A service domain is also an allow rule. Binding one domain to two different services, or
//!   bypassing a domain that has a service, is a conflict (an error naming both kits).
//! - Maps merge key by key and a later kit wins: variables, credentials (by service), files
//!   (by path). A variable may not be both a credential's sentinel variable and a plain one.
//! - Commands append and dedupe (identical command, user and background keep the first).

use std::collections::HashMap;

use serde::Serialize;

use crate::model::{CommandSpec, FileSpec, Kind, NetworkSpec};
use crate::{DomainPattern, Error, Kit, Origin, Result};

/// What a network rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RuleAction {
    /// Allowed, TLS inspected, credentials injected where bound.
    Allow,
    /// Never reachable. Deny beats allow.
    Deny,
    /// Allowed without inspection: no interception, no injection.
    Bypass,
}

impl RuleAction {
    /// `allow`, `deny` or `bypass`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
            RuleAction::Bypass => "bypass",
        }
    }
}

/// One network rule and the kit it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NetworkRule {
    /// What it does.
    pub action: RuleAction,
    /// What it matches.
    pub domain: DomainPattern,
    /// Who asked for it.
    pub origin: Origin,
}

/// A domain where a service's credential is injected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServiceBinding {
    /// The domain.
    pub domain: DomainPattern,
    /// The service (e.g. `github`).
    pub service: String,
    /// Who bound it.
    pub origin: Origin,
}

/// A service's credential as the sandbox sees it: a sentinel in `env`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Credential {
    /// The service.
    pub service: String,
    /// The variable holding the sentinel.
    pub env: String,
    /// Who declared it.
    pub origin: Origin,
}

/// An environment variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EnvVar {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Who set it (the last kit to set it).
    pub origin: Origin,
}

/// A command to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Command {
    /// The command.
    #[serde(flatten)]
    pub spec: CommandSpec,
    /// Who asked for it.
    pub origin: Origin,
}

/// A file to write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct File {
    /// The file.
    #[serde(flatten)]
    pub spec: FileSpec,
    /// Who wrote it (the last kit to name the path).
    pub origin: Origin,
}

/// An agent and its mixins merged: everything a sandbox needs from its kits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ResolvedKit {
    /// The agent's name; `None` when only mixins were merged.
    pub agent: Option<String>,
    /// The agent's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The kits applied, in order.
    pub kits: Vec<Origin>,
    /// What `sbx run` starts; empty when only mixins were merged.
    pub command: Vec<String>,
    /// Environment of the agent process.
    pub agent_env: Vec<EnvVar>,
    /// Environment of every process in the sandbox.
    pub environment: Vec<EnvVar>,
    /// Network rules, in the order the kits gave them.
    pub rules: Vec<NetworkRule>,
    /// Where credentials are injected.
    pub services: Vec<ServiceBinding>,
    /// Credentials the sandbox sees as sentinels.
    pub credentials: Vec<Credential>,
    /// Run once at create.
    pub install: Vec<Command>,
    /// Run at every start.
    pub startup: Vec<Command>,
    /// Written at create.
    pub files: Vec<File>,
}

/// Merges `base` (an agent kit, e.g. a built-in template) with `mixins`, in order.
pub fn merge(base: &Kit, mixins: &[Kit]) -> Result<ResolvedKit> {
    if base.kind() != Kind::Agent {
        return Err(Error::WrongKind {
            origin: base.origin().to_string(),
            found: base.kind().as_str(),
            expected: "the first kit must be an agent",
        });
    }
    let mut out = ResolvedKit::default();
    out.apply(base)?;
    for m in mixins {
        check_mixin(m)?;
        out.apply(m)?;
    }
    Ok(out)
}

fn check_mixin(kit: &Kit) -> Result<()> {
    if kit.kind() != Kind::Mixin {
        return Err(Error::WrongKind {
            origin: kit.origin().to_string(),
            found: kit.kind().as_str(),
            expected: "only mixins can be added to an agent",
        });
    }
    Ok(())
}

/// Merges mixins without an agent, to see what they add (the command stays empty).
pub fn merge_mixins(mixins: &[Kit]) -> Result<ResolvedKit> {
    let mut out = ResolvedKit::default();
    for m in mixins {
        check_mixin(m)?;
        out.apply(m)?;
    }
    Ok(out)
}

fn set_var(list: &mut Vec<EnvVar>, name: &str, value: &str, origin: &Origin) {
    let var = EnvVar {
        name: name.to_owned(),
        value: value.to_owned(),
        origin: origin.clone(),
    };
    match list.iter_mut().find(|v| v.name == name) {
        Some(existing) => {
            if existing.value != value {
                tracing::debug!(name, from = %existing.origin, to = %origin, "variable overridden");
            }
            *existing = var;
        }
        None => list.push(var),
    }
}

impl ResolvedKit {
    fn apply(&mut self, kit: &Kit) -> Result<()> {
        let spec = kit.spec();
        let origin = kit.origin();
        if kit.kind() == Kind::Agent {
            self.agent = Some(spec.name.clone());
            self.description = spec.description.clone();
            if let Some(agent) = &spec.agent {
                self.command = agent.command.clone();
                for (k, v) in &agent.env {
                    set_var(&mut self.agent_env, k, v, origin);
                }
            }
        }
        self.kits.push(origin.clone());

        for (k, v) in &spec.environment.variables {
            set_var(&mut self.environment, k, v, origin);
        }

        self.apply_network(&spec.network, origin)?;

        for (service, cred) in &spec.credentials {
            if let Some(other) = self
                .credentials
                .iter()
                .find(|c| c.env == cred.env && c.service != *service)
            {
                return Err(Error::Conflict {
                    first: other.origin.to_string(),
                    second: origin.to_string(),
                    what: format!(
                        "`{}` holds the sentinel for both `{}` and `{service}`",
                        cred.env, other.service
                    ),
                });
            }
            let c = Credential {
                service: service.clone(),
                env: cred.env.clone(),
                origin: origin.clone(),
            };
            match self.credentials.iter_mut().find(|c| c.service == *service) {
                Some(existing) => *existing = c,
                None => self.credentials.push(c),
            }
        }
        for c in &self.credentials {
            let plain = self
                .agent_env
                .iter()
                .chain(&self.environment)
                .find(|v| v.name == c.env);
            if let Some(v) = plain {
                return Err(Error::Conflict {
                    first: c.origin.to_string(),
                    second: v.origin.to_string(),
                    what: format!(
                        "`{}` holds the sentinel for `{}` and is also set as a plain variable",
                        c.env, c.service
                    ),
                });
            }
        }

        for (list, specs) in [
            (&mut self.install, &spec.commands.install),
            (&mut self.startup, &spec.commands.startup),
        ] {
            for s in specs {
                if !list.iter().any(|c| c.spec == *s) {
                    list.push(Command {
                        spec: s.clone(),
                        origin: origin.clone(),
                    });
                }
            }
        }

        for f in &spec.files {
            let file = File {
                spec: f.clone(),
                origin: origin.clone(),
            };
            match self.files.iter_mut().find(|x| x.spec.path == f.path) {
                Some(existing) => *existing = file,
                None => self.files.push(file),
            }
        }
        Ok(())
    }

    fn apply_network(&mut self, net: &NetworkSpec, origin: &Origin) -> Result<()> {
        // Indexes, so that large kits merge in linear time.
        let mut ix = NetIndex {
            rules: self
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| ((r.action, r.domain.clone()), i))
                .collect(),
            services: self
                .services
                .iter()
                .enumerate()
                .map(|(i, b)| (b.domain.clone(), i))
                .collect(),
        };
        for d in &net.allowed_domains {
            ix.add_rule(self, RuleAction::Allow, d, origin)?;
        }
        for (d, service) in &net.service_domains {
            match ix.services.get(d).map(|i| &self.services[*i]) {
                Some(b) if b.service != *service => {
                    return Err(Error::Conflict {
                        first: b.origin.to_string(),
                        second: origin.to_string(),
                        what: format!(
                            "`{d}` is bound to service `{}` and to `{service}`",
                            b.service
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    ix.services.insert(d.clone(), self.services.len());
                    self.services.push(ServiceBinding {
                        domain: d.clone(),
                        service: service.clone(),
                        origin: origin.clone(),
                    });
                }
            }
            ix.add_rule(self, RuleAction::Allow, d, origin)?;
        }
        for d in &net.denied_domains {
            ix.add_rule(self, RuleAction::Deny, d, origin)?;
        }
        for d in &net.bypass_domains {
            ix.add_rule(self, RuleAction::Bypass, d, origin)?;
        }
        Ok(())
    }

    /// The rules with one action, in order.
    pub fn rules_with(&self, action: RuleAction) -> impl Iterator<Item = &NetworkRule> {
        self.rules.iter().filter(move |r| r.action == action)
    }

    /// The service whose credential is injected at `domain`, if one is bound to exactly it.
    pub fn service_for(&self, domain: &DomainPattern) -> Option<&ServiceBinding> {
        self.services.iter().find(|b| b.domain == *domain)
    }
}

/// Where rules and service bindings are in a [`ResolvedKit`], by domain.
struct NetIndex {
    rules: HashMap<(RuleAction, DomainPattern), usize>,
    services: HashMap<DomainPattern, usize>,
}

impl NetIndex {
    fn add_rule(
        &mut self,
        out: &mut ResolvedKit,
        action: RuleAction,
        d: &DomainPattern,
        origin: &Origin,
    ) -> Result<()> {
        let bound = self.services.get(d).map(|i| &out.services[*i].origin);
        let bypassed = self
            .rules
            .get(&(RuleAction::Bypass, d.clone()))
            .map(|i| &out.rules[*i].origin);
        let conflict = match action {
            RuleAction::Bypass => bound,
            RuleAction::Allow if bound.is_some() => bypassed,
            _ => None,
        };
        if let Some(first) = conflict {
            return Err(Error::Conflict {
                first: first.to_string(),
                second: origin.to_string(),
                what: format!(
                    "`{d}` has a service credential and is bypassed; bypassed traffic is never inspected, so the credential could not be injected"
                ),
            });
        }
        if let std::collections::hash_map::Entry::Vacant(slot) =
            self.rules.entry((action, d.clone()))
        {
            slot.insert(out.rules.len());
            out.rules.push(NetworkRule {
                action,
                domain: d.clone(),
                origin: origin.clone(),
            });
        }
        Ok(())
    }
}
