//! `sbx policy ...` as users run it: rules added and removed through the CLI are exactly what
//! `policy_store::effective_policy` enforces; help, listings and error messages are
//! snapshotted; `policy log` reads real sbx-net `JsonLinesLog` files (tables, filters, a
//! corrupt line, and `-f` following a file that appears, grows and is truncated).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sbx_net::{Host, JsonLinesLog, LogRecord, PolicyLog, Verdict};

struct Env {
    home: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    /// A data directory where `sbx login --policy POLICY` already ran.
    fn new(policy: &str) -> Env {
        let env = Env {
            home: tempfile::tempdir().unwrap(),
        };
        let out = env.run(&["login", "--policy", policy]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        env
    }

    fn d(&self) -> &Path {
        self.home.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sbx"));
        c.args(args)
            .env("SBX_HOME", self.d())
            .env_remove("SBX_LOG")
            .env("NO_COLOR", "1")
            .env("COLUMNS", "100")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        let out = self.cmd(args).output().unwrap();
        let home = self.d().display().to_string();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout)
                .unwrap()
                .replace(&home, "[HOME]"),
            stderr: String::from_utf8(out.stderr)
                .unwrap()
                .replace(&home, "[HOME]"),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out.stdout
    }

    /// A failing command's stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_ne!(out.code, 0, "{args:?} succeeded: {}", out.stdout);
        assert_eq!(out.stdout, "", "{args:?}");
        out.stderr
    }

    /// A sandbox as `sbx create` leaves it (only what the policy code reads).
    fn sandbox(&self, name: &str, agent: &str, kits: &[&Path]) {
        let dir = self.d().join("sandboxes").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let kits: Vec<String> = kits.iter().map(|k| k.display().to_string()).collect();
        let config = serde_json::json!({
            "name": name,
            "agent": agent,
            "kits": kits,
            "workspace": "/tmp/ws",
            "backend": "namespace",
        });
        std::fs::write(dir.join("sandbox.json"), config.to_string()).unwrap();
    }

    fn kit(&self, name: &str, network: &str) -> PathBuf {
        let dir = self.d().join("kits").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("spec.yaml"),
            format!("schemaVersion: \"1\"\nkind: mixin\nname: {name}\nnetwork:\n{network}"),
        )
        .unwrap();
        dir
    }

    fn policy(&self, sandbox: Option<&str>) -> sbx_net::Policy {
        let kit_rules = match sandbox {
            Some(s) => sbx_cli::policy_store::sandbox_kit_rules(self.d(), s).unwrap(),
            None => Vec::new(),
        };
        sbx_cli::policy_store::effective_policy(self.d(), sandbox, &kit_rules).unwrap()
    }
}

fn allowed(p: &sbx_net::Policy, sandbox: &str, host: &str, port: u16) -> bool {
    p.evaluate(sandbox, &Host::parse(host).unwrap(), port)
        .verdict
        == Verdict::Allow
}

#[test]
fn rules_added_on_the_command_line_are_enforced() {
    let env = Env::new("balanced");
    env.sandbox("web", "shell", &[]);
    env.sandbox("api", "shell", &[]);

    let out = env.ok(&[
        "policy",
        "allow",
        "network",
        "web",
        "example.com,*.example.org",
    ]);
    assert_eq!(
        out,
        "allowed example.com for sandbox web\nallowed *.example.org for sandbox web\n"
    );
    let p = env.policy(Some("web"));
    assert!(allowed(&p, "web", "example.com", 443));
    assert!(allowed(&p, "web", "a.b.example.org", 80));
    assert!(
        !allowed(&p, "web", "example.org", 443),
        "wildcard skips the apex"
    );
    assert!(
        !allowed(&p, "web", "www.example.com", 443),
        "exact name only"
    );
    // Another sandbox does not get web's rules.
    assert!(!allowed(
        &env.policy(Some("api")),
        "api",
        "example.com",
        443
    ));

    // A global deny beats the sandbox allow, and says so.
    env.ok(&["policy", "deny", "network", "-g", "example.com"]);
    assert!(!allowed(
        &env.policy(Some("web")),
        "web",
        "example.com",
        443
    ));
    let out = env.run(&["policy", "allow", "network", "web", "example.com"]);
    assert_eq!(out.stdout, "example.com: already allowed for sandbox web\n");
    assert_eq!(
        out.stderr,
        "sbx: note: example.com is still blocked by `global:deny example.com` (deny beats allow)\n"
    );

    // Denying what the same scope allowed replaces the rule.
    let out = env.ok(&["policy", "deny", "network", "web", "*.example.org"]);
    assert_eq!(
        out,
        "denied *.example.org for sandbox web (replaces the allow rule)\n"
    );
    assert!(!allowed(
        &env.policy(Some("web")),
        "web",
        "x.example.org",
        443
    ));

    // Removing the global deny lets the sandbox allow through again.
    let out = env.ok(&["policy", "rm", "network", "-g", "--resource", "example.com"]);
    assert_eq!(out, "removed deny example.com for all sandboxes\n");
    assert!(allowed(&env.policy(Some("web")), "web", "example.com", 443));

    // Ports and addresses.
    env.ok(&[
        "policy",
        "allow",
        "network",
        "api",
        "10.1.2.3:5432,192.0.2.0/24",
    ]);
    let p = env.policy(Some("api"));
    assert!(allowed(&p, "api", "10.1.2.3", 5432));
    assert!(!allowed(&p, "api", "10.1.2.3", 5433));
    assert!(p
        .check_address("api", "10.1.2.3".parse().unwrap(), 5432)
        .is_none());
}

