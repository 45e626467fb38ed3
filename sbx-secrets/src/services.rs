//! The built-in services: which hosts each token may go to, how clients send it, and what the
//! sandbox's placeholder looks like.

use crate::error::{Error, Result};
use crate::sentinel::Placeholder;

/// How a client sends the token: a header name and a value template where `{token}` stands
/// for the secret (in the sandbox: its sentinel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderFormat {
    /// Header name, lowercase.
    pub name: &'static str,
    /// Value template, e.g. `Bearer {token}`.
    pub value: &'static str,
}

const BEARER: HeaderFormat = HeaderFormat {
    name: "authorization",
    value: "Bearer {token}",
};

/// A built-in service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Service {
    /// The name used with `sbx secret set` (e.g. `github`).
    pub name: &'static str,
    /// What it is, for help text.
    pub description: &'static str,
    /// Hosts the token may be sent to: exact names or `*.name` (strict subdomains), all on
    /// port 443.
    pub hosts: &'static [&'static str],
    /// How clients send it.
    pub header: HeaderFormat,
    /// Environment variables that carry the sentinel in the sandbox.
    pub env: &'static [&'static str],
    /// Placeholder pattern shaped like the real token.
    pub placeholder: &'static str,
}

/// The table. Placeholders mimic each vendor's token shape (prefix, alphabet, length) so
/// clients that validate tokens locally accept the sentinel.
pub const SERVICES: &[Service] = &[
    Service {
        name: "github",
        description: "GitHub (gh, git over HTTPS, the REST and GraphQL APIs)",
        hosts: &[
            "github.com",
            "api.github.com",
            "uploads.github.com",
            "codeload.github.com",
            "*.githubusercontent.com",
        ],
        header: BEARER,
        env: &["GH_TOKEN", "GITHUB_TOKEN"],
        placeholder: "gho_{rand:36}",
    },
    Service {
        name: "copilot",
        description: "GitHub Copilot (the token Copilot clients send to its API)",
        hosts: &[
            "api.github.com",
            "github.com",
            "api.githubcopilot.com",
            "*.githubcopilot.com",
            "copilot-proxy.githubusercontent.com",
        ],
        header: BEARER,
        env: &["COPILOT_GITHUB_TOKEN"],
        placeholder: "gho_{rand:36}",
    },
    Service {
        name: "anthropic",
        description: "Anthropic API (Claude)",
        hosts: &["api.anthropic.com"],
        header: HeaderFormat {
            name: "x-api-key",
            value: "{token}",
        },
        env: &["ANTHROPIC_API_KEY"],
        placeholder: "sk-ant-api03-{rand:93}AA",
    },
    Service {
        name: "openai",
        description: "OpenAI API",
        hosts: &["api.openai.com"],
        header: BEARER,
        env: &["OPENAI_API_KEY"],
        placeholder: "sk-proj-{rand:156}",
    },
    Service {
        name: "google",
        description: "Google Gemini API",
        hosts: &["generativelanguage.googleapis.com"],
        header: HeaderFormat {
            name: "x-goog-api-key",
            value: "{token}",
        },
        env: &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        placeholder: "AIza{rand:35}",
    },
    Service {
        name: "mistral",
        description: "Mistral AI API",
        hosts: &["api.mistral.ai"],
        header: BEARER,
        env: &["MISTRAL_API_KEY"],
        placeholder: "{rand:32}",
    },
    Service {
        name: "groq",
        description: "Groq API",
        hosts: &["api.groq.com"],
        header: BEARER,
        env: &["GROQ_API_KEY"],
        placeholder: "gsk_{rand:52}",
    },
    Service {
        name: "xai",
        description: "xAI API (Grok)",
        hosts: &["api.x.ai"],
        header: BEARER,
        env: &["XAI_API_KEY"],
        placeholder: "xai-{rand:80}",
    },
    Service {
        // Only Bedrock API keys: a bearer header suffices there. SigV4-signed AWS requests
        // cannot be handled by swapping a header and are not supported.
        name: "aws",
        description: "Amazon Bedrock API key (bearer token; SigV4 credentials are not supported)",
        hosts: &[
            "bedrock-runtime.us-east-1.amazonaws.com",
            "bedrock-runtime.us-east-2.amazonaws.com",
            "bedrock-runtime.us-west-2.amazonaws.com",
            "bedrock-runtime.eu-central-1.amazonaws.com",
            "bedrock-runtime.eu-west-1.amazonaws.com",
            "bedrock-runtime.eu-west-3.amazonaws.com",
            "bedrock-runtime.ap-northeast-1.amazonaws.com",
            "bedrock-runtime.ap-southeast-2.amazonaws.com",
        ],
        header: BEARER,
        env: &["AWS_BEARER_TOKEN_BEDROCK"],
        placeholder: "ABSKQmVkcm9ja0FQSUtleS{rand:110}",
    },
];

impl Service {
    /// A built-in service by name.
    pub fn get(name: &str) -> Option<&'static Service> {
        SERVICES.iter().find(|s| s.name == name)
    }

    /// A built-in service by name, or an error that lists them and points at `set-custom`.
    pub fn lookup(name: &str) -> Result<&'static Service> {
        Service::get(name).ok_or_else(|| Error::UnknownService {
            name: crate::error::echo_name(name),
            known: SERVICES
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The placeholder pattern, parsed.
    pub fn placeholder(&self) -> Placeholder {
        Placeholder::parse(self.placeholder).expect("built-in placeholders are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{normalize_host, validate_env, validate_name};

    #[test]
    fn table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for s in SERVICES {
            assert!(names.insert(s.name), "duplicate {}", s.name);
            validate_name(s.name).unwrap();
            assert!(!s.hosts.is_empty());
            for h in s.hosts {
                assert_eq!(normalize_host(h).unwrap(), *h);
            }
            for e in s.env {
                validate_env(e).unwrap();
            }
            assert!(s.header.value.contains("{token}"));
            assert!(s.placeholder().sentinel_len() >= 32, "{}", s.name);
        }
        for required in [
            "github",
            "copilot",
            "anthropic",
            "openai",
            "google",
            "mistral",
            "groq",
            "xai",
            "aws",
        ] {
            assert!(Service::get(required).is_some(), "{required}");
        }
    }

    #[test]
    fn unknown_service_suggests_set_custom() {
        let e = Service::lookup("gitlab").unwrap_err().to_string();
        assert!(e.contains("set-custom") && e.contains("github"), "{e}");
    }
}
