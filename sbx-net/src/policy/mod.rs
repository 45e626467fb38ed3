//! Network policy: resources, rules, presets, decisions and address classification.

mod address;
mod host;
mod resource;
mod rules;

pub use address::{classify, AddressClass};
pub use host::{canonical_ip, parse_authority, Host};
pub use resource::{Pattern, Resource};
pub use rules::{
    Action, Decision, Policy, Preset, Reason, Rule, Scope, Verdict, BALANCED_ALLOWLIST,
};
