//! From a YAML tree to a [`KitSpec`], collecting every problem with its place and field path.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::{
    AgentSpec, CommandLine, CommandSpec, CommandsSpec, CredentialSpec, EnvironmentSpec, FileSpec,
    Kind, KitSpec, NetworkSpec, SchemaVersion, User,
};
use crate::suggest::closest;
use crate::tree::{self, Node, Pos, Value};
use crate::{Diagnostic, DomainPattern};

pub(crate) const TOP_FIELDS: &[&str] = &[
    "schemaVersion",
    "kind",
    "name",
    "description",
    "agent",
    "network",
    "credentials",
    "environment",
    "commands",
    "files",
];
pub(crate) const AGENT_FIELDS: &[&str] = &["command", "env"];
pub(crate) const NETWORK_FIELDS: &[&str] = &[
    "allowedDomains",
    "deniedDomains",
    "bypassDomains",
    "serviceDomains",
];
pub(crate) const CREDENTIAL_FIELDS: &[&str] = &["env"];
pub(crate) const ENVIRONMENT_FIELDS: &[&str] = &["variables"];
pub(crate) const COMMANDS_FIELDS: &[&str] = &["install", "startup"];
pub(crate) const COMMAND_FIELDS: &[&str] = &["command", "user", "background"];
pub(crate) const FILE_FIELDS: &[&str] = &["path", "content", "mode"];

/// Where each section's fields live, for "`allowedDomains` belongs under `network`" hints.
const HOMES: &[(&str, &[&str])] = &[
    ("agent", AGENT_FIELDS),
    ("network", NETWORK_FIELDS),
    ("environment", ENVIRONMENT_FIELDS),
    ("commands", COMMANDS_FIELDS),
];

const NAME_RULE: &str =
    "lowercase letters, digits and `-`, 1 to 64 characters, not starting with `-`";

/// Parses and validates `src`; `file` is how diagnostics name the file.
pub(crate) fn parse_spec(src: &str, file: &str) -> Result<KitSpec, Vec<Diagnostic>> {
    let mut v = Validator {
        src,
        file,
        diags: Vec::new(),
        vars: Vec::new(),
    };
    let root = match tree::parse(src) {
        Ok(root) => root,
        Err(e) => {
            let pos = e.pos.unwrap_or_else(Pos::start);
            v.error(pos, "", format!("invalid YAML: {}", e.message), None);
            return Err(v.diags);
        }
    };
    let spec = v.spec(&root);
    if v.diags.is_empty() {
        if let Some(spec) = spec {
            return Ok(spec);
        }
    }
    v.diags.sort_by_key(|d| (d.line, d.column));
    Err(v.diags)
}

struct Validator<'a> {
    src: &'a str,
    file: &'a str,
    diags: Vec<Diagnostic>,
    /// Where each variable was set: (map path, name, key position).
    vars: Vec<(String, String, Pos)>,
}

/// The known fields found in one mapping, with their key and value nodes.
struct Fields<'n> {
    at: Pos,
    found: Vec<(&'static str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.found
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, v)| *v)
    }
    fn key(&self, name: &str) -> Option<&'n Node> {
        self.found
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, k, _)| *k)
    }
}

fn child(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn key_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        child(path, key)
    } else {
        format!("{path}[{key:?}]")
    }
}