#[test]
fn set_default_changes_the_base_of_every_sandbox() {
    let env = Env::new("balanced");
    env.sandbox("web", "shell", &[]);
    assert!(allowed(&env.policy(Some("web")), "web", "pypi.org", 443));
    let out = env.ok(&["policy", "set-default", "deny-all"]);
    insta::assert_snapshot!("set_default_deny_all", out);
    assert!(!allowed(&env.policy(Some("web")), "web", "pypi.org", 443));
    env.ok(&["policy", "set-default", "open"]);
    assert!(allowed(&env.policy(Some("web")), "web", "example.net", 443));
    assert_eq!(
        env.ok(&["policy", "set-default", "allow-all"]),
        "default preset: allow-all (unchanged)\n  every public host is reachable unless a rule denies it\n"
    );
}

#[test]
fn ls_shows_every_origin() {
    let env = Env::new("locked-down");
    let kit = env.kit(
        "team-registry",
        "  allowedDomains: [\"*.registry.example\", \"git.example:22\"]\n  deniedDomains: [telemetry.example]\n",
    );
    env.sandbox("copilot-web", "copilot", &[&kit]);
    env.sandbox("other", "shell", &[]);
    env.ok(&["policy", "allow", "network", "-g", "pypi.org"]);
    env.ok(&["policy", "deny", "network", "-g", "*.ads.example"]);
    env.ok(&[
        "policy",
        "allow",
        "network",
        "copilot-web",
        "example.com:8443",
    ]);
    env.ok(&["policy", "deny", "network", "other", "**"]);

    insta::assert_snapshot!("ls_sandbox", env.ok(&["policy", "ls", "copilot-web"]));
    insta::assert_snapshot!("ls_all", env.ok(&["policy", "ls"]));

    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["policy", "ls", "copilot-web", "--json"])).unwrap();
    assert_eq!(doc["preset"], "deny-all");
    assert_eq!(doc["preset_source"], "login");
    assert_eq!(doc["sandbox"], "copilot-web");
    let origins: Vec<&str> = doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["origin"].as_str().unwrap())
        .collect();
    for o in [
        "global",
        "sandbox:copilot-web",
        "template:copilot",
        "kit:team-registry",
    ] {
        assert!(origins.contains(&o), "{o} missing: {origins:?}");
    }
    assert!(!origins.contains(&"sandbox:other"));
    // The listed kit rules are the enforced ones.
    let p = env.policy(Some("copilot-web"));
    assert!(allowed(&p, "copilot-web", "npm.registry.example", 443));
    assert!(!allowed(&p, "copilot-web", "telemetry.example", 443));
    assert!(allowed(&p, "copilot-web", "api.github.com", 443));
    assert!(!allowed(
        &env.policy(Some("other")),
        "other",
        "api.github.com",
        443
    ));

    // The balanced preset lists its built-in rules.
    env.ok(&["policy", "set-default", "balanced"]);
    let out = env.ok(&["policy", "ls"]);
    assert!(
        out.starts_with("preset: balanced (set with `sbx policy set-default`)"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["preset:balanced", "allow", "pypi.org:443"]),
        "{out}"
    );
}

