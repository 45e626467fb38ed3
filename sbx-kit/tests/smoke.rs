//! A deterministic stand-in for the `kit_spec` fuzz target that runs in every `cargo test`:
//! thousands of mutated and generated inputs, none of which may panic or take long.

use std::time::{Duration, Instant};

use sbx_kit::{merge, parse_spec, template, Kit, TEMPLATE_NAMES};

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TOKENS: &[&str] = &[
    ":",
    " ",
    "\n",
    "  ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "&a ",
    "*a",
    "<<: ",
    "!!str ",
    "!x ",
    "#",
    "|",
    ">",
    "---\n",
    "...\n",
    "\t",
    "\\",
    "*.",
    "**",
    ":443",
    "%",
    "?",
    "~",
    "null",
    "true",
    "yes",
    "0644",
    "1e999",
    "\u{feff}",
    "é",
    "\0",
    "schemaVersion",
    "kind",
    "agent",
    "mixin",
    "network",
    "allowedDomains",
    "serviceDomains",
    "credentials",
    "env",
    "commands",
    "files",
    "path",
    "mode",
];

fn seeds() -> Vec<String> {
    let mut s: Vec<String> = TEMPLATE_NAMES
        .iter()
        .map(|n| sbx_kit::template_source(n).unwrap().to_owned())
        .collect();
    for kind in ["valid", "invalid"] {
        for e in std::fs::read_dir(format!("tests/fixtures/{kind}")).unwrap() {
            let p = e.unwrap().path().join("spec.yaml");
            s.push(std::fs::read_to_string(p).unwrap());
        }
    }
    s
}

fn mutate(rng: &mut Rng, seeds: &[String]) -> String {
    let mut s: Vec<char> = rng.pick(seeds).chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(s.len() + 1);
        match rng.below(6) {
            0 if !s.is_empty() => {
                let end = (at + 1 + rng.below(20)).min(s.len());
                s.drain(at.min(end)..end);
            }
            1 => s.splice(at..at, rng.pick(TOKENS).chars()).for_each(drop),
            2 if at < s.len() => s[at] = char::from(b' ' + (rng.next() % 95) as u8),
            3 => {
                // Splice a piece of another seed in.
                let other: Vec<char> = rng.pick(seeds).chars().collect();
                let from = rng.below(other.len());
                let to = (from + rng.below(80)).min(other.len());
                s.splice(at..at, other[from..to].iter().copied())
                    .for_each(drop);
            }
            4 => {
                // Duplicate a line (duplicate keys, repeated list items).
                let text: String = s.iter().collect();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    let mut out = lines.clone();
                    out.insert(i, lines[i]);
                    s = out.join("\n").chars().collect();
                }
            }
            _ => s.truncate(at),
        }
    }
    s.into_iter().collect()
}

fn generated(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(60) {
        s.push_str(rng.pick::<&str>(TOKENS));
    }
    s
}

/// Parses `src` and checks the result is coherent; returns whether it validated.
fn check(src: &str, base: &Kit) -> bool {
    match parse_spec(src, "spec.yaml") {
        Ok(spec) => {
            // Whatever validates must also be a kit that merges without panicking.
            let kit = Kit::parse(src, "spec.yaml").expect("parse_spec and Kit::parse agree");
            assert_eq!(kit.spec(), &spec);
            if kit.kind() == sbx_kit::Kind::Mixin {
                let _ = merge(base, &[kit]);
            }
            true
        }
        Err(e) => {
            let diags = e.diagnostics();
            assert!(!diags.is_empty(), "{e}");
            for d in diags {
                assert!(d.line >= 1 && d.column >= 1, "{d}");
                let _ = d.render();
            }
            false
        }
    }
}

#[test]
fn mutated_and_generated_inputs_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x5bd1_e995_9e37_79b9);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut valid = 0;
    let base = template("copilot").unwrap();
    // About 6 ms per input in a debug build, 0.3 ms in release.
    for i in 0..1500 {
        let src = if i % 4 == 3 {
            generated(&mut rng)
        } else {
            mutate(&mut rng, &seeds)
        };
        let t = Instant::now();
        valid += usize::from(check(&src, &base));
        slowest = slowest.max(t.elapsed());
    }
    // The corpus must exercise both outcomes, or the mutations are too weak or too strong.
    assert!(valid > 30 && valid < 1400, "valid: {valid}");
    // Generous bounds: CI shares two cores among several builds.
    assert!(
        slowest < Duration::from_secs(5),
        "slowest input took {slowest:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn hostile_inputs_fail_fast() {
    let deep = "a: ".to_owned() + &"[".repeat(10_000);
    let wide = format!(
        "schemaVersion: \"1\"\nkind: mixin\nname: x\nnetwork:\n  allowedDomains: [{}]\n",
        vec!["a.com"; 21_000].join(",")
    );
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for (i, n) in ["b", "c", "d", "e", "f", "g", "h", "i", "j"]
        .iter()
        .enumerate()
    {
        let prev = ["a", "b", "c", "d", "e", "f", "g", "h", "i"][i];
        bomb.push_str(&format!(
            "{n}: &{n} [{}]\n",
            vec![format!("*{prev}"); 10].join(",")
        ));
    }
    let big = "#".repeat(2 << 20);
    for (name, src, why) in [
        ("deep", deep, "recursion limit"),
        ("wide", wide, "too large or too complex"),
        ("bomb", bomb, "too large or too complex"),
        ("big", big, "too large"),
    ] {
        let t = Instant::now();
        let err = parse_spec(&src, "spec.yaml").unwrap_err();
        let text = err
            .diagnostics()
            .first()
            .map(|d| d.message.clone())
            .unwrap_or(err.to_string());
        assert!(text.contains(why), "{name}: {text}");
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{name}: {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn large_valid_kits_validate_and_merge_quickly() {
    let hosts = |prefix: &str| -> String {
        (0..6000)
            .map(|i| format!("{prefix}{i}.example.com"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let src = format!(
        "schemaVersion: \"1\"\nkind: mixin\nname: big\nnetwork:\n  allowedDomains: [{}]\n  deniedDomains: [{}]\n  bypassDomains: [{}]\n",
        hosts("a"),
        hosts("d"),
        hosts("b")
    );
    let t = Instant::now();
    let kit = Kit::parse(&src, "spec.yaml").unwrap();
    let base = template("copilot").unwrap();
    let base_rules =
        base.spec().network.allowed_domains.len() + base.spec().network.service_domains.len();
    let r = merge(&base, &[kit.clone(), kit]).unwrap();
    // The second copy adds nothing: lists dedupe.
    assert_eq!(r.rules.len(), base_rules + 18_000);
    // Quadratic merging would take minutes here; linear takes well under a second in release.
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}