fn list_names(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'a> Validator<'a> {
    fn error(&mut self, pos: Pos, path: &str, message: String, hint: Option<String>) {
        self.diags.push(Diagnostic {
            file: self.file.to_owned(),
            line: pos.line.max(1),
            column: pos.column.max(1),
            path: path.to_owned(),
            message,
            hint,
            source_line: crate::error::source_line(self.src, pos.line.max(1)),
        });
    }

    fn expected(&mut self, node: &Node, path: &str, what: &str) {
        let message = format!("expected {what}, found {}", node.kind());
        self.error(node.pos, path, message, None);
    }

    fn text<'n>(&self, node: &'n Node) -> Option<Cow<'n, str>>
    where
        'a: 'n,
    {
        node.text(self.src)
    }

    /// The known fields of a mapping; reports unknown and duplicate keys. A null section
    /// (`network:` with nothing after it) counts as empty.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&'static str],
    ) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => {
                return Some(Fields {
                    at: node.pos,
                    found: Vec::new(),
                })
            }
            _ => {
                let what = format!("a mapping with the fields {}", list_names(known));
                self.expected(node, path, &what);
                return None;
            }
        };
        let mut found: Vec<(&'static str, &'n Node, &'n Node)> = Vec::new();
        for (k, v) in entries {
            let Some(name) = (match &k.value {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            }) else {
                let what = format!("a field name ({})", list_names(known));
                self.expected(k, path, &what);
                continue;
            };
            let field_path = key_path(path, name);
            match known.iter().find(|f| **f == name) {
                Some(f) => {
                    if let Some((_, first, _)) = found.iter().find(|(n, _, _)| n == f) {
                        let message = format!(
                            "duplicate field `{name}`; it is already given at line {}",
                            first.pos.line
                        );
                        self.error(k.pos, &field_path, message, None);
                    } else {
                        found.push((f, k, v));
                    }
                }
                None => {
                    let hint = closest(name, known)
                        .map(|c| format!("did you mean `{c}`?"))
                        .or_else(|| {
                            HOMES
                                .iter()
                                .find(|(home, fields)| {
                                    fields.contains(&name) && child("", home) != path
                                })
                                .map(|(home, _)| format!("`{name}` belongs under `{home}`"))
                        });
                    let message = format!(
                        "unknown field `{name}`; expected one of {}",
                        list_names(known)
                    );
                    self.error(k.pos, &field_path, message, hint);
                }
            }
        }
        Some(Fields {
            at: node.pos,
            found,
        })
    }

    fn missing(&mut self, fields: &Fields<'_>, path: &str, field: &str, what: &str) {
        let message = format!("missing required field `{field}` ({what})");
        self.error(fields.at, path, message, None);
    }

    fn string(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        match self.text(node) {
            Some(t) => Some(t.into_owned()),
            None => {
                self.expected(node, path, what);
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                let shown = self.text(node).map(|t| format!("`{t}`"));
                let message = match shown {
                    Some(t) => format!("expected `true` or `false`, found {t}"),
                    None => format!("expected `true` or `false`, found {}", node.kind()),
                };
                self.error(node.pos, path, message, None);
                None
            }
        }
    }

    fn seq<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> &'n [Node] {
        match &node.value {
            Value::Seq(items) => items,
            Value::Null => &[],
            _ => {
                self.expected(node, path, what);
                &[]
            }
        }
    }

    fn name(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        let s = self.string(node, path, what)?;
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            return Some(s);
        }
        let lower = s.to_ascii_lowercase().replace(['_', ' ', '.'], "-");
        let hint = (lower != s
            && !lower.is_empty()
            && lower.len() <= 64
            && !lower.starts_with('-')
            && lower
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        .then(|| format!("did you mean `{lower}`?"));
        self.error(
            node.pos,
            path,
            format!("invalid {what} {s:?}; expected {NAME_RULE}"),
            hint,
        );
        None
    }

    fn env_name(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path, "a variable name")?;
        let mut chars = s.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Some(s)
        } else {
            let message = format!(
                "invalid variable name {s:?}; expected letters, digits and `_`, not starting with a digit"
            );
            self.error(node.pos, path, message, None);
            None
        }
    }

    /// A mapping of variable names to values; numbers and booleans are taken as written.
    fn env_map(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => return out,
            _ => {
                self.expected(node, path, "a mapping of variable names to values");
                return out;
            }
        };
        let mut lines: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in entries {
            let Some(name) = self.env_name(k, path) else {
                continue;
            };
            let p = key_path(path, &name);
            if let Some(first) = lines.get(&name) {
                let message =
                    format!("duplicate variable `{name}`; it is already given at line {first}");
                self.error(k.pos, &p, message, None);
                continue;
            }
            lines.insert(name.clone(), k.pos.line);
            self.vars.push((path.to_owned(), name.clone(), k.pos));
            match self.text(v) {
                Some(value) => {
                    if value.contains('\0') {
                        self.error(v.pos, &p, "a value may not contain NUL".into(), None);
                    } else {
                        out.insert(name, value.into_owned());
                    }
                }
                None if matches!(v.value, Value::Null) => {
                    let message = "expected a value, found nothing (null)".to_owned();
                    self.error(
                        v.pos,
                        &p,
                        message,
                        Some("write \"\" for an empty value".into()),
                    );
                }
                None => self.expected(v, &p, "a string value"),
            }
        }
        out
    }

    fn domain(&mut self, node: &Node, path: &str) -> Option<DomainPattern> {
        let s = self.string(node, path, "a domain pattern")?;
        match DomainPattern::parse(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                let message = format!("invalid domain pattern {s:?}: {e}");
                let hint = match crate::domain::salvage(&s) {
                    Some(d) => format!("did you mean `{d}`?"),
                    None => "expected a host such as `api.example.com`, `*.example.org`, `github.com:443` or `**`".to_owned(),
                };
                self.error(node.pos, path, message, Some(hint));
                None
            }
        }
    }

    fn domain_list(&mut self, node: Option<&Node>, path: &str) -> Vec<(DomainPattern, Pos)> {
        let Some(node) = node else {
            return Vec::new();
        };
        let items = self.seq(node, path, "a list of domain patterns");
        let mut out: Vec<(DomainPattern, Pos)> = Vec::new();
        let mut seen: HashSet<DomainPattern> = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(d) = self.domain(item, &index(path, i)) {
                if seen.insert(d.clone()) {
                    out.push((d, item.pos));
                }
            }
        }
        out
    }

    fn spec(&mut self, root: &Node) -> Option<KitSpec> {
        if matches!(root.value, Value::Null) {
            let message =
                "the file is empty; expected a mapping with `schemaVersion`, `kind` and `name`"
                    .to_owned();
            self.error(root.pos, "", message, None);
            return None;
        }
        let top = self.fields(root, "", TOP_FIELDS)?;

        let schema_version = match top.get("schemaVersion") {
            None => {
                self.missing(
                    &top,
                    "schemaVersion",
                    "schemaVersion",
                    "the format version, \"1\"",
                );
                None
            }
            Some(n) => match self.text(n).as_deref() {
                Some("1") => Some(SchemaVersion::V1),
                Some(other) => {
                    let message = format!("unsupported schemaVersion {other:?}; expected \"1\"");
                    self.error(n.pos, "schemaVersion", message, None);
                    None
                }
                None => {
                    self.expected(n, "schemaVersion", "the string \"1\"");
                    None
                }
            },
        };

        let kind = match top.get("kind") {
            None => {
                self.missing(&top, "kind", "kind", "`agent` or `mixin`");
                None
            }
            Some(n) => match self.text(n).as_deref() {
                Some("agent") => Some(Kind::Agent),
                Some("mixin") => Some(Kind::Mixin),
                Some(other) => {
                    let hint =
                        closest(other, &["agent", "mixin"]).map(|c| format!("did you mean `{c}`?"));
                    let message = format!("unknown kind {other:?}; expected `agent` or `mixin`");
                    self.error(n.pos, "kind", message, hint);
                    None
                }
                None => {
                    self.expected(n, "kind", "`agent` or `mixin`");
                    None
                }
            },
        };

        let name = match top.get("name") {
            None => {
                self.missing(&top, "name", "name", NAME_RULE);
                None
            }
            Some(n) => self.name(n, "name", "name"),
        };

        let description = top
            .get("description")
            .and_then(|n| self.string(n, "description", "a string"));

        let agent = match (top.get("agent"), kind) {
            (Some(_), Some(Kind::Mixin)) => {
                let key = top.key("agent").map(|k| k.pos).unwrap_or(top.at);
                let message = "`agent` is only allowed in kits of kind `agent`; a mixin cannot set or change the agent's command or env".to_owned();
                let hint = "move these variables to `environment.variables`, or make this kit `kind: agent`".to_owned();
                self.error(key, "agent", message, Some(hint));
                None
            }
            (Some(n), _) => self.agent(n),
            (None, Some(Kind::Agent)) => {
                self.missing(
                    &top,
                    "agent",
                    "agent",
                    "kind `agent` needs `agent.command`, the program to run",
                );
                None
            }
            (None, _) => None,
        };

        let network = match top.get("network") {
            Some(n) => self.network(n),
            None => Some(NetworkSpec::default()),
        };
        let credentials = match top.get("credentials") {
            Some(n) => self.credentials(n),
            None => BTreeMap::new(),
        };
        let environment = match top.get("environment") {
            Some(n) => self
                .fields(n, "environment", ENVIRONMENT_FIELDS)
                .map(|f| EnvironmentSpec {
                    variables: f
                        .get("variables")
                        .map(|v| self.env_map(v, "environment.variables"))
                        .unwrap_or_default(),
                })
                .unwrap_or_default(),
            None => EnvironmentSpec::default(),
        };
        let commands = match top.get("commands") {
            Some(n) => self.commands(n),
            None => CommandsSpec::default(),
        };
        let files = match top.get("files") {
            Some(n) => self.files(n),
            None => Vec::new(),
        };

        self.credential_env_clashes(&credentials);

        Some(KitSpec {
            schema_version: schema_version?,
            kind: kind?,
            name: name?,
            description,
            agent,
            network: network?,
            credentials,
            environment,
            commands,
            files,
        })
    }

    fn agent(&mut self, node: &Node) -> Option<AgentSpec> {
        let f = self.fields(node, "agent", AGENT_FIELDS)?;
        let command = match f.get("command") {
            None => {
                self.missing(
                    &f,
                    "agent.command",
                    "command",
                    "the program and its arguments, e.g. `[copilot, --yolo]`",
                );
                None
            }
            Some(n) => self.argv(
                n,
                "agent.command",
                "the program and its arguments as a list, e.g. `[copilot, --yolo]`",
            ),
        };
        let env = f
            .get("env")
            .map(|n| self.env_map(n, "agent.env"))
            .unwrap_or_default();
        Some(AgentSpec {
            command: command?,
            env,
        })
    }

    /// A non-empty list of non-empty strings.
    fn argv(&mut self, node: &Node, path: &str, what: &str) -> Option<Vec<String>> {
        let items = match &node.value {
            Value::Seq(items) => items,
            Value::Str(line) if !line.trim().is_empty() => {
                let message = format!("expected {what}, found a string");
                let words: Vec<&str> = line.split_whitespace().collect();
                let hint = format!("write it as a list: [{}]", words.join(", "));
                self.error(node.pos, path, message, Some(hint));
                return None;
            }
            _ => {
                self.expected(node, path, what);
                return None;
            }
        };
        if items.is_empty() {
            let message = format!("the list is empty; expected {what}");
            self.error(node.pos, path, message, None);
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            match self.string(item, &p, "a string argument") {
                Some(s) if i == 0 && s.trim().is_empty() => {
                    self.error(item.pos, &p, "the program name is empty".into(), None);
                    ok = false;
                }
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn network(&mut self, node: &Node) -> Option<NetworkSpec> {
        let f = self.fields(node, "network", NETWORK_FIELDS)?;
        let allowed = self.domain_list(f.get("allowedDomains"), "network.allowedDomains");
        let denied = self.domain_list(f.get("deniedDomains"), "network.deniedDomains");
        let bypass = self.domain_list(f.get("bypassDomains"), "network.bypassDomains");

        let mut services: Vec<(DomainPattern, String, Pos)> = Vec::new();
        let mut service_lines: HashMap<DomainPattern, u64> = HashMap::new();
        if let Some(n) = f.get("serviceDomains") {
            let path = "network.serviceDomains";
            match &n.value {
                Value::Null => {}
                Value::Map(entries) => {
                    for (k, v) in entries {
                        let Some(domain) = self.domain(k, path) else {
                            continue;
                        };
                        let p = key_path(path, &domain.to_string());
                        if domain.is_any() {
                            let message = "`**` cannot be a service domain; name the hosts that receive this credential".to_owned();
                            self.error(k.pos, &p, message, None);
                            continue;
                        }
                        if let Some(first) = service_lines.get(&domain) {
                            let message = format!(
                                "duplicate domain `{domain}`; it is already given at line {first}"
                            );
                            self.error(k.pos, &p, message, None);
                            continue;
                        }
                        service_lines.insert(domain.clone(), k.pos.line);
                        if let Some(service) = self.name(v, &p, "service name") {
                            services.push((domain, service, k.pos));
                        }
                    }
                }
                _ => self.expected(
                    n,
                    path,
                    "a mapping of domains to service names, e.g. `api.github.com: github`",
                ),
            }
        }

        for (d, pos) in &bypass {
            if d.is_any() {
                let message = "`**` cannot bypass inspection: that would turn off credential protection for every destination".to_owned();
                self.error(*pos, "network.bypassDomains", message, None);
            }
        }
        // Contradictions inside one kit are mistakes; across kits, deny beating allow is policy.
        let clash = |this: &mut Self,
                     list: &[(DomainPattern, Pos)],
                     other: &[(DomainPattern, Pos)],
                     path: &str,
                     other_name: &str,
                     why: &str| {
            let other: HashMap<&DomainPattern, Pos> = other.iter().map(|(d, p)| (d, *p)).collect();
            for (d, pos) in list {
                if let Some(first) = other.get(d) {
                    let message =
                        format!("`{d}` is also in {other_name} (line {}); {why}", first.line);
                    this.error(*pos, path, message, None);
                }
            }
        };
        clash(
            self,
            &denied,
            &allowed,
            "network.deniedDomains",
            "allowedDomains",
            "deny beats allow, so the allow entry would do nothing",
        );
        clash(
            self,
            &denied,
            &bypass,
            "network.deniedDomains",
            "bypassDomains",
            "deny beats allow, so the bypass entry would do nothing",
        );
        let service_pos: Vec<(DomainPattern, Pos)> =
            services.iter().map(|(d, _, p)| (d.clone(), *p)).collect();
        clash(
            self,
            &bypass,
            &service_pos,
            "network.bypassDomains",
            "serviceDomains",
            "bypassed traffic is not inspected, so its credential could never be injected",
        );
        clash(
            self,
            &denied,
            &service_pos,
            "network.deniedDomains",
            "serviceDomains",
            "a denied domain never receives its credential",
        );

        Some(NetworkSpec {
            allowed_domains: allowed.into_iter().map(|(d, _)| d).collect(),
            denied_domains: denied.into_iter().map(|(d, _)| d).collect(),
            bypass_domains: bypass.into_iter().map(|(d, _)| d).collect(),
            service_domains: services.into_iter().map(|(d, s, _)| (d, s)).collect(),
        })
    }

    fn credentials(&mut self, node: &Node) -> BTreeMap<String, CredentialSpec> {
        let mut out = BTreeMap::new();
        let path = "credentials";
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => return out,
            _ => {
                self.expected(
                    node,
                    path,
                    "a mapping of service names to `{env: VARIABLE}`",
                );
                return out;
            }
        };
        let mut envs: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in entries {
            let Some(service) = self.name(k, path, "service name") else {
                continue;
            };
            let p = key_path(path, &service);
            if out.contains_key(&service) {
                self.error(k.pos, &p, format!("duplicate service `{service}`"), None);
                continue;
            }
            let Some(f) = self.fields(v, &p, CREDENTIAL_FIELDS) else {
                continue;
            };
            let Some(env_node) = f.get("env") else {
                self.missing(
                    &f,
                    &child(&p, "env"),
                    "env",
                    "the variable that holds the sentinel, e.g. GH_TOKEN",
                );
                continue;
            };
            let Some(env) = self.env_name(env_node, &child(&p, "env")) else {
                continue;
            };
            if let Some(other) = envs.get(&env) {
                let message = format!("`{env}` already holds the sentinel for `{other}`; each credential needs its own variable");
                self.error(env_node.pos, &child(&p, "env"), message, None);
                continue;
            }
            envs.insert(env.clone(), service.clone());
            out.insert(service, CredentialSpec { env });
        }
        out
    }

    /// A credential's sentinel variable set as a plain variable would replace the sentinel.
    fn credential_env_clashes(&mut self, credentials: &BTreeMap<String, CredentialSpec>) {
        let clashes: Vec<(String, String, Pos)> = self
            .vars
            .iter()
            .filter_map(|(place, name, pos)| {
                let (service, _) = credentials.iter().find(|(_, c)| c.env == *name)?;
                Some((place.clone(), service.clone(), *pos))
            })
            .collect();
        for (place, service, pos) in clashes {
            let env = &credentials[&service].env;
            let message = format!(
                "`{env}` holds the sentinel for credential `{service}`; setting it here would overwrite the sentinel"
            );
            let hint = format!("remove `{env}` from `{place}`; sbx fills it in");
            self.error(pos, &key_path(&place, env), message, Some(hint));
        }
    }

    fn commands(&mut self, node: &Node) -> CommandsSpec {
        let Some(f) = self.fields(node, "commands", COMMANDS_FIELDS) else {
            return CommandsSpec::default();
        };
        let mut out = CommandsSpec::default();
        for (phase, list) in [("install", &mut out.install), ("startup", &mut out.startup)] {
            let Some(n) = f.get(phase) else { continue };
            let path = child("commands", phase);
            let items = self.seq(n, &path, "a list of commands, e.g. `[{command: \"make\"}]`");
            for (i, item) in items.iter().enumerate() {
                if let Some(c) = self.command(item, &index(&path, i), phase == "startup") {
                    list.push(c);
                }
            }
        }
        out
    }

    fn command(&mut self, node: &Node, path: &str, startup: bool) -> Option<CommandSpec> {
        if let Value::Str(_) = node.value {
            let message =
                "expected a mapping such as `{command: \"...\", user: root}`, found a string"
                    .to_owned();
            let hint = "write `- command: ...`".to_owned();
            self.error(node.pos, path, message, Some(hint));
            return None;
        }
        let f = self.fields(node, path, COMMAND_FIELDS)?;
        let command = match f.get("command") {
            None => {
                self.missing(
                    &f,
                    &child(path, "command"),
                    "command",
                    "a shell line or an argument list",
                );
                None
            }
            Some(n) => {
                let p = child(path, "command");
                match &n.value {
                    Value::Seq(_) => self
                        .argv(n, &p, "an argument list such as `[sh, -c, \"...\"]`")
                        .map(CommandLine::Argv),
                    _ => match self.text(n) {
                        Some(line) if line.trim().is_empty() => {
                            self.error(n.pos, &p, "the command is empty".into(), None);
                            None
                        }
                        Some(line) => Some(CommandLine::Shell(line.into_owned())),
                        None => {
                            self.expected(n, &p, "a shell line or an argument list");
                            None
                        }
                    },
                }
            }
        };
        let user = match f.get("user") {
            None => Some(User::Agent),
            Some(n) => {
                let p = child(path, "user");
                match self.text(n).as_deref() {
                    Some("agent") => Some(User::Agent),
                    Some("root") => Some(User::Root),
                    Some(other) => {
                        let hint = closest(other, &["agent", "root"])
                            .map(|c| format!("did you mean `{c}`?"));
                        let message = format!("unknown user {other:?}; expected `agent` or `root`");
                        self.error(n.pos, &p, message, hint);
                        None
                    }
                    None => {
                        self.expected(n, &p, "`agent` or `root`");
                        None
                    }
                }
            }
        };
        let background = match f.get("background") {
            None => Some(false),
            Some(n) if !startup => {
                let at = f.key("background").map(|k| k.pos).unwrap_or(n.pos);
                let message = "`background` is only allowed in `commands.startup`; install commands always run to completion".to_owned();
                self.error(at, &child(path, "background"), message, None);
                None
            }
            Some(n) => self.bool(n, &child(path, "background")),
        };
        Some(CommandSpec {
            command: command?,
            user: user?,
            background: background?,
        })
    }

    fn files(&mut self, node: &Node) -> Vec<FileSpec> {
        let items = self.seq(
            node,
            "files",
            "a list of files, e.g. `[{path: /etc/x, content: \"...\"}]`",
        );
        let mut out: Vec<FileSpec> = Vec::new();
        let mut lines: HashMap<String, u64> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = index("files", i);
            let Some(f) = self.fields(item, &path, FILE_FIELDS) else {
                continue;
            };
            let file_path = match f.get("path") {
                None => {
                    self.missing(
                        &f,
                        &child(&path, "path"),
                        "path",
                        "an absolute path in the sandbox",
                    );
                    None
                }
                Some(n) => self.file_path(n, &child(&path, "path")),
            };
            if let (Some(p), Some(n)) = (&file_path, f.get("path")) {
                if let Some(first) = lines.get(p) {
                    let message = format!("`{p}` is already written by the file at line {first}");
                    self.error(n.pos, &child(&path, "path"), message, None);
                    continue;
                }
                lines.insert(p.clone(), n.pos.line);
            }
            let content = match f.get("content") {
                None => {
                    self.missing(
                        &f,
                        &child(&path, "content"),
                        "content",
                        "the file's text; \"\" for an empty file",
                    );
                    None
                }
                Some(n) => self.string(n, &child(&path, "content"), "the file's text"),
            };
            let mode = match f.get("mode") {
                None => Some("0644".to_owned()),
                Some(n) => {
                    let p = child(&path, "mode");
                    let s = self.string(n, &p, "octal permission bits such as \"0644\"");
                    match s {
                        Some(s) if is_mode(&s) => {
                            Some(if s.len() == 3 { format!("0{s}") } else { s })
                        }
                        Some(s) => {
                            let message = format!("invalid mode {s:?}; expected octal permission bits such as \"0644\" or \"0755\"");
                            self.error(n.pos, &p, message, None);
                            None
                        }
                        None => None,
                    }
                }
            };
            if let (Some(path), Some(content), Some(mode)) = (file_path, content, mode) {
                out.push(FileSpec {
                    path,
                    content,
                    mode,
                });
            }
        }
        out
    }

    fn file_path(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path, "an absolute path")?;
        let why = if !s.starts_with('/') {
            Some("it is not absolute")
        } else if s == "/" || s.ends_with('/') {
            Some("it names a directory")
        } else if s.contains('\0') {
            Some("it contains NUL")
        } else if s
            .split('/')
            .skip(1)
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            Some("it has an empty, `.` or `..` component")
        } else {
            None
        };
        match why {
            None => Some(s),
            Some(why) => {
                let message = format!("invalid file path {s:?}: {why}; expected an absolute path such as `/home/agent/.config/tool.toml`");
                self.error(node.pos, path, message, None);
                None
            }
        }
    }
}

