//! `sbx policy log`: the request log of one or every sandbox, from the JSON-lines files the
//! supervisors write (`D/sandboxes/<name>/policy.log`, sbx-net's `JsonLinesLog`).
//!
//! Default output is one row per destination (sandbox, type, host, port, kind, rule,
//! decision) with a count and the last time, like Docker's tables; `--requests` is one row
//! per record; `--json` passes the records through as JSON lines. `-f` follows the files by
//! polling: it waits for files that do not exist yet, notices new sandboxes, and starts over
//! when a file is truncated or replaced. Unreadable lines are skipped and counted, never fatal.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use sbx_net::{LogRecord, Reason, Verdict};
use serde::Deserialize;

use crate::exit::ExitStatus;
use crate::policy_store as store;

/// Help text of `sbx policy log`.
pub const HELP: &str = "\
Times are UTC. BYTES is sent/received. RULE is the rule that decided, or the reason when none
did (default-deny, private-address, ...). --limit applies after --blocked. With -f, the last 20
records (or --limit) are shown, then new ones as they arrive, one per line, until Ctrl-C.

Examples:
  sbx policy log                          # every sandbox, one row per destination
  sbx policy log my-sandbox --blocked     # what was refused
  sbx policy log my-sandbox --requests --limit 50
  sbx policy log -f                       # watch all sandboxes
  sbx policy log --json | jq .host";

/// Arguments of `sbx policy log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only this sandbox (default: all).
    #[arg(value_name = "SANDBOX")]
    pub sandbox: Option<String>,
    /// Print the records as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Only the last N records.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Only blocked requests and connections.
    #[arg(long)]
    pub blocked: bool,
    /// Keep printing new records as they are written (Ctrl-C stops).
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// One row per request or connection instead of one per destination.
    #[arg(long)]
    pub requests: bool,
}

/// One record read from a log: the parsed record, the line as written, and the fields this
/// reader knows that older sbx-net versions did not write.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record.
    pub record: LogRecord,
    /// The JSON line, as written.
    pub line: String,
    /// How many flows the record stands for (repeats are counted into one record).
    pub count: u64,
    /// Transport of a dropped `network` flow (`udp`, `icmp`, ...).
    pub protocol: Option<String>,
}

#[derive(Deserialize)]
struct Extra {
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    protocol: Option<String>,
}

impl Entry {
    /// Parses one JSON line; `None` when it is not a record.
    pub fn parse(line: &str) -> Option<Entry> {
        let record: LogRecord = serde_json::from_str(line).ok()?;
        let extra: Extra = serde_json::from_str(line).ok()?;
        Some(Entry {
            record,
            line: line.to_owned(),
            count: extra.count.unwrap_or(1).max(1),
            protocol: extra.protocol,
        })
    }

    fn blocked(&self) -> bool {
        self.record.decision == Verdict::Deny
    }
}

/// A log file being read incrementally.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
    partial: Vec<u8>,
    /// Lines that were not records, so far.
    pub corrupt: usize,
}

impl Source {
    /// A source that starts at the beginning of `path` (which may not exist yet).
    pub fn new(path: PathBuf) -> Source {
        Source {
            path,
            offset: 0,
            inode: None,
            partial: Vec::new(),
            corrupt: 0,
        }
    }

    /// Reads whatever was appended since the last call. A missing file is empty; a file
    /// that shrank or was replaced is read again from the start. A last line without its
    /// newline waits for the next call (the writer may be in the middle of it).
    pub fn read_new(&mut self) -> anyhow::Result<Vec<Entry>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot read {}", self.path.display()))
                )
            }
        };
        let meta = file.metadata()?;
        if self.inode.is_some_and(|i| i != meta.ino()) || meta.len() < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        self.inode = Some(meta.ino());
        if meta.len() == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        // Bounded per call so a huge log is read in pieces while following.
        let n = (&mut file).take(64 << 20).read_to_end(&mut buf)?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        let mut out = Vec::new();
        for line in complete.split(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(line);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            match Entry::parse(line) {
                Some(e) => out.push(e),
                None => self.corrupt += 1,
            }
        }
        Ok(out)
    }

    /// Reads until the end of the file.
    pub fn read_to_end(&mut self) -> anyhow::Result<Vec<Entry>> {
        let mut all = Vec::new();
        loop {
            let batch = self.read_new()?;
            let before = self.offset;
            all.extend(batch);
            if self.offset == before
                || std::fs::metadata(&self.path).map_or(true, |m| m.len() <= self.offset)
            {
                return Ok(all);
            }
        }
    }
}

