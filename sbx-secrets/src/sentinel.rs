//! Sentinels: the placeholders a sandbox sees instead of secrets.
//!
//! A sentinel is made from a [`Placeholder`] pattern such as `sk-{rand}` or `gho_{rand:36}`:
//! literal text plus random alphanumerics, so a client that checks a token's shape (prefix,
//! length, alphabet) accepts it. Sentinels are not secret; they are printed, logged and written
//! into sandbox environments. Each call of [`Sentinel::generate`] draws fresh randomness from the
//! OS, so sentinels are unique per sandbox and per secret; callers that need a stable sentinel
//! for a sandbox (e.g. across restarts) persist the one they got.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{clip, Error, Result};

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Random characters `{rand}` stands for.
pub const DEFAULT_RAND_LEN: usize = 32;
/// Fewest random characters a pattern may have in total (about 95 bits).
pub const MIN_RAND_LEN: usize = 16;
const MAX_RAND_LEN: usize = 256;
const MAX_PATTERN_LEN: usize = 512;
/// Fewest characters a sentinel has (sbx-net refuses shorter ones).
pub const MIN_SENTINEL_LEN: usize = 16;

/// `n` random characters from `[A-Za-z0-9]`, uniformly (rejection sampling).
pub fn random_alnum(n: usize) -> Result<String> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|_| Error::Random)?;
        for &b in &buf {
            // 248 = 4 * 62: bytes at or above it would bias the first characters.
            if b < 248 && out.len() < n {
                out.push(ALNUM[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Rand(usize),
}

/// A placeholder pattern: printable ASCII without spaces, where `{rand}` stands for 32 random
/// alphanumerics and `{rand:N}` for N (16 to 256). At least 16 random characters in total;
/// the sentinel it makes is at least 16 characters long. Example: `sk-{rand}`,
/// `gho_{rand:36}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Placeholder {
    text: String,
    parts: Vec<Part>,
}

impl Placeholder {
    /// Parses and validates a pattern.
    pub fn parse(pattern: &str) -> Result<Placeholder> {
        let err = |why| {
            Err(Error::InvalidPlaceholder {
                pattern: clip(pattern),
                why,
            })
        };
        if pattern.len() > MAX_PATTERN_LEN {
            return err("longer than 512 characters");
        }
        if !pattern.bytes().all(|b| b.is_ascii_graphic()) {
            return err("use printable ASCII without spaces");
        }
        let mut parts = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Lit(rest[..i].to_string()));
                    }
                    let Some(j) = rest[i..].find('}') else {
                        return err("unclosed `{`");
                    };
                    let token = &rest[i + 1..i + j];
                    let n = match token.strip_prefix("rand") {
                        Some("") => DEFAULT_RAND_LEN,
                        Some(len) => match len.strip_prefix(':').and_then(|l| l.parse().ok()) {
                            Some(n) if (1..=MAX_RAND_LEN).contains(&n) => n,
                            _ => return err("`{rand:N}` needs N from 1 to 256"),
                        },
                        None => return err("only `{rand}` and `{rand:N}` may appear in braces"),
                    };
                    parts.push(Part::Rand(n));
                    rest = &rest[i + j + 1..];
                }
                None => {
                    parts.push(Part::Lit(rest.to_string()));
                    rest = "";
                }
            }
        }
        if parts
            .iter()
            .any(|p| matches!(p, Part::Lit(l) if l.contains('}')))
        {
            return err("stray `}`");
        }
        let rand: usize = parts
            .iter()
            .map(|p| if let Part::Rand(n) = p { *n } else { 0 })
            .sum();
        if rand < MIN_RAND_LEN {
            return err("needs `{rand}` (at least 16 random characters in total)");
        }
        Ok(Placeholder {
            text: pattern.to_string(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The length of every sentinel this pattern makes.
    pub fn sentinel_len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(l) => l.len(),
                Part::Rand(n) => *n,
            })
            .sum()
    }

    /// Whether `value` could have been made by this pattern (same literals, alphanumerics in
    /// the random parts).
    pub fn matches(&self, value: &str) -> bool {
        let mut rest = value;
        for p in &self.parts {
            match p {
                Part::Lit(l) => match rest.strip_prefix(l.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                },
                Part::Rand(n) => {
                    if rest.len() < *n
                        || !rest.as_bytes()[..*n].iter().all(u8::is_ascii_alphanumeric)
                    {
                        return false;
                    }
                    rest = &rest[*n..];
                }
            }
        }
        rest.is_empty()
    }
}

impl Default for Placeholder {
    /// `sbx-{rand}`: the pattern of custom secrets that name none.
    fn default() -> Self {
        Placeholder::parse("sbx-{rand}").expect("the default pattern is valid")
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Placeholder({})", self.text)
    }
}

impl TryFrom<String> for Placeholder {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Placeholder::parse(&s)
    }
}

impl From<Placeholder> for String {
    fn from(p: Placeholder) -> String {
        p.text
    }
}

/// The value a sandbox sees instead of a secret. Not secret: safe to print and log.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sentinel(String);

impl Sentinel {
    /// A fresh sentinel from a pattern.
    pub fn generate(pattern: &Placeholder) -> Result<Sentinel> {
        let mut out = String::with_capacity(pattern.sentinel_len());
        for p in &pattern.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Rand(n) => out.push_str(&random_alnum(*n)?),
            }
        }
        Ok(Sentinel(out))
    }

    /// The sentinel text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sentinel({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_generate() {
        let p = Placeholder::parse("sk-{rand}").unwrap();
        assert_eq!(p.sentinel_len(), 35);
        let s = Sentinel::generate(&p).unwrap();
        assert!(s.as_str().starts_with("sk-"));
        assert_eq!(s.as_str().len(), 35);
        assert!(p.matches(s.as_str()));
        assert!(!p.matches("sk-short"));
        let p = Placeholder::parse("a{rand:8}b{rand:8}c").unwrap();
        let s = Sentinel::generate(&p).unwrap();
        assert_eq!(s.as_str().len(), 19);
        assert!(p.matches(s.as_str()) && s.as_str().ends_with('c'));
    }

    #[test]
    fn bad_patterns() {
        for bad in [
            "",
            "sk-",
            "{rand:8}",
            "sk {rand}",
            "{rnd}",
            "{rand",
            "x}{rand}",
            "{rand:0}{rand}",
            "{rand:999}",
            "{rand:-1}",
            "tök{rand}",
        ] {
            assert!(Placeholder::parse(bad).is_err(), "{bad}");
        }
        assert!(Placeholder::parse(&format!("{}{{rand}}", "x".repeat(600))).is_err());
    }

    #[test]
    fn random_alnum_is_alnum() {
        let s = random_alnum(500).unwrap();
        assert_eq!(s.len(), 500);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
