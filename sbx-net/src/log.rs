//! The policy log: one record per HTTP request, per tunnel or flow, and per guest DNS query.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::policy::{Reason, Verdict};

/// Which path a flow took through the network stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProxyKind {
    /// Explicit proxy, TLS terminated and inspected (credential injection possible).
    Forward,
    /// Explicit proxy, spliced without inspection.
    ForwardBypass,
    /// Intercepted transparently by the userspace stack.
    Transparent,
    /// A non-HTTP network flow.
    Network,
}

/// What a record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RecordType {
    /// One HTTP request.
    Http,
    /// One connection or tunnel.
    Network,
    /// One DNS query.
    Dns,
}

/// One policy-log record. Never holds a secret value: `credential` is the credential's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogRecord {
    /// RFC 3339 UTC time the request or connection started.
    pub time: String,
    /// Sandbox name.
    pub sandbox: String,
    /// Request, connection or DNS query.
    #[serde(rename = "type")]
    pub kind: RecordType,
    /// Destination host (normalised).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// HTTP method (requests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP path and query (requests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path through the proxy.
    pub proxy: ProxyKind,
    /// The rule that decided, as `scope:action resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Allowed or blocked.
    pub decision: Verdict,
    /// Why.
    pub reason: Reason,
    /// HTTP status returned to the client (for tunnels: the CONNECT response status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Body bytes (HTTP) or tunnel bytes from the sandbox to upstream.
    pub bytes_up: u64,
    /// Body bytes (HTTP) or tunnel bytes from upstream to the sandbox.
    pub bytes_down: u64,
    /// Names of credentials injected into this request (never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
    /// TLS SNI the client sent, when seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Transport of a `network` record the network stack dropped itself (`udp`, `icmp`,
    /// `ipv6`, `tcp`, ...); absent for proxied flows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// How many flows or packets this record stands for, when more than one: repeats of a
    /// blocked flow are rate-limited and counted into the next record for the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl LogRecord {
    pub(crate) fn new(sandbox: &str, kind: RecordType, proxy: ProxyKind) -> LogRecord {
        LogRecord {
            time: now_rfc3339(),
            sandbox: sandbox.to_string(),
            kind,
            host: String::new(),
            port: 0,
            method: None,
            path: None,
            proxy,
            rule: None,
            decision: Verdict::Deny,
            reason: Reason::BadRequest,
            status: None,
            bytes_up: 0,
            bytes_down: 0,
            credentials: Vec::new(),
            sni: None,
            protocol: None,
            count: None,
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Where policy-log records go. Implementations must be cheap: `record` is called on the
/// proxy's tasks.
pub trait PolicyLog: Send + Sync + 'static {
    /// Stores one record.
    fn record(&self, record: &LogRecord);
}

/// The durable default: one JSON object per line, appended with a single `write` per record
/// to a file opened `O_APPEND`, so another process can `tail -f` or read it while the proxy
/// writes and never sees a torn line from this writer.
pub struct JsonLinesLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl fmt::Debug for JsonLinesLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesLog")
            .field("path", &self.path)
            .finish()
    }
}

impl JsonLinesLog {
    /// Opens (creating if needed) the log file for appending.
    pub fn open(path: impl AsRef<Path>) -> Result<JsonLinesLog> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(JsonLinesLog {
            path,
            file: Mutex::new(file),
        })
    }

    /// Reads every record in a log file (skipping a partial last line).
    pub fn read_all(path: impl AsRef<Path>) -> Result<Vec<LogRecord>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl PolicyLog for JsonLinesLog {
    fn record(&self, record: &LogRecord) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(error = %e, path = %self.path.display(), "policy log write failed");
        }
    }
}

/// An in-memory log, for tests and embedders that forward records elsewhere.
#[derive(Debug, Default)]
pub struct MemoryLog {
    records: Mutex<Vec<LogRecord>>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// A copy of every record so far.
    pub fn records(&self) -> Vec<LogRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl PolicyLog for MemoryLog {
    fn record(&self, record: &LogRecord) {
        if let Ok(mut r) = self.records.lock() {
            r.push(record.clone());
        }
    }
}

/// Discards records.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLog;

impl PolicyLog for NoLog {
    fn record(&self, _: &LogRecord) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_readable_while_open() {
        let path = std::env::temp_dir().join(format!("sbx-net-log-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = JsonLinesLog::open(&path).unwrap();
        let mut rec = LogRecord::new("s1", RecordType::Http, ProxyKind::Forward);
        rec.host = "example.com".into();
        rec.port = 443;
        rec.method = Some("GET".into());
        rec.path = Some("/".into());
        rec.decision = Verdict::Allow;
        rec.reason = Reason::DomainAllowed;
        rec.credentials = vec!["github".into()];
        log.record(&rec);
        log.record(&rec);
        let back = JsonLinesLog::read_all(&path).unwrap();
        assert_eq!(back, vec![rec.clone(), rec]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"proxy\":\"forward\""));
        assert!(text.contains("\"reason\":\"domain-allowed\""));
        assert!(text.contains("\"type\":\"http\""));
        std::fs::remove_file(&path).unwrap();
    }
}