/// `D/sandboxes/<name>/policy.log`.
pub fn log_path(data_dir: &Path, sandbox: &str) -> PathBuf {
    store::sandbox_dir(data_dir, sandbox).join("policy.log")
}

/// Sandboxes that have a log or a config, sorted.
fn logged_sandboxes(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("sandboxes")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let p = e.path();
            p.join("policy.log").is_file() || p.join("sandbox.json").is_file()
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| store::validate_sandbox_name(n).is_ok())
        .collect();
    names.sort();
    names
}

/// Run `sbx policy log`.
pub fn run(data_dir: &Path, a: LogArgs) -> anyhow::Result<ExitStatus> {
    check_args(&a)?;
    if let Some(s) = &a.sandbox {
        store::validate_sandbox_name(s)?;
        if !log_path(data_dir, s).is_file() {
            store::require_sandbox(data_dir, s)?;
        }
    }
    show(data_dir, &a)
}

/// True when writing failed because the reader went away (`sbx ... | head`).
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn show(data_dir: &Path, a: &LogArgs) -> anyhow::Result<ExitStatus> {
    let names = match &a.sandbox {
        Some(s) => vec![s.clone()],
        None => logged_sandboxes(data_dir),
    };
    let mut sources: Vec<Source> = names
        .iter()
        .map(|n| Source::new(log_path(data_dir, n)))
        .collect();
    let mut entries = Vec::new();
    for s in &mut sources {
        entries.extend(s.read_to_end()?);
    }
    sort_by_time(&mut entries);
    if a.blocked {
        entries.retain(Entry::blocked);
    }
    let limit = a.limit.or(a.follow.then_some(20));
    if let Some(n) = limit {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    let mut warned: HashMap<PathBuf, usize> = HashMap::new();
    warn_corrupt(&sources, &mut warned);

    let mut out = std::io::stdout().lock();
    if a.json {
        for e in &entries {
            writeln!(out, "{}", e.line)?;
        }
    } else if a.requests || a.follow {
        let mut table = vec![REQUEST_HEADER.iter().map(|s| s.to_string()).collect()];
        table.extend(entries.iter().map(request_row));
        if !a.follow && entries.is_empty() {
            note_empty(data_dir, a)?;
        } else if a.follow {
            // Widths for rows not seen yet: the header's, at least.
            write!(out, "{}", render_fixed(&table, FOLLOW_WIDTHS))?;
        } else {
            write!(out, "{}", render_table(&table))?;
        }
    } else if entries.is_empty() {
        note_empty(data_dir, a)?;
    } else {
        write!(out, "{}", render_table(&aggregate(&entries)))?;
    }
    out.flush()?;
    drop(out);
    if a.follow {
        follow(data_dir, a, sources, warned)?;
    }
    Ok(ExitStatus::Success)
}

fn note_empty(data_dir: &Path, a: &LogArgs) -> anyhow::Result<()> {
    let what = if a.blocked {
        "no blocked requests"
    } else {
        "no requests"
    };
    let whose = match &a.sandbox {
        Some(s) => format!(" in {}", log_path(data_dir, s).display()),
        None => " from any sandbox".to_owned(),
    };
    writeln!(std::io::stderr().lock(), "sbx: {what} logged{whose}")?;
    Ok(())
}

fn warn_corrupt(sources: &[Source], warned: &mut HashMap<PathBuf, usize>) {
    for s in sources {
        let before = warned.get(&s.path).copied().unwrap_or(0);
        if s.corrupt > before {
            let n = s.corrupt - before;
            let lines = if n == 1 { "line" } else { "lines" };
            let _ = writeln!(
                std::io::stderr().lock(),
                "sbx: warning: skipped {n} unreadable {lines} in {}",
                s.path.display()
            );
            warned.insert(s.path.clone(), s.corrupt);
        }
    }
}

fn follow(
    data_dir: &Path,
    a: &LogArgs,
    mut sources: Vec<Source>,
    mut warned: HashMap<PathBuf, usize>,
) -> anyhow::Result<()> {
    let mut tick = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        tick += 1;
        if a.sandbox.is_none() && tick % 5 == 0 {
            for name in logged_sandboxes(data_dir) {
                let path = log_path(data_dir, &name);
                if !sources.iter().any(|s| s.path == path) {
                    sources.push(Source::new(path));
                }
            }
        }
        let mut batch = Vec::new();
        for s in &mut sources {
            batch.extend(s.read_new()?);
        }
        warn_corrupt(&sources, &mut warned);
        if batch.is_empty() {
            continue;
        }
        sort_by_time(&mut batch);
        if a.blocked {
            batch.retain(Entry::blocked);
        }
        let mut out = std::io::stdout().lock();
        for e in &batch {
            if a.json {
                writeln!(out, "{}", e.line)?;
            } else {
                write!(out, "{}", render_fixed(&[request_row(e)], FOLLOW_WIDTHS))?;
            }
        }
        out.flush()?;
    }
}

