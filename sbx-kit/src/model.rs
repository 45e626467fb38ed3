//! The typed model of a `spec.yaml` (schema version "1").
//!
//! These types are what the validator produces; they also generate the JSON Schema for editors
//! (see [`json_schema`](crate::json_schema)), so their serde names are the YAML field names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::DomainPattern;

/// One kit, as written in its `spec.yaml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "sbx kit spec.yaml", extend("$id" = "https://example.invalid/sbx/spec.schema.json"))]
#[non_exhaustive]
pub struct KitSpec {
    /// The format version; this sbx reads "1".
    pub schema_version: SchemaVersion,
    /// `agent`: a complete sandbox (what to run); `mixin`: additions to an agent.
    pub kind: Kind,
    /// Lowercase letters, digits and `-`, 1 to 64 characters, not starting with `-`.
    #[schemars(
        regex(pattern = r"^[a-z0-9][a-z0-9-]{0,63}$"),
        length(min = 1, max = 64)
    )]
    pub name: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the sandbox runs (`kind: agent` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    /// What the sandbox may reach, and where credentials are injected.
    #[serde(default, skip_serializing_if = "NetworkSpec::is_empty")]
    pub network: NetworkSpec,
    /// Service name to how the sandbox sees its credential.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<ServiceName, CredentialSpec>")]
    pub credentials: BTreeMap<String, CredentialSpec>,
    /// Environment of every process in the sandbox.
    #[serde(default, skip_serializing_if = "EnvironmentSpec::is_empty")]
    pub environment: EnvironmentSpec,
    /// Commands run at create and at every start.
    #[serde(default, skip_serializing_if = "CommandsSpec::is_empty")]
    pub commands: CommandsSpec,
    /// Files written into the sandbox at create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
}

/// The only supported `schemaVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[non_exhaustive]
pub enum SchemaVersion {
    /// Version "1".
    #[serde(rename = "1")]
    V1,
}

/// Whether a kit stands alone or adds to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A complete sandbox: has `agent.command`. Built-in templates are agents.
    Agent,
    /// Additions to an agent: domains, credentials, variables, commands, files.
    Mixin,
}

impl Kind {
    /// `agent` or `mixin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Mixin => "mixin",
        }
    }
}

/// The `agent` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentSpec {
    /// What `sbx run` starts, as an argument list, e.g. `[copilot, --yolo]`.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Environment of the agent process only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<EnvName, EnvValue>")]
    pub env: BTreeMap<String, String>,
}

/// The `network` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct NetworkSpec {
    /// Destinations the sandbox may reach (TLS inspected, credentials injected where bound).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_domains: Vec<DomainPattern>,
    /// Destinations the sandbox may never reach; deny beats allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_domains: Vec<DomainPattern>,
    /// Destinations reached without inspection: no TLS interception, no credential injection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass_domains: Vec<DomainPattern>,
    /// Domain to the service whose credential is injected there. Such a domain is allowed too.
    // A list, not a map, to keep the order written; the validator keeps domains unique.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_pairs"
    )]
    #[schemars(with = "BTreeMap<DomainPattern, ServiceName>")]
    pub service_domains: Vec<(DomainPattern, String)>,
}

/// A list of unique-keyed pairs, written as the mapping it was read from.
fn serialize_pairs<S: serde::Serializer>(
    pairs: &[(DomainPattern, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

impl NetworkSpec {
    /// The service bound to exactly `domain` in this kit, if any.
    pub fn service_for(&self, domain: &DomainPattern) -> Option<&str> {
        self.service_domains
            .iter()
            .find(|(d, _)| d == domain)
            .map(|(_, s)| s.as_str())
    }

    /// Whether the section says nothing.
    pub fn is_empty(&self) -> bool {
        self.allowed_domains.is_empty()
            && self.denied_domains.is_empty()
            && self.bypass_domains.is_empty()
            && self.service_domains.is_empty()
    }
}

/// How the sandbox sees one service's credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct CredentialSpec {
    /// The variable that holds the sentinel (a stand-in the proxy swaps for the real secret).
    #[schemars(with = "EnvName")]
    pub env: String,
}

/// The `environment` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct EnvironmentSpec {
    /// Variables for every process in the sandbox.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<EnvName, EnvValue>")]
    pub variables: BTreeMap<String, String>,
}

impl EnvironmentSpec {
    /// Whether the section says nothing.
    pub fn is_empty(&self) -> bool {
        self.variables.is_empty()
    }
}

/// The `commands` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct CommandsSpec {
    /// Run once, when the sandbox is created, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install: Vec<CommandSpec>,
    /// Run at every start, in order, before the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup: Vec<CommandSpec>,
}

impl CommandsSpec {
    /// Whether the section says nothing.
    pub fn is_empty(&self) -> bool {
        self.install.is_empty() && self.startup.is_empty()
    }
}

/// One command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct CommandSpec {
    /// A shell command line (run with `sh -c`) or an argument list.
    pub command: CommandLine,
    /// Who runs it; `agent` unless given.
    #[serde(default)]
    pub user: User,
    /// Start it and go on without waiting (`startup` only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
}

/// A command as a shell line or as an argument list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandLine {
    /// Run with `sh -c`.
    Shell(#[schemars(length(min = 1))] String),
    /// Run directly: program and arguments.
    Argv(#[schemars(length(min = 1))] Vec<String>),
}

impl CommandLine {
    /// The argument vector to execute: `[sh, -c, line]` for a shell line.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
            CommandLine::Argv(argv) => argv.clone(),
        }
    }
}

impl std::fmt::Display for CommandLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandLine::Shell(line) => f.write_str(line),
            CommandLine::Argv(argv) => {
                for (i, a) in argv.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    if a.is_empty()
                        || a.chars()
                            .any(|c| c.is_whitespace() || "'\"\\$`".contains(c))
                    {
                        write!(f, "'{}'", a.replace('\'', r"'\''"))?;
                    } else {
                        f.write_str(a)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The user a command runs as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum User {
    /// The unprivileged `agent` user (uid 1000).
    #[default]
    Agent,
    /// root.
    Root,
}

impl User {
    /// `agent` or `root`.
    pub fn as_str(self) -> &'static str {
        match self {
            User::Agent => "agent",
            User::Root => "root",
        }
    }
}

/// A file written into the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct FileSpec {
    /// Absolute path in the sandbox, without `.` or `..` components.
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    /// The file's text.
    pub content: String,
    /// Permission bits in octal, e.g. "0644" (the default) or "0755".
    #[serde(default = "default_mode")]
    #[schemars(with = "Mode")]
    pub mode: String,
}

fn default_mode() -> String {
    "0644".to_owned()
}

impl FileSpec {
    /// The permission bits.
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0o644)
    }
}

// Schema-only helper types: they give names and patterns to strings in the JSON Schema.

/// A service name: lowercase letters, digits and `-` (e.g. `github`, `anthropic`).
#[derive(JsonSchema)]
#[schemars(transparent)]
#[allow(dead_code)]
struct ServiceName(#[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,63}$"))] String);

/// An environment variable name.
#[derive(JsonSchema)]
#[schemars(transparent)]
#[allow(dead_code)]
struct EnvName(#[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))] String);

/// A variable's value: a string (numbers and booleans are taken as written).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EnvValue {
    String(String),
    Number(f64),
    Bool(bool),
}

/// Octal permission bits, e.g. "0644" (quoting is optional: `mode: 0644` is read as written).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Mode {
    Text(#[schemars(regex(pattern = r"^0?[0-7]{3}$"))] String),
    Number(#[schemars(range(min = 0, max = 777))] u16),
}
