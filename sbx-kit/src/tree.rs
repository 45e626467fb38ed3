//! A YAML document as a tree of nodes that remember where they came from.
//!
//! serde-saphyr parses and enforces the budgets; the tree keeps every mapping entry in order
//! (duplicates included, so the validator can name both places) and each node's location, so
//! the validator can report all problems at once with file, line, column and field path.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Budget, DuplicateKeyPolicy, Spanned};

/// A position in the source: 1-based line and column, and the byte range when known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: u64,
    pub column: u64,
    byte_offset: Option<u64>,
    byte_len: Option<u64>,
}

impl Pos {
    /// The start of the document.
    pub fn start() -> Pos {
        Pos {
            line: 1,
            column: 1,
            byte_offset: None,
            byte_len: None,
        }
    }
}

impl From<serde_saphyr::Location> for Pos {
    fn from(l: serde_saphyr::Location) -> Self {
        let span = l.span();
        Pos {
            line: l.line(),
            column: l.column(),
            byte_offset: span.byte_offset(),
            byte_len: span.byte_len(),
        }
    }
}

/// One YAML node.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub value: Value,
    /// Where the node is used (for an alias: the `*alias`).
    pub pos: Pos,
    /// Where its text is (for an alias: the anchored definition).
    defined: Pos,
}

/// What a node holds. Numbers and booleans keep only their kind: their spelling is read back
/// from the source (see [`Node::text`]) so that `mode: 0644` stays `0644`.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int,
    Float,
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The node's scalar text: the string itself, or the source spelling of a number or
    /// boolean. `None` for null, sequences and mappings.
    pub fn text<'a>(&'a self, src: &'a str) -> Option<Cow<'a, str>> {
        match &self.value {
            Value::Str(s) => Some(Cow::Borrowed(s)),
            Value::Int | Value::Float | Value::Bool(_) => {
                let start = usize::try_from(self.defined.byte_offset?).ok()?;
                let len = usize::try_from(self.defined.byte_len?).ok()?;
                let raw = src.get(start..start.checked_add(len)?)?;
                Some(Cow::Borrowed(raw.trim()))
            }
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// A short name of the node's type for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int => "a number",
            Value::Float => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<Value> = Spanned::deserialize(d)?;
        Ok(Node {
            value: s.value,
            pos: s.referenced.into(),
            defined: s.defined.into(),
        })
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Int)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Int)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Value, E> {
        Ok(Value::Int)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Value, E> {
        Ok(Value::Int)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Float)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            out.push(n);
        }
        Ok(Value::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            out.push((k, v));
        }
        Ok(Value::Map(out))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// Limits for one `spec.yaml`: generous for any real kit, small enough that an alias bomb or a
/// deeply nested document fails in milliseconds.
fn budget() -> Option<Budget> {
    serde_saphyr::budget! {
        max_events: 100_000,
        max_aliases: 1_000,
        max_anchors: 1_000,
        max_recorded_anchor_events: 10_000,
        max_recorded_anchor_bytes: 1 << 20,
        max_depth: 32,
        max_documents: 1,
        max_nodes: 20_000,
        max_total_scalar_bytes: 2 << 20,
        max_merge_keys: 100,
    }
}

/// "too many aliases" from `Aliases { aliases: 1001 }`: the breached limit in words.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    let debug = format!("{breach:?}");
    let name: String = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .chars()
        .flat_map(|c| {
            let sep = c.is_ascii_uppercase().then_some(' ');
            sep.into_iter()
                .chain(std::iter::once(c.to_ascii_lowercase()))
        })
        .collect();
    let name = name.trim();
    match name {
        "documents" => {
            "a spec.yaml holds exactly one YAML document; remove the `---` separator and what follows"
                .to_owned()
        }
        "depth" => "the document is nested too deeply for a spec.yaml".to_owned(),
        n if n.contains("alias") || n.contains("anchor") || n.contains("merge") => format!(
            "the document is too large or too complex ({n} over the limit; anchors and aliases are limited to stop alias bombs)"
        ),
        n => format!("the document is too large or too complex ({n} over the limit for a spec.yaml)"),
    }
}

/// A parse failure: where and what.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub pos: Option<Pos>,
    pub message: String,
}

/// Parses one YAML document into a tree.
pub(crate) fn parse(src: &str) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        budget: budget(),
        strict_booleans: true,
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        reject_unsupported_tags: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Node>(src, options).map_err(|e| {
        use serde_saphyr::MessageFormatter;
        let e = e.without_snippet();
        let mut inner = e;
        while let serde_saphyr::Error::AliasError { error, .. } = inner {
            inner = error.without_snippet();
        }
        let message = match inner {
            serde_saphyr::Error::Budget { breach, .. } => budget_message(breach),
            other => {
                let m = serde_saphyr::UserMessageFormatter.format_message(other);
                if m.contains("tab") {
                    format!("{m} (YAML indents with spaces, not tabs)")
                } else {
                    m.into_owned()
                }
            }
        };
        let message: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        SyntaxError {
            pos: e.location().filter(|l| l.line() > 0).map(Pos::from),
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: &Node) -> &[(Node, Node)] {
        match &n.value {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn keeps_number_spelling_and_positions() {
        let src = "a: 0644\nb: &x 1.50\nc: *x\nd: true\ne: \"s\"\n";
        let doc = parse(src).unwrap();
        let m = map(&doc);
        let texts: Vec<_> = m.iter().map(|(_, v)| v.text(src).unwrap()).collect();
        assert_eq!(texts, ["0644", "1.50", "1.50", "true", "s"]);
        assert_eq!((m[2].1.pos.line, m[2].1.pos.column), (3, 4));
        assert_eq!((m[1].0.pos.line, m[1].0.pos.column), (2, 1));
    }

    #[test]
    fn duplicate_keys_reach_the_validator() {
        let doc = parse("a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(map(&doc).len(), 3);
    }

    #[test]
    fn yaml_1_1_booleans_are_strings() {
        let doc = parse("a: no\n").unwrap();
        assert!(matches!(&map(&doc)[0].1.value, Value::Str(s) if s == "no"));
    }

    #[test]
    fn alias_bomb_fails_fast() {
        let mut src = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            src.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(",")
            ));
        }
        let start = std::time::Instant::now();
        let err = parse(&src).unwrap_err();
        assert!(err.message.contains("too complex"), "{}", err.message);
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("a: [1\n").unwrap_err();
        let pos = err.pos.unwrap();
        assert_eq!((pos.line, pos.column), (1, 4));
    }

    #[test]
    fn unknown_tags_are_rejected() {
        assert!(parse("a: !custom x\n").is_err());
    }
}