/// Sorts by time (RFC 3339 UTC, fractions of any length), keeping file order for ties.
fn sort_by_time(entries: &mut [Entry]) {
    entries.sort_by_cached_key(|e| time_key(&e.record.time));
}

fn time_key(t: &str) -> String {
    // `2026-12-03T19:24:53.5Z` -> `2026-12-03T19:24:53.500000000`; other shapes as they are.
    let t = t.trim_end_matches('Z');
    match t.split_once('.') {
        Some((secs, frac)) if frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{secs}.{frac:0<9}")
        }
        Some(_) => t.to_owned(),
        None if t.len() == 19 => format!("{t}.000000000"),
        None => t.to_owned(),
    }
}

/// `2026-12-03 19:24:53` from an RFC 3339 UTC time.
fn short_time(t: &str) -> String {
    let b = t.as_bytes();
    if b.len() >= 19 && b[10] == b'T' && t.is_char_boundary(19) {
        format!("{} {}", &t[..10], &t[11..19])
    } else {
        t.to_owned()
    }
}

fn type_name(e: &Entry) -> String {
    let t = serde_json::to_value(e.record.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    match &e.protocol {
        Some(p) => format!("{t}/{p}"),
        None => t,
    }
}

fn kind_name(e: &Entry) -> String {
    serde_json::to_value(e.record.proxy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn decision(e: &Entry) -> &'static str {
    match e.record.decision {
        Verdict::Allow => "allowed",
        Verdict::Deny => "blocked",
    }
}

/// The rule that decided; the reason when no rule did or when something after the rule
/// (upstream, TLS, credentials) decided.
fn rule_text(e: &Entry) -> String {
    let reason = e.record.reason;
    match (&e.record.rule, reason) {
        (Some(r), Reason::DomainAllowed | Reason::DomainBlocked) => r.clone(),
        (Some(r), _) => format!("{r} ({reason})"),
        (None, _) => reason.to_string(),
    }
}

fn host_port(e: &Entry) -> String {
    let h = &e.record.host;
    let h = if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.clone()
    };
    format!("{h}:{}", e.record.port)
}

fn or_dash(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 3).collect();
    out.push_str("...");
    out
}

/// `1.5K`, `12M`: sizes for a narrow column.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

const REQUEST_HEADER: [&str; 12] = [
    "TIME",
    "SANDBOX",
    "TYPE",
    "METHOD",
    "HOST:PORT",
    "PATH",
    "KIND",
    "DECISION",
    "RULE",
    "STATUS",
    "BYTES",
    "CREDENTIAL",
];

const FOLLOW_WIDTHS: &[usize] = &[19, 12, 7, 6, 28, 24, 11, 8, 36, 6, 11, 10];

fn request_row(e: &Entry) -> Vec<String> {
    let r = &e.record;
    let time = if e.count > 1 {
        format!("{} (x{})", short_time(&r.time), e.count)
    } else {
        short_time(&r.time)
    };
    vec![
        time,
        r.sandbox.clone(),
        type_name(e),
        or_dash(r.method.clone()),
        host_port(e),
        or_dash(r.path.as_deref().map(|p| shorten(p, 48))),
        kind_name(e),
        decision(e).to_owned(),
        rule_text(e),
        or_dash(r.status.map(|s| s.to_string())),
        format!("{}/{}", human_bytes(r.bytes_up), human_bytes(r.bytes_down)),
        if r.credentials.is_empty() {
            "-".into()
        } else {
            r.credentials.join(",")
        },
    ]
}

