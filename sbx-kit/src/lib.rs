//! Kits for sbx: a folder with a `spec.yaml` that says what a sandbox runs and what it may
//! reach. Agent templates (`shell`, `copilot`, `claude`, `codex`, `gemini`) are kits built into
//! this crate; mixins add to them (`sbx create copilot --kit ./my-kit .`).
//!
//! This crate is pure data: the typed model ([`KitSpec`]), a parser and validator whose
//! [`Diagnostic`]s name the file, line, column and field path of every problem (with "did you
//! mean" hints for misspelled fields), [`merge`] of an agent with mixins that keeps the
//! [`Origin`] of every rule (`template:copilot`, `kit:my-kit`), the built-in [`template`]s, and
//! the [`json_schema`] for editors. It does no I/O beyond reading a kit folder, has no async
//! runtime, and contains no unsafe code.
//!
//! Cargo features: none. Platforms: any (the crate is plain Rust; only [`Kit::from_dir`]
//! touches the file system). Kits are written by users about their own sandboxes, so the
//! parser's job is precise feedback and bounded work on hostile input, not secrecy: kits hold
//! no secrets, only the names of the variables where sentinels appear.
//!
//! # The format (schemaVersion "1")
//!
//! ```yaml
//! schemaVersion: "1"
//! kind: agent                 # or mixin
//! name: my-agent              # [a-z0-9-], 1..64
//! description: ...
//! agent:                      # kind: agent only
//!   command: [copilot, --yolo]
//!   env: {KEY: value}
//! network:
//!   allowedDomains: [api.example.com, "*.example.org", "github.com:443"]
//!   deniedDomains: [tracker.example.com]
//!   bypassDomains: [pinned.example.com]     # no inspection, no injection
//!   serviceDomains: {api.example.com: example}  # domain -> service whose credential is injected
//! credentials:
//!   example: {env: EXAMPLE_TOKEN}           # the sandbox sees a sentinel in EXAMPLE_TOKEN
//! environment:
//!   variables: {KEY: value}
//! commands:
//!   install: [{command: "apt-get install -y jq", user: root}]       # once, at create
//!   startup: [{command: [sh, -c, "..."], user: agent, background: true}]  # every start
//! files:
//!   - {path: /home/agent/.config/x.toml, content: "...", mode: "0644"}
//! ```
//!
//! # Example
//!
//! A mixin that makes Copilot work against a GitHub Enterprise tenant: the `github` credential
//! is also injected on the enterprise Copilot API host.
//!
//! ```
//! use sbx_kit::{merge, template, Kit, RuleAction};
//!
//! let mixin = Kit::parse(
//!     r#"
//! schemaVersion: "1"
//! kind: mixin
//! name: copilot-enterprise-fix
//! description: Inject the GitHub token on the enterprise Copilot API.
//! network:
//!   serviceDomains:
//!     api.enterprise.githubcopilot.com: github
//! "#,
//!     "spec.yaml",
//! )?;
//! let sandbox = merge(&template("copilot")?, &[mixin])?;
//!
//! assert_eq!(sandbox.command, ["copilot", "--yolo"]);
//! let binding = sandbox
//!     .services
//!     .iter()
//!     .find(|b| b.domain.to_string() == "api.enterprise.githubcopilot.com")
//!     .expect("bound");
//! assert_eq!(binding.service, "github");
//! assert_eq!(binding.origin.to_string(), "kit:copilot-enterprise-fix");
//! // A service domain is allowed too, and the rule remembers who added it.
//! assert!(sandbox
//!     .rules_with(RuleAction::Allow)
//!     .any(|r| r.domain == binding.domain && r.origin == binding.origin));
//!
//! // Mistakes come back all at once, each with its place and a hint.
//! let err = Kit::parse("schemaVersion: \"1\"\nkind: mixin\nname: x\nnetwork:\n  alowedDomains: [a.com]\n", "spec.yaml")
//!     .unwrap_err();
//! assert_eq!(
//!     err.diagnostics()[0].to_string(),
//!     "spec.yaml:5:3: network.alowedDomains: unknown field `alowedDomains`; expected one of \
//!      `allowedDomains`, `deniedDomains`, `bypassDomains`, `serviceDomains` (did you mean `allowedDomains`?)"
//! );
//! # Ok::<(), sbx_kit::Error>(())
//! ```
//!
//! # Limits
//!
//! A `spec.yaml` may be at most [`MAX_SPEC_BYTES`]; the YAML parser (serde-saphyr) runs with
//! budgets on nodes, nesting depth, aliases and anchors, so alias bombs fail in milliseconds.
//! Duplicate keys, unknown tags and YAML 1.1 booleans (`yes`/`no`) are not accepted as such:
//! duplicates and unknown tags are errors, `no` is the string "no".
#![forbid(unsafe_code)]

mod domain;
mod error;
mod kit;
mod merge;
mod model;
mod schema;
mod suggest;
mod templates;
mod tree;
mod validate;

pub use domain::{DomainError, DomainPattern, Host};
pub use error::{Diagnostic, Error, Result};
pub use kit::{parse_spec, Kit, Origin, MAX_SPEC_BYTES};
pub use merge::{
    merge, merge_mixins, Command, Credential, EnvVar, File, NetworkRule, ResolvedKit, RuleAction,
    ServiceBinding,
};
pub use model::{
    AgentSpec, CommandLine, CommandSpec, CommandsSpec, CredentialSpec, EnvironmentSpec, FileSpec,
    Kind, KitSpec, NetworkSpec, SchemaVersion, User,
};
pub use schema::{json_schema, json_schema_string};
pub use templates::{template, template_source, templates, TEMPLATE_NAMES};