fn is_mode(s: &str) -> bool {
    let digits = match s.len() {
        3 => s,
        4 if s.starts_with('0') => &s[1..],
        _ => return false,
    };
    digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        assert_eq!(child("", "network"), "network");
        assert_eq!(child("network", "allowedDomains"), "network.allowedDomains");
        assert_eq!(index("files", 2), "files[2]");
        assert_eq!(
            key_path("environment.variables", "LANG"),
            "environment.variables.LANG"
        );
        assert_eq!(
            key_path("network.serviceDomains", "api.github.com"),
            "network.serviceDomains[\"api.github.com\"]"
        );
    }

    #[test]
    fn modes() {
        for ok in ["644", "0644", "0755", "000", "777"] {
            assert!(is_mode(ok), "{ok}");
        }
        for bad in ["", "64", "0799", "1755", "04755", "rw-r--r--", "0o644"] {
            assert!(!is_mode(bad), "{bad}");
        }
    }

    #[test]
    fn numbers_and_booleans_are_read_as_written() {
        let src = "schemaVersion: 1\nkind: mixin\nname: 007\nenvironment:\n  variables: {A: 0x1F, B: 1.50, C: false}\nfiles:\n  - {path: /x, content: 12, mode: 0600}\n";
        let spec = parse_spec(src, "s").unwrap();
        assert_eq!(spec.name, "007");
        let v = &spec.environment.variables;
        assert_eq!(
            (v["A"].as_str(), v["B"].as_str(), v["C"].as_str()),
            ("0x1F", "1.50", "false")
        );
        assert_eq!(spec.files[0].content, "12");
        assert_eq!(spec.files[0].mode, "0600");
    }

    #[test]
    fn null_sections_are_empty() {
        let spec = parse_spec(
            "schemaVersion: \"1\"\nkind: mixin\nname: x\nnetwork:\ncommands:\n",
            "s",
        )
        .unwrap();
        assert!(spec.network.is_empty() && spec.commands.is_empty());
    }
}