/// One row per destination and outcome, in order of the last record.
fn aggregate(entries: &[Entry]) -> Vec<Vec<String>> {
    struct Group {
        key: Vec<String>,
        count: u64,
        last: String,
        last_key: String,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Vec<String>, usize> = HashMap::new();
    for e in entries {
        let r = &e.record;
        let key = vec![
            r.sandbox.clone(),
            type_name(e),
            r.host.clone(),
            r.port.to_string(),
            kind_name(e),
            rule_text(e),
            decision(e).to_owned(),
        ];
        let tk = time_key(&r.time);
        match index.get(&key) {
            Some(&i) => {
                let g = &mut groups[i];
                g.count += e.count;
                if tk >= g.last_key {
                    g.last_key = tk;
                    g.last = r.time.clone();
                }
            }
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(Group {
                    key,
                    count: e.count,
                    last: r.time.clone(),
                    last_key: tk,
                });
            }
        }
    }
    groups.sort_by(|a, b| a.last_key.cmp(&b.last_key));
    let mut table = vec![[
        "SANDBOX", "TYPE", "HOST", "PORT", "KIND", "RULE", "DECISION", "COUNT", "LAST",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for g in groups {
        let mut row = g.key;
        row.push(g.count.to_string());
        row.push(short_time(&g.last));
        table.push(row);
    }
    table
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub(crate) fn render_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    render_fixed(rows, &widths)
}

fn render_fixed(rows: &[Vec<String>], widths: &[usize]) -> String {
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                line.push_str(cell);
                let pad = w.saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Fails early for flags that do not combine.
pub fn check_args(a: &LogArgs) -> anyhow::Result<()> {
    if a.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(time: &str, host: &str, decision: &str, extra: &str) -> String {
        format!(
            r#"{{"time":"{time}","sandbox":"s","type":"http","host":"{host}","port":443,"proxy":"forward","decision":"{decision}","reason":"default-deny","bytes_up":0,"bytes_down":0{extra}}}"#
        )
    }

    #[test]
    fn incremental_reads_handle_partial_lines_truncation_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.log");
        let mut src = Source::new(path.clone());
        assert!(src.read_new().unwrap().is_empty(), "missing file is empty");

        let a = line("2026-01-01T00:00:01Z", "a.example", "deny", "");
        let b = line("2026-01-01T00:00:02Z", "b.example", "allow", "");
        std::fs::write(&path, format!("{a}\n{}", &b[..10])).unwrap();
        let got = src.read_new().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].record.host, "a.example");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(f, "{}\nnot json\n", &b[10..]).unwrap();
        let got = src.read_new().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].record.host, "b.example");
        assert_eq!(src.corrupt, 1);

        // Truncated and rewritten shorter: read from the start again.
        std::fs::write(&path, format!("{a}\n")).unwrap();
        let got = src.read_new().unwrap();
        assert_eq!(got.len(), 1);
        // Replaced by a new file of any length.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, format!("{b}\n{a}\n{b}\n")).unwrap();
        assert_eq!(src.read_new().unwrap().len(), 3);
    }

    #[test]
    fn count_and_protocol_are_read_when_present() {
        let e = Entry::parse(&line(
            "2026-01-01T00:00:01Z",
            "10.0.0.1",
            "deny",
            r#","count":7,"protocol":"udp""#,
        ))
        .unwrap();
        assert_eq!(e.count, 7);
        assert_eq!(type_name(&e), "http/udp");
        let rows = aggregate(&[e.clone(), e]);
        assert_eq!(rows[1][7], "14");
    }

    #[test]
    fn times_sort_with_fractions_of_any_length() {
        let mut v = [
            "2026-01-01T00:00:01.5Z",
            "2026-01-01T00:00:01Z",
            "2026-01-01T00:00:01.25Z",
        ];
        v.sort_by_key(|t| time_key(t));
        assert_eq!(
            v,
            [
                "2026-01-01T00:00:01Z",
                "2026-01-01T00:00:01.25Z",
                "2026-01-01T00:00:01.5Z"
            ]
        );
        assert_eq!(
            short_time("2026-01-01T10:11:12.123Z"),
            "2026-01-01 10:11:12"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(20 << 20), "20M");
    }
}
