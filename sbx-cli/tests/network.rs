//! A sandbox's network end to end through the `sbx` binary: a real namespace sandbox (Linux
//! TCP/IP in the guest, curl) behind sbx-net's userspace stack and the sandbox's proxy, an HTTPS
//! upstream the test starts on 127.0.0.1 and names through `SBX_NET_RESOLVE`, a custom secret in
//! the encrypted file store, and `sbx policy` changes made while the sandbox runs.
//!
//! Needs root; builds (or reuses) the shared Debian image like tests/lifecycle.rs. Skips with
//! the reason otherwise, except under `CI=true`, where it fails.
#![allow(clippy::print_stderr)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

const ALLOWED: &str = "api.sbx-test.example";
const OTHER: &str = "other.sbx-test.example";
/// The real secret: only the host and the upstream ever see it.
const REAL_TOKEN: &str = "real-secret-5f1c9e27b3d84a60";

struct Home {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.sbx().args(["rm", "-f", "--all"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Home {
    fn sbx(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sbx"));
        c.env("SBX_HOME", &self.dir)
            .env("SBX_IMAGES_DIR", images_dir())
            .env("COLUMNS", "200")
            .env_remove("SBX_LOG")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.sbx().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "sbx {args:?}: {}", show(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `sbx exec NAME bash -c SCRIPT`: (exit code, stdout).
    fn sh(&self, name: &str, script: &str) -> (i32, String) {
        self.sh_as("agent", name, script)
    }

    /// `sbx exec -u USER NAME bash -c SCRIPT`: (exit code, stdout).
    fn sh_as(&self, user: &str, name: &str, script: &str) -> (i32, String) {
        let out = self.run(&["exec", "-u", user, name, "bash", "-c", script]);
        eprintln!("$ {script}\n{}", show(&out));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbx-image-store")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A test CA and a leaf for both test names, as PEM files in `dir`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct subjects: OpenSSL (curl in the guest) takes a leaf whose issuer equals its
    // subject for self-signed, and rcgen's default subject is the same for both.
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sbx network test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::default();
    leaf_params.distinguished_name = DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, ALLOWED);
    leaf_params.subject_alt_names = [ALLOWED, OTHER]
        .iter()
        .map(|n| SanType::DnsName((*n).to_string().try_into().unwrap()))
        .collect();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let ca = dir.join("upstream-ca.pem");
    let cert = dir.join("upstream.pem");
    let key = dir.join("upstream-key.pem");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (ca, cert, key)
}

/// The upstream: HTTPS on 127.0.0.1, answers `injected` when the request carried the real
/// token and `placeholder` otherwise (it never echoes a secret back).
const SERVER: &str = r#"
import hashlib, http.server, os, ssl, sys
BLOB = bytes(range(256)) * 32768
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.reply(hashlib.sha256(body).hexdigest().encode() + b"\n")
    def do_GET(self):
        if self.path == "/blob":
            return self.reply(BLOB)
        auth = self.headers.get("Authorization", "")
        body = b"injected\n" if auth == "Bearer " + os.environ["REAL_TOKEN"] else b"placeholder\n"
        self.reply(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// Scans the readable memory of every other process in the sandbox (as root inside) for the
/// real token (given as `{REAL_HEX}`, its bytes reversed in hex, so neither this script nor
/// the shell and agent that carry it hold the token) and for the placeholder in `$TEST_TOKEN`;
/// prints "processes real-hits placeholder-hits".
const MEMSCAN: &str = r#"import os, re
real = bytes.fromhex("{REAL_HEX}")[::-1]
fake = os.environ["TEST_TOKEN"].encode()
procs = hits = found = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", 0)
    except OSError:
        continue
    procs += 1
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
        if not m or "[vvar]" in line or "[vsyscall]" in line:
            continue
        a, b = int(m.group(1), 16), int(m.group(2), 16)
        try:
            mem.seek(a)
            data = mem.read(b - a)
        except (OSError, OverflowError, ValueError):
            continue
        hits += data.count(real)
        found += data.count(fake)
print(procs, hits, found)
"#;

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

fn reversed_hex(s: &str) -> String {
    s.bytes().rev().map(|b| format!("{b:02x}")).collect()
}

struct Upstream(Child);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn upstream(dir: &Path, cert: &Path, key: &Path) -> (Upstream, u16) {
    let script = dir.join("upstream.py");
    std::fs::write(&script, SERVER).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(cert)
        .arg(key)
        .env("REAL_TOKEN", REAL_TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-deps installs it)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line.trim().parse().expect("the upstream's port");
    (Upstream(child), port)
}

fn blocked_hosts(home: &Home, name: &str) -> Vec<String> {
    home.ok(&["policy", "log", name, "--blocked", "--json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["host"].as_str().map(str::to_owned))
        .collect()
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_sandbox_network_does_what_sbx_policy_says() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "network tests need root under CI"
        );
        eprintln!("skipped: needs root (namespace sandboxes)");
        return;
    }
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sbx-network-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("ws")).unwrap();
    let (ca, cert, key) = certificates(&dir);
    let (_upstream, port) = upstream(&dir, &cert, &key);
    let home = Home {
        dir: dir.join("home"),
        env: vec![
            (
                "SBX_NET_RESOLVE".into(),
                format!("{ALLOWED}=127.0.0.1:{port},{OTHER}=127.0.0.1:{port}"),
            ),
            ("SBX_NET_UPSTREAM_CA".into(), ca.display().to_string()),
            ("SBX_SECRET_STORE".into(), "file".into()),
            ("SBX_SECRET_PASSPHRASE".into(), "test passphrase".into()),
        ],
    };
    home.ok(&["login", "--policy", "balanced"]);

    // A custom secret bound to the allowed host; the sandbox only gets a placeholder.
    let mut set = home
        .sbx()
        .args([
            "secret",
            "set-custom",
            "-g",
            "--host",
            ALLOWED,
            "--env",
            "TEST_TOKEN",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin
        .take()
        .unwrap()
        .write_all(REAL_TOKEN.as_bytes())
        .unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "secret set-custom: {}", show(&out));

    let ws = dir.join("ws");
    std::fs::copy(&ca, ws.join("upstream-ca.pem")).unwrap();
    home.ok(&["create", "--name", "net", "shell", ws.to_str().unwrap()]);
    home.ok(&["policy", "allow", "network", "net", ALLOWED]);

    // The forward path (HTTPS_PROXY): the real token reaches the upstream, the guest holds
    // only the placeholder.
    let (code, body) = home.sh(
        "net",
        &format!(
            "curl -sS --max-time 20 -H \"Authorization: Bearer $TEST_TOKEN\" https://{ALLOWED}/"
        ),
    );
    assert_eq!((code, body.trim()), (0, "injected"));
    let (code, env) = home.sh("net", "printf '%s' \"$TEST_TOKEN\"");
    assert_eq!(code, 0);
    assert!(!env.is_empty() && env != REAL_TOKEN, "placeholder: {env:?}");
    let (code, hits) = home.sh(
        "net",
        &format!(
            "{{ env; cat /proc/*/environ 2>/dev/null; }} | grep -c -- '{REAL_TOKEN}'; \
             grep -rIl -- '{REAL_TOKEN}' /etc /home /root /tmp /var 2>/dev/null | wc -l"
        ),
    );
    assert_eq!(
        (code, hits.split_whitespace().collect::<Vec<_>>()),
        (0, vec!["0", "0"])
    );

    // And nowhere in the memory of any process in the sandbox (the scanner's own environment
    // holds the placeholder, which proves the scan reads memory).
    let (code, hits) = home.sh_as(
        "root",
        "net",
        &format!(
            "python3 - <<'EOF'\n{}EOF",
            MEMSCAN.replace("{REAL_HEX}", &reversed_hex(REAL_TOKEN))
        ),
    );
    assert_eq!(code, 0);
    let hits: Vec<&str> = hits.split_whitespace().collect();
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert!(
        hits[0].parse::<u32>().unwrap() >= 2,
        "processes scanned: {hits:?}"
    );
    assert_eq!(hits[1], "0", "the real token in guest memory");
    assert_ne!(hits[2], "0", "the placeholder must be found");

    // Bulk both ways over the sandbox's link (MTU 65520 on the namespace backend), through
    // the proxy and transparently: checksums match.
    let (code, mtu) = home.sh("net", "cat /sys/class/net/eth0/mtu");
    assert_eq!((code, mtu.trim()), (0, "65520"));
    let blob: Vec<u8> = (0..32768).flat_map(|_| 0..=255u8).collect();
    let want = sha256_hex(&blob);
    for flags in ["", "--noproxy '*' --cacert \"$CA\""] {
        let (code, out) = home.sh(
            "net",
            &format!(
                "set -e; CA={ca}; curl -sS --max-time 60 {flags} https://{ALLOWED}/blob | sha256sum | cut -d' ' -f1; \
                 head -c 8M /dev/urandom > /tmp/up; sha256sum /tmp/up | cut -d' ' -f1; \
                 curl -sS --max-time 60 {flags} -T /tmp/up https://{ALLOWED}/up",
                ca = ws.join("upstream-ca.pem").display()
            ),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(code, 0, "{flags}");
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], want, "download {flags}");
        assert_eq!(lines[1], lines[2], "upload {flags}");
    }

    // A name the policy does not allow: refused and logged.
    let (code, _) = home.sh("net", &format!("curl -sS --max-time 20 https://{OTHER}/"));
    assert_ne!(code, 0);
    assert!(blocked_hosts(&home, "net").iter().any(|h| h == OTHER));

    // The transparent path (no proxy variables): allowed by name, spliced (the guest sees
    // the upstream's own certificate, so it trusts the upstream's CA from the workspace), no
    // injection.
    let upstream_ca = ws.join("upstream-ca.pem");
    let (code, body) = home.sh(
        "net",
        &format!(
            "curl -sS --max-time 20 --noproxy '*' --cacert {} -H \"Authorization: Bearer $TEST_TOKEN\" https://{ALLOWED}/",
            upstream_ca.display()
        ),
    );
    assert_eq!((code, body.trim()), (0, "placeholder"));
    let (code, _) = home.sh(
        "net",
        &format!(
            "curl -sS --max-time 20 --noproxy '*' --cacert {} https://{OTHER}/",
            upstream_ca.display()
        ),
    );
    assert_ne!(code, 0);

    // Around the firewall: metadata address, a raw loopback port, the gateway's other ports.
    for target in [
        "http://169.254.169.254/".to_owned(),
        format!("https://127.0.0.1:{port}/"),
        "http://10.77.0.1:22/".to_owned(),
    ] {
        let (code, _) = home.sh(
            "net",
            &format!("curl -sS --max-time 5 --noproxy '*' -k {target}"),
        );
        assert_ne!(code, 0, "{target} must be unreachable");
    }
    for host in ["169.254.169.254", "10.77.0.1"] {
        eventually(&format!("{host} blocked in the log"), || {
            blocked_hosts(&home, "net").iter().any(|h| h == host)
        });
    }
    // The human table names them too.
    let table = home.ok(&["policy", "log", "net", "--blocked"]);
    assert!(table.contains("169.254.169.254"), "{table}");

    // Rules change while it runs: the next connection follows them.
    home.ok(&["policy", "allow", "network", "net", OTHER]);
    eventually("the new allow rule to apply", || {
        home.sh("net", &format!("curl -sS --max-time 20 https://{OTHER}/"))
            .0
            == 0
    });
    home.ok(&["policy", "deny", "network", "-g", OTHER]);
    eventually("the global deny to win", || {
        home.sh("net", &format!("curl -sS --max-time 20 https://{OTHER}/"))
            .0
            != 0
    });

    // And across a restart the sandbox's rules still hold.
    home.ok(&["stop", "net"]);
    let (code, body) = home.sh(
        "net",
        &format!(
            "curl -sS --max-time 20 -H \"Authorization: Bearer $TEST_TOKEN\" https://{ALLOWED}/"
        ),
    );
    assert_eq!((code, body.trim()), (0, "injected"));
    home.ok(&["rm", "-f", "net"]);
}
