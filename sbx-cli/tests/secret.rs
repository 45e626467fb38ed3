//! `sbx secret ...` as users run it: every command, every bad input (messages snapshotted), the
//! real kernel keyring and the encrypted file store, and a canary that must never be printed.
//!
//! Each test has its own data directory and keyring namespace and removes what it stored, so
//! nothing stays in the user's keyring.
#![allow(clippy::print_stderr)] // Skip notes go to the test log.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use sbx_secrets::{Catalog, KeyringStore, SecretStore};

const CANARY: &str = "ghp_CANARY0b7e9a4c4c55b0f21e2d3c4b5a69xyz";

struct Env {
    home: tempfile::TempDir,
    namespace: String,
    store: &'static str,
    passphrase: Option<&'static str>,
}

impl Env {
    fn new(store: &'static str) -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            namespace: format!(
                "sbx-clitest-{}-{}",
                std::process::id(),
                sbx_secrets::random_alnum(8).unwrap()
            ),
            store,
            passphrase: (store == "file").then_some("test passphrase"),
        }
    }

    /// The keyring store, or `None` (with a note) if the kernel refuses keyutils here.
    fn keyring() -> Option<Env> {
        let env = Env::new("keyring");
        match KeyringStore::kernel(&env.namespace).and_then(|s| s.probe()) {
            Ok(()) => Some(env),
            Err(e) => {
                if std::env::var_os("SBX_REQUIRE_KEYRING").is_some_and(|v| v == "1") {
                    panic!("the kernel keyring is required but unusable: {e}");
                }
                eprintln!("SKIPPED: the kernel refuses keyutils here: {e}");
                None
            }
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sbx"));
        c.args(args)
            .env("SBX_HOME", self.home.path())
            .env("SBX_SECRET_STORE", self.store)
            .env("SBX_SECRET_NAMESPACE", &self.namespace)
            .env_remove("SBX_SECRET_PASSPHRASE")
            .env_remove("SBX_LOG")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("NO_COLOR", "1");
        if let Some(p) = self.passphrase {
            c.env("SBX_SECRET_PASSPHRASE", p);
        }
        c
    }

    /// Runs with `stdin` piped in (empty when `None`): never a terminal.
    fn run_with(&self, mut c: Command, stdin: Option<&[u8]>) -> Out {
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            // A command that fails before reading stdin closes the pipe early.
            let _ = pipe.write_all(data);
        }
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        Out::new(out, self)
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.run_with(self.cmd(args), stdin.map(str::as_bytes))
    }

    fn secrets_dir(&self) -> PathBuf {
        self.home.path().join("secrets")
    }

    /// The secrets `ls --json` reports.
    fn listed(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["secret", "ls", "--json"], None);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        doc["secrets"].as_array().unwrap().clone()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A file-store key cached after a passphrase prompt.
        let path = self.secrets_dir().join("secrets.enc");
        if let (Ok(cache), Ok(Some(id))) = (
            KeyringStore::kernel(&format!("{}.file-key", self.namespace)),
            sbx_secrets::FileStore::key_id_of(&path),
        ) {
            let _ = cache.delete(&sbx_secrets::Scope::Global, &id);
        }
        if self.store != "keyring" {
            return;
        }
        let Ok(store) = KeyringStore::kernel(&self.namespace) else {
            return;
        };
        let catalog = Catalog::file(self.secrets_dir().join("catalog.json"));
        for e in catalog.list().unwrap_or_default() {
            let _ = store.delete(&e.scope, &e.name);
        }
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Output with the per-test paths and namespace replaced, for snapshots.
    fn new(o: Output, env: &Env) -> Out {
        let clean = |b: Vec<u8>| {
            String::from_utf8(b)
                .unwrap()
                .replace(&env.home.path().display().to_string(), "[HOME]")
                .replace(&env.namespace, "[NS]")
        };
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: clean(o.stdout),
            stderr: clean(o.stderr),
        }
    }

    fn all(&self) -> String {
        format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

#[test]
fn set_ls_rm_with_the_kernel_keyring() {
    let Some(env) = Env::keyring() else { return };
    let out = env.run(
        &["secret", "set", "-g", "github"],
        Some("ghp_abcdefghijklmnopqrstuvwxyz0123456789\n"),
    );
    insta::assert_snapshot!("set_global_stdin", out.all());

    let out = env.run(
        &[
            "secret",
            "set",
            "my-box",
            "github",
            "-t",
            "ghp_sandboxtoken0123456789abcdefghijklm",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let out = env.run(&["secret", "ls"], None);
    insta::assert_snapshot!("ls_table", out.all());

    // The value really is in the kernel keyring, in this test's namespace.
    let store = KeyringStore::kernel(&env.namespace).unwrap();
    let v = store
        .get(&sbx_secrets::Scope::Global, "github")
        .unwrap()
        .unwrap();
    assert_eq!(
        sbx_secrets::secrecy::ExposeSecret::expose_secret(&v),
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
    );

    let listed = env.listed();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["scope"], "global");
    assert_eq!(listed[0]["store"], "keyring");
    assert_eq!(listed[0]["secret"], "ghp_...6789");
    assert_eq!(listed[1]["scope"], "my-box");

    let out = env.run(&["secret", "rm", "-g", "github"], None);
    insta::assert_snapshot!("rm_global", out.all());
    let out = env.run(&["secret", "rm", "my-box", "github"], None);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(env.listed().is_empty());
    assert!(store
        .get(&sbx_secrets::Scope::Global, "github")
        .unwrap()
        .is_none());
    let out = env.run(&["secret", "ls"], None);
    insta::assert_snapshot!("ls_empty", out.all());
}

#[test]
fn set_custom_and_overwrite() {
    let Some(env) = Env::keyring() else { return };
    let out = env.run(
        &[
            "secret",
            "set-custom",
            "-g",
            "--host",
            "api.example.com",
            "--host",
            "*.example.org",
            "--env",
            "MY_API_KEY",
            "--placeholder",
            "sk-{rand}",
        ],
        Some("custom-token-0123456789abcdefghij"),
    );
    insta::assert_snapshot!("set_custom", out.all());
    let listed = env.listed();
    assert_eq!(listed[0]["name"], "my-api-key");
    assert_eq!(listed[0]["type"], "custom");
    assert_eq!(
        listed[0]["hosts"],
        serde_json::json!(["api.example.com", "*.example.org"])
    );
    assert_eq!(listed[0]["env"], serde_json::json!(["MY_API_KEY"]));
    assert_eq!(listed[0]["placeholder"], "sk-{rand}");

    // Without a terminal, replacing needs -f; the old value stays.
    let args = ["secret", "set", "-g", "openai"];
    assert_eq!(
        env.run(&args, Some("sk-first-value-000000000000000000"))
            .code,
        0
    );
    let out = env.run(&args, Some("sk-second-value-11111111111111111"));
    insta::assert_snapshot!("exists_without_force", out.all());
    let listed = env.listed();
    let openai = listed.iter().find(|l| l["name"] == "openai").unwrap();
    assert_eq!(openai["secret"], "sk-f...0000");
    let out = env.run(
        &["secret", "set", "-g", "openai", "-f"],
        Some("sk-second-value-11111111111111111"),
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let listed = env.listed();
    let openai = listed.iter().find(|l| l["name"] == "openai").unwrap();
    assert_eq!(openai["secret"], "sk-s...1111");

    let out = env.run(&["secret", "rm", "-g", "my-api-key"], None);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = env.run(&["secret", "rm", "-g", "openai"], None);
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn encrypted_file_store_from_the_cli() {
    let env = Env::new("file");
    let out = env.run(
        &["secret", "set", "-g", "anthropic"],
        Some("sk-ant-api03-filestorevalue0123456789abcdef"),
    );
    insta::assert_snapshot!("set_file", out.all());
    let out = env.run(&["secret", "ls"], None);
    insta::assert_snapshot!("ls_file", out.all());
    for f in ["secrets.enc", "catalog.json"] {
        let raw = std::fs::read_to_string(env.secrets_dir().join(f)).unwrap();
        assert!(!raw.contains("filestorevalue"), "{f}: {raw}");
    }

    // Wrong or missing passphrase: the store says it is locked and what to do.
    let mut c = env.cmd(&["secret", "ls"]);
    c.env("SBX_SECRET_PASSPHRASE", "wrong");
    let out = env.run_with(c, None);
    insta::assert_snapshot!("file_wrong_passphrase", out.all());
    let mut c = env.cmd(&["secret", "ls"]);
    c.env_remove("SBX_SECRET_PASSPHRASE");
    let out = env.run_with(c, None);
    insta::assert_snapshot!("file_locked", out.all());

    let out = env.run(&["secret", "rm", "-g", "anthropic"], None);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(env.listed().is_empty());
}

#[test]
fn memory_store_keeps_nothing() {
    let env = Env::new("memory");
    let out = env.run(&["secret", "set", "-g", "groq", "-t", "gsk_value"], None);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("in the memory store"), "{}", out.all());
    assert!(env.listed().is_empty());
}

/// Every bad input: a clear message, exit status 1 (2 for usage errors), nothing stored.
#[test]
fn bad_input() {
    let Some(env) = Env::keyring() else { return };
    let cases: &[(&str, &[&str], Option<&str>)] = &[
        ("empty_token", &["secret", "set", "-g", "github"], Some("")),
        ("empty_line", &["secret", "set", "-g", "github"], Some("\n")),
        (
            "newline_in_token",
            &["secret", "set", "-g", "github"],
            Some("ghp_first\nghp_second\n"),
        ),
        (
            "control_char_in_token",
            &["secret", "set", "-g", "github"],
            Some("ghp_abc\u{1b}[0mdef"),
        ),
        (
            "control_char_in_flag",
            &["secret", "set", "-g", "github", "-t", "abc\tdef"],
            None,
        ),
        (
            "unknown_service",
            &["secret", "set", "-g", "gitlab"],
            Some("x"),
        ),
        (
            "token_as_service",
            &[
                "secret",
                "set",
                "-g",
                "ghp_pastedtokeninsteadofname0123456789",
            ],
            Some("x"),
        ),
        ("missing_scope", &["secret", "set", "github"], Some("x")),
        (
            "global_and_sandbox",
            &["secret", "set", "-g", "box", "github"],
            Some("x"),
        ),
        (
            "sandbox_named_global",
            &["secret", "set", "global", "github"],
            Some("x"),
        ),
        (
            "bad_sandbox_name",
            &["secret", "set", "my/box", "github"],
            Some("x"),
        ),
        ("no_args", &["secret", "set"], None),
        (
            "custom_without_host",
            &["secret", "set-custom", "-g", "--env", "MY_KEY"],
            Some("x"),
        ),
        (
            "custom_wildcard_host",
            &[
                "secret",
                "set-custom",
                "-g",
                "--host",
                "**",
                "--env",
                "MY_KEY",
            ],
            Some("x"),
        ),
        (
            "custom_reserved_env",
            &[
                "secret",
                "set-custom",
                "-g",
                "--host",
                "a.example",
                "--env",
                "PATH",
            ],
            Some("x"),
        ),
        (
            "custom_bad_placeholder",
            &[
                "secret",
                "set-custom",
                "-g",
                "--host",
                "a.example",
                "--env",
                "MY_KEY",
                "--placeholder",
                "sk-",
            ],
            Some("x"),
        ),
        (
            "custom_builtin_name",
            &[
                "secret",
                "set-custom",
                "-g",
                "--host",
                "a.example",
                "--env",
                "MY_KEY",
                "--name",
                "github",
            ],
            Some("x"),
        ),
        ("rm_missing", &["secret", "rm", "-g", "github"], None),
        ("rm_missing_scope", &["secret", "rm", "github"], None),
    ];
    for (name, args, stdin) in cases {
        let out = env.run(args, *stdin);
        assert_ne!(out.code, 0, "{name}: {}", out.all());
        insta::assert_snapshot!(format!("bad_{name}"), out.all());
    }
    assert!(env.listed().is_empty(), "nothing half-written");
    let store = KeyringStore::kernel(&env.namespace).unwrap();
    assert!(store
        .get(&sbx_secrets::Scope::Global, "github")
        .unwrap()
        .is_none());
}

/// Stores that cannot be used: a clear error naming the store and what to do.
#[test]
fn unusable_stores() {
    let env = Env::new("disk");
    let out = env.run(&["secret", "ls"], None);
    insta::assert_snapshot!("unknown_store", out.all());
    let env = Env::new("secret-service");
    let out = env.run(&["secret", "set", "-g", "github", "-t", "x"], None);
    insta::assert_snapshot!("secret_service_unavailable", out.all());
}

#[test]
fn canary_never_printed() {
    let Some(env) = Env::keyring() else { return };
    let mut seen = String::new();
    let mut run = |args: &[&str], stdin: Option<&str>| {
        let mut c = env.cmd(args);
        c.env("SBX_LOG", "trace");
        let out = env.run_with(c, stdin.map(str::as_bytes));
        seen.push_str(&out.all());
        out
    };
    assert_eq!(
        run(&["secret", "set", "-g", "github"], Some(CANARY)).code,
        0
    );
    assert_eq!(
        run(&["secret", "set", "-g", "github"], Some(CANARY)).code,
        1
    );
    assert_eq!(
        run(&["secret", "set", "box", "github", "-t", CANARY], None).code,
        0,
    );
    assert_eq!(run(&["secret", "set", "-g", CANARY], Some(CANARY)).code, 1);
    assert_eq!(
        run(&["secret", "set", CANARY, "github"], Some(CANARY)).code,
        1
    );
    let bad = format!("{CANARY}\n{CANARY}");
    assert_eq!(run(&["secret", "set", "-g", "openai"], Some(&bad)).code, 1);
    assert_eq!(run(&["secret", "ls"], None).code, 0);
    assert_eq!(run(&["secret", "ls", "--json"], None).code, 0);
    assert_eq!(run(&["secret", "rm", "-g", "github"], None).code, 0);
    assert_eq!(run(&["secret", "rm", "box", "github"], None).code, 0);
    assert!(
        seen.contains("ghp_...9xyz"),
        "the masked form is shown: {seen}"
    );
    assert!(!seen.contains(CANARY), "{seen}");
    assert!(!seen.contains("CANARY0b7e"), "{seen}");
    let catalog = std::fs::read_to_string(env.secrets_dir().join("catalog.json")).unwrap();
    assert!(!catalog.contains("CANARY"));
}

/// A private D-Bus session bus with gnome-keyring's Secret Service, killed on drop.
struct SessionBus {
    dir: tempfile::TempDir,
    children: Vec<std::process::Child>,
}

impl SessionBus {
    /// `None` (with a note) when dbus-daemon or gnome-keyring-daemon is not installed.
    fn start() -> Option<SessionBus> {
        let have = |bin: &str| {
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        if !have("dbus-daemon") || !have("gnome-keyring-daemon") {
            eprintln!("SKIPPED: no dbus-daemon or gnome-keyring-daemon (apt-get install dbus-daemon gnome-keyring)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for d in ["home", "run"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let mut bus = SessionBus {
            children: Vec::new(),
            dir,
        };
        let socket = bus.dir.path().join("bus");
        let dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        bus.children.push(dbus);
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut keyring = bus
            .env(&mut Command::new("gnome-keyring-daemon"))
            .args(["--foreground", "--components=secrets", "--unlock"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The login keyring's password, then EOF.
        keyring
            .stdin
            .take()
            .unwrap()
            .write_all(b"test-login-password")
            .unwrap();
        bus.children.push(keyring);
        Some(bus)
    }

    fn env<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        c.env("HOME", self.dir.path().join("home"))
            .env("XDG_DATA_HOME", self.dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", self.dir.path().join("bus").display()),
            )
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn secret_service_is_chosen_when_a_session_bus_offers_it() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let env = Env::new("auto");
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut c = env.cmd(args);
        bus.env(&mut c).env_remove("SBX_SECRET_STORE");
        env.run_with(c, stdin.map(str::as_bytes))
    };
    // Wait until gnome-keyring has claimed its bus name and unlocked the login keyring.
    let mut ready = false;
    for _ in 0..100 {
        let out = run(&["secret", "ls", "--json"], None);
        if out.code == 0 && out.stdout.contains("\"kind\": \"secret-service\"") {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ready, "the Secret Service never answered");
    let out = run(
        &["secret", "set", "-g", "xai"],
        Some("xai-secretservicevalue0123456789abcdef"),
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("in the secret-service store"),
        "{}",
        out.all()
    );
    let out = run(&["secret", "ls"], None);
    assert!(
        out.stdout.contains("xai-...cdef  secret-service"),
        "{}",
        out.all()
    );
    // The same data directory without the bus: the kernel keyring is the default, and the
    // entry held by the Secret Service is reported as not open rather than lost.
    let out = env.run_with(
        {
            let mut c = env.cmd(&["secret", "ls"]);
            c.env_remove("SBX_SECRET_STORE")
                .env_remove("DBUS_SESSION_BUS_ADDRESS");
            c
        },
        None,
    );
    assert!(out.stdout.contains("(unavailable)"), "{}", out.all());
    assert!(
        out.stdout.contains("secret-service: not open"),
        "{}",
        out.all()
    );
    let out = run(&["secret", "rm", "-g", "xai"], None);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(run(&["secret", "ls"], None)
        .stdout
        .starts_with("no secrets"));
}

/// `sbx` on a pseudo-terminal (util-linux `script`), driven by waiting for its prompts.
struct Pty {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Pty {
    fn spawn(env: &Env, args: &[&str]) -> Option<Pty> {
        let probe = Command::new("script").arg("--version").output();
        if probe.is_err() {
            eprintln!("SKIPPED: util-linux `script` is not installed");
            return None;
        }
        let line = std::iter::once(env!("CARGO_BIN_EXE_sbx"))
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let template = env.cmd(&[]);
        let mut c = Command::new("script");
        for (k, v) in template.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Some(Pty {
            child,
            stdin,
            output,
        })
    }

    fn expect(&self, text: &str) {
        for _ in 0..200 {
            if self.output.lock().unwrap().contains(text) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no {text:?} in {:?}", self.output.lock().unwrap());
    }

    fn send(&mut self, text: &str) {
        // Give the prompt a moment to switch echo off after printing itself.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap();
        drop(self.stdin.take());
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = self.output.lock().unwrap().clone();
        (status.code().unwrap_or(-1), out)
    }
}

/// On a terminal: the token prompt does not echo, and replacing a secret asks first.
#[test]
fn terminal_prompts_hide_the_token_and_confirm_overwrite() {
    let Some(env) = Env::keyring() else { return };
    let first = "ghp_typedattheprompt0123456789abcdefghij";
    let Some(mut pty) = Pty::spawn(&env, &["secret", "set", "-g", "github"]) else {
        return;
    };
    pty.expect("Token for github (global): ");
    pty.send(&format!("{first}\n"));
    let (code, out) = pty.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stored github for all sandboxes"), "{out}");
    assert!(
        !out.contains("typedattheprompt"),
        "the token was echoed: {out}"
    );

    let mut pty = Pty::spawn(&env, &["secret", "set", "-g", "github"]).unwrap();
    pty.expect("Replace the existing secret github for all sandboxes? [y/N] ");
    pty.send("n\n");
    let (code, out) = pty.finish();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pass -f to replace it"), "{out}");
    assert_eq!(env.listed()[0]["secret"], "ghp_...ghij");

    let mut pty = Pty::spawn(&env, &["secret", "set", "-g", "github"]).unwrap();
    pty.expect("[y/N] ");
    pty.send("y\n");
    pty.expect("Token for github (global): ");
    pty.send("ghp_secondvalue0123456789abcdefghijklmnop\n");
    let (code, out) = pty.finish();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("secondvalue"), "{out}");
    assert_eq!(env.listed()[0]["secret"], "ghp_...mnop");
    assert_eq!(env.run(&["secret", "rm", "-g", "github"], None).code, 0);
}

/// The file store on a terminal: the passphrase is asked twice for a new file, the derived key
/// is cached in the kernel keyring, and later commands without a terminal or
/// `SBX_SECRET_PASSPHRASE` use the cached key.
#[test]
fn file_store_passphrase_prompt_caches_the_key() {
    if Env::keyring().is_none() {
        return;
    }
    let mut env = Env::new("file");
    env.passphrase = None;
    let Some(mut pty) = Pty::spawn(&env, &["secret", "set", "-g", "mistral"]) else {
        return;
    };
    pty.expect("Passphrase for ");
    pty.send("prompted passphrase\n");
    pty.expect("Repeat the passphrase: ");
    pty.send("prompted passphrase\n");
    pty.expect("Token for mistral (global): ");
    pty.send("mistralvalue0123456789abcdefghijk\n");
    let (code, out) = pty.finish();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cached in the kernel keyring"), "{out}");
    assert!(
        !out.contains("prompted passphrase") && !out.contains("mistralvalue"),
        "{out}"
    );

    // No terminal, no SBX_SECRET_PASSPHRASE: the cached key unlocks the file.
    let listed = env.listed();
    assert_eq!(listed[0]["secret"], "mist...hijk");
    assert_eq!(listed[0]["store"], "file");
    // The passphrase really protects the file: a wrong one is refused.
    let mut c = env.cmd(&["secret", "ls"]);
    c.env("SBX_SECRET_PASSPHRASE", "wrong");
    c.env("SBX_SECRET_NAMESPACE", "sbx-clitest-no-cache");
    assert_eq!(env.run_with(c, None).code, 1);
    assert_eq!(env.run(&["secret", "rm", "-g", "mistral"], None).code, 0);
}
