//! "Did you mean ...?" for misspelled field names and values.

/// The candidate closest to `input`, if it is close enough to be a plausible typo: same text
/// ignoring case, `_` and `-` (so `allowed_domains` finds `allowedDomains`), or within an edit
/// distance of about a third of the length.
pub(crate) fn closest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let folded = fold(input);
    if let Some(c) = candidates.iter().find(|c| fold(c) == folded) {
        return Some(c);
    }
    let limit = (input.chars().count() / 3).clamp(1, 4);
    candidates
        .iter()
        .map(|c| (levenshtein(&folded, &fold(c)), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Edit distance (insertions, deletions, substitutions and adjacent swaps), in characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Field names are short; long inputs cannot be typos of them.
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &[
        "allowedDomains",
        "deniedDomains",
        "bypassDomains",
        "serviceDomains",
    ];

    #[test]
    fn finds_typos_and_spellings() {
        assert_eq!(closest("alowedDomains", FIELDS), Some("allowedDomains"));
        assert_eq!(closest("allowed_domains", FIELDS), Some("allowedDomains"));
        assert_eq!(closest("AllowedDomains", FIELDS), Some("allowedDomains"));
        assert_eq!(closest("serivceDomains", FIELDS), Some("serviceDomains"));
        assert_eq!(closest("agnet", &["agent", "mixin"]), Some("agent"));
    }

    #[test]
    fn ignores_unrelated_names() {
        assert_eq!(closest("ports", FIELDS), None);
        assert_eq!(closest("x", &["agent", "mixin"]), None);
    }

    #[test]
    fn distance() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("ab", "ba"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
    }
}