#[test]
fn first_use_without_login_picks_balanced_with_a_notice() {
    let env = Env {
        home: tempfile::tempdir().unwrap(),
    };
    let out = env.run(&["policy", "ls", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("first_use_notice", out.stderr);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.d().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["default_policy"], "balanced");
    // Only once.
    assert_eq!(env.run(&["policy", "ls"]).stderr, "");
}

#[test]
fn error_messages() {
    let env = Env::new("balanced");
    env.sandbox("copilot-web", "copilot", &[]);
    env.sandbox("shell-api", "shell", &[]);
    env.ok(&[
        "policy",
        "allow",
        "network",
        "copilot-web",
        "pypi.org,example.com:443",
    ]);

    let cases: &[(&str, &[&str])] = &[
        (
            "bad_resource",
            &["policy", "allow", "network", "-g", "example.com,a.*.b.com"],
        ),
        (
            "url_resource",
            &["policy", "deny", "network", "-g", "https://example.com/x"],
        ),
        (
            "empty_resource",
            &["policy", "allow", "network", "-g", "a.com,,b.com"],
        ),
        (
            "bad_port",
            &["policy", "allow", "network", "-g", "a.com:99999"],
        ),
        ("no_scope", &["policy", "allow", "network", "pypi.org"]),
        (
            "both_scopes",
            &[
                "policy",
                "allow",
                "network",
                "-g",
                "copilot-web",
                "pypi.org",
            ],
        ),
        (
            "unknown_sandbox",
            &["policy", "allow", "network", "copilot-wbe", "pypi.org"],
        ),
        ("unknown_sandbox_far", &["policy", "ls", "zzzzzzzz"]),
        ("bad_sandbox_name", &["policy", "ls", "../x"]),
        (
            "rm_missing",
            &[
                "policy",
                "rm",
                "network",
                "copilot-web",
                "--resource",
                "nope.example",
            ],
        ),
        (
            "rm_from_template",
            &[
                "policy",
                "rm",
                "network",
                "copilot-web",
                "--resource",
                "api.github.com",
            ],
        ),
        (
            "rm_from_preset",
            &[
                "policy",
                "rm",
                "network",
                "-g",
                "--resource",
                "pypi.org:443",
            ],
        ),
        ("rm_no_resource", &["policy", "rm", "network", "-g"]),
        ("bad_type", &["policy", "allow", "filesystem", "-g", "/tmp"]),
        ("bad_preset", &["policy", "set-default", "everything"]),
        ("log_unknown_sandbox", &["policy", "log", "copilot-wb"]),
        ("log_zero_limit", &["policy", "log", "--limit", "0"]),
    ];
    for (name, args) in cases {
        insta::assert_snapshot!(format!("err_{name}"), env.fails(args));
    }
    // Nothing was changed by the failures.
    let rules = sbx_cli::policy_store::read_sandbox(env.d(), "copilot-web").unwrap();
    assert_eq!(rules.rules.len(), 2);
    assert!(sbx_cli::policy_store::read_global(env.d())
        .unwrap()
        .rules
        .is_empty());
}

#[test]
fn help_texts() {
    let env = Env::new("balanced");
    for (name, args) in [
        ("help_policy", &["policy", "--help"][..]),
        ("help_set_default", &["policy", "set-default", "--help"]),
        ("help_allow", &["policy", "allow", "--help"]),
        ("help_deny", &["policy", "deny", "--help"]),
        ("help_rm", &["policy", "rm", "--help"]),
        ("help_ls", &["policy", "ls", "--help"]),
        ("help_log", &["policy", "log", "--help"]),
    ] {
        insta::assert_snapshot!(name, env.ok(args));
    }
}

#[test]
fn concurrent_edits_are_not_lost() {
    let env = Env::new("balanced");
    env.sandbox("web", "shell", &[]);
    let children: Vec<Child> = (0..8)
        .map(|i| {
            env.cmd(&[
                "policy",
                "allow",
                "network",
                "web",
                &format!("h{i}.example"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let rules = sbx_cli::policy_store::read_sandbox(env.d(), "web").unwrap();
    assert_eq!(rules.rules.len(), 8, "{rules:?}");
}

// ---- policy log ----

fn record(time: &str, sandbox: &str, fields: serde_json::Value) -> LogRecord {
    let mut base = serde_json::json!({
        "time": time,
        "sandbox": sandbox,
        "type": "http",
        "host": "",
        "port": 443,
        "proxy": "forward",
        "decision": "deny",
        "reason": "default-deny",
        "bytes_up": 0,
        "bytes_down": 0,
    });
    for (k, v) in fields.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn write_log(path: &Path, records: &[LogRecord]) {
    let log = JsonLinesLog::open(path).unwrap();
    for r in records {
        log.record(r);
    }
}

fn web_records() -> Vec<LogRecord> {
    use serde_json::json;
    vec![
        record(
            "2026-12-03T10:00:00.125Z",
            "web",
            json!({
                "host": "api.github.com", "method": "GET", "path": "/user", "decision": "allow",
                "reason": "domain-allowed", "rule": "sandbox/web:allow api.github.com", "status": 200,
                "bytes_up": 0, "bytes_down": 2345, "credentials": ["github"], "sni": "api.github.com",
            }),
        ),
        record(
            "2026-12-03T10:00:01Z",
            "web",
            json!({
                "host": "api.github.com", "method": "POST", "path": "/graphql?q=1", "decision": "allow",
                "reason": "domain-allowed", "rule": "sandbox/web:allow api.github.com", "status": 201,
                "bytes_up": 512, "bytes_down": 1048576, "credentials": ["github"],
            }),
        ),
        record(
            "2026-12-03T10:00:02.5Z",
            "web",
            json!({
                "host": "tracker.example", "method": "GET", "path": "/", "status": 403,
            }),
        ),
        record(
            "2026-12-03T10:00:03Z",
            "web",
            json!({
                "type": "dns", "host": "evil.example", "port": 53, "proxy": "network",
            }),
        ),
        record(
            "2026-12-03T10:00:04Z",
            "web",
            json!({
                "type": "network", "host": "169.254.169.254", "port": 80, "proxy": "transparent",
                "reason": "private-address",
            }),
        ),
        record(
            "2026-12-03T10:00:05Z",
            "web",
            json!({
                "host": "tracker.example", "method": "GET", "path": "/pixel.gif", "status": 403,
            }),
        ),
    ]
}

fn api_records() -> Vec<LogRecord> {
    use serde_json::json;
    vec![
        record(
            "2026-12-03T10:00:01.5Z",
            "api",
            json!({
                "type": "network", "host": "pypi.org", "port": 443, "proxy": "forward-bypass",
                "decision": "allow", "reason": "domain-allowed",
                "rule": "preset/balanced:allow pypi.org:443", "status": 200,
                "bytes_up": 1000, "bytes_down": 30000,
            }),
        ),
        record(
            "2026-12-03T10:00:06Z",
            "api",
            json!({
                "host": "upstream.example", "method": "GET",
                "path": "/a/very/long/path/that/goes/on/and/on/and/on/forever/and/ever.tar.gz",
                "decision": "deny", "reason": "upstream-unreachable",
                "rule": "global:allow upstream.example", "status": 502,
            }),
        ),
    ]
}

fn log_env() -> Env {
    let env = Env::new("balanced");
    env.sandbox("web", "shell", &[]);
    env.sandbox("api", "shell", &[]);
    write_log(&env.d().join("sandboxes/web/policy.log"), &web_records());
    write_log(&env.d().join("sandboxes/api/policy.log"), &api_records());
    env
}

#[test]
fn log_tables() {
    let env = log_env();
    insta::assert_snapshot!("log_aggregated", env.ok(&["policy", "log"]));
    insta::assert_snapshot!(
        "log_requests_web",
        env.ok(&["policy", "log", "web", "--requests"])
    );
    insta::assert_snapshot!(
        "log_blocked_limit",
        env.ok(&["policy", "log", "--blocked", "--limit", "3", "--requests"])
    );
    let out = env.run(&["policy", "log", "web", "--blocked"]);
    assert_eq!(out.stderr, "");
    assert!(!out.stdout.contains("allowed"), "{}", out.stdout);
    assert!(out.stdout.contains("tracker.example"), "{}", out.stdout);
}

#[test]
fn log_json_is_the_records() {
    let env = log_env();
    let out = env.ok(&["policy", "log", "--json"]);
    let back: Vec<LogRecord> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<LogRecord> = web_records().into_iter().chain(api_records()).collect();
    assert_eq!(back.len(), 8);
    // Every record comes back, in time order across sandboxes.
    for r in &want {
        assert!(back.contains(r), "{r:?}");
    }
    let times: Vec<&str> = back.iter().map(|r| r.time.as_str()).collect();
    assert_eq!(
        times[..3],
        [
            "2026-12-03T10:00:00.125Z",
            "2026-12-03T10:00:01Z",
            "2026-12-03T10:00:01.5Z"
        ]
    );
    let out = env.ok(&["policy", "log", "api", "--json", "--limit", "1"]);
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("upstream.example"));
}

#[test]
fn log_skips_corrupt_lines_with_a_warning() {
    let env = log_env();
    let path = env.d().join("sandboxes/web/policy.log");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"time\": broken\nnot json at all\n\xff\xfe\n")
        .unwrap();
    // A partial last line (the writer is mid-write) is not corrupt.
    f.write_all(b"{\"time\":\"2026-").unwrap();
    drop(f);
    let out = env.run(&["policy", "log", "web", "--requests"]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stderr,
        "sbx: warning: skipped 3 unreadable lines in [HOME]/sandboxes/web/policy.log\n"
    );
    assert_eq!(out.stdout.lines().count(), 7, "{}", out.stdout);
}

#[test]
fn log_of_a_sandbox_without_records() {
    let env = Env::new("balanced");
    env.sandbox("fresh", "shell", &[]);
    let out = env.run(&["policy", "log", "fresh"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "sbx: no requests logged in [HOME]/sandboxes/fresh/policy.log\n"
    );
    let out = env.run(&["policy", "log", "--blocked"]);
    assert_eq!(
        out.stderr,
        "sbx: no blocked requests logged from any sandbox\n"
    );
}

/// Lines of a child's stdout, as they arrive.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains(needle) {
                return line;
            }
        }
    }
    panic!("no line with {needle:?} within 20 s");
}

#[test]
fn follow_sees_a_new_file_appends_and_truncation() {
    use serde_json::json;
    let env = Env::new("balanced");
    env.sandbox("web", "shell", &[]);
    let path = env.d().join("sandboxes/web/policy.log");
    let mut child = env
        .cmd(&["policy", "log", "web", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let header = wait_for(&rx, "TIME");
    assert!(header.contains("HOST:PORT"), "{header}");

    // The file appears.
    let one = record(
        "2026-12-03T11:00:00Z",
        "web",
        json!({"host": "first.example", "method": "GET", "path": "/"}),
    );
    write_log(&path, &[one]);
    let line = wait_for(&rx, "first.example");
    assert!(line.contains("blocked"), "{line}");

    // It grows; a record split over two writes shows once complete.
    let two = record(
        "2026-12-03T11:00:01Z",
        "web",
        json!({"host": "second.example", "decision": "allow", "reason": "default-allow"}),
    );
    let text = serde_json::to_string(&two).unwrap();
    let (a, b) = text.split_at(20);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(a.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    f.write_all(format!("{b}\n").as_bytes()).unwrap();
    drop(f);
    let line = wait_for(&rx, "second.example");
    assert!(line.contains("allowed"), "{line}");

    // Truncated (rotated in place): new records are still seen.
    std::fs::write(&path, "").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let three = record(
        "2026-12-03T11:00:02Z",
        "web",
        json!({"host": "third.example"}),
    );
    write_log(&path, &[three]);
    wait_for(&rx, "third.example");

    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn follow_all_picks_up_new_sandboxes() {
    use serde_json::json;
    let env = Env::new("balanced");
    let mut child = env
        .cmd(&["policy", "log", "-f", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    std::thread::sleep(Duration::from_millis(300));
    env.sandbox("late", "shell", &[]);
    let r = record(
        "2026-12-03T12:00:00Z",
        "late",
        json!({"host": "late.example"}),
    );
    write_log(
        &env.d().join("sandboxes/late/policy.log"),
        std::slice::from_ref(&r),
    );
    let line = wait_for(&rx, "late.example");
    assert_eq!(serde_json::from_str::<LogRecord>(&line).unwrap(), r);
    child.kill().unwrap();
    let _ = child.wait();
}
