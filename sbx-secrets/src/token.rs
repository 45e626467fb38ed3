//! Checking tokens before they are stored, and masking them for display.

use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// Longest token accepted (the kernel keyring's limit for a user key is 32767 bytes).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Tokens shorter than this are masked completely.
pub const MASK_MIN_LEN: usize = 24;

/// Checks a token: not empty, ASCII, no control characters (newlines included), no leading or
/// trailing whitespace, at most [`MAX_TOKEN_LEN`] bytes. Tokens end up in HTTP header values,
/// which cannot carry the rest. Errors never include the token.
pub fn validate_token(token: &SecretString) -> Result<()> {
    let t = token.expose_secret();
    if t.is_empty() {
        return Err(Error::EmptyToken);
    }
    if t.chars().any(char::is_control) {
        return Err(Error::TokenControlChar);
    }
    if !t.is_ascii() {
        return Err(Error::TokenNotAscii);
    }
    if t.starts_with(' ') || t.ends_with(' ') {
        return Err(Error::TokenWhitespace);
    }
    if t.len() > MAX_TOKEN_LEN {
        return Err(Error::TokenTooLong { max: MAX_TOKEN_LEN });
    }
    Ok(())
}

/// A token as read from a pipe: one trailing `\n` or `\r\n` (what `echo` adds) is dropped;
/// anything else stays and is judged by [`validate_token`].
pub fn token_from_input(mut raw: String) -> SecretString {
    if raw.ends_with('\n') {
        raw.pop();
        if raw.ends_with('\r') {
            raw.pop();
        }
    }
    SecretString::from(raw)
}

/// The masked form of a token for listings: the first 4 and last 4 characters of tokens of at
/// least [`MASK_MIN_LEN`] characters (`ghp_…wxyz`), and `****` (nothing, not even the length)
/// for shorter ones.
pub fn mask(token: &SecretString) -> String {
    let t = token.expose_secret();
    let n = t.chars().count();
    if n < MASK_MIN_LEN {
        return "****".into();
    }
    let head: String = t.chars().take(4).collect();
    let tail: String = t.chars().skip(n - 4).collect();
    format!("{head}...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v)
    }

    #[test]
    fn masking() {
        assert_eq!(
            mask(&s("ghp_abcdefghijklmnopqrstuvwxyz0123456789")),
            "ghp_...6789"
        );
        assert_eq!(mask(&s("short")), "****");
        assert_eq!(mask(&s("")), "****");
        assert_eq!(mask(&s(&"x".repeat(MASK_MIN_LEN - 1))), "****");
        let at = "a".repeat(MASK_MIN_LEN - 4) + "WXYZ";
        assert_eq!(mask(&s(&at)), "aaaa...WXYZ");
    }

    #[test]
    fn token_checks() {
        assert!(validate_token(&s("sk-abc")).is_ok());
        assert!(validate_token(&s("a b")).is_ok());
        assert!(matches!(validate_token(&s("")), Err(Error::EmptyToken)));
        for bad in ["a\nb", "ab\n", "a\rb", "a\tb", "a\u{7f}", "a\0"] {
            assert!(
                matches!(validate_token(&s(bad)), Err(Error::TokenControlChar)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            validate_token(&s("tök")),
            Err(Error::TokenNotAscii)
        ));
        assert!(matches!(
            validate_token(&s(" a")),
            Err(Error::TokenWhitespace)
        ));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            validate_token(&s(&long)),
            Err(Error::TokenTooLong { .. })
        ));
    }

    #[test]
    fn pipe_input_drops_one_newline() {
        assert_eq!(token_from_input("abc\n".into()).expose_secret(), "abc");
        assert_eq!(token_from_input("abc\r\n".into()).expose_secret(), "abc");
        assert_eq!(token_from_input("abc\n\n".into()).expose_secret(), "abc\n");
        assert_eq!(token_from_input("abc".into()).expose_secret(), "abc");
    }
}
