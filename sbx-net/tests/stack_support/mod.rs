//! Harness for the network-stack tests: a Debian root with curl and python3 (built once with
//! mmdebstrap), a namespace sandbox whose `eth0` is served by [`sbx_net::NetStack`] over the
//! test's [`sbx_net::Proxy`], and local servers.
#![allow(dead_code, clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sbx_exec::{Client, ExecRequest};
use sbx_net::{
    MemoryLog, NetStack, NetStackHandle, Policy, Proxy, ProxyConfig, Resolve, ResolveFuture,
    StackConfig,
};
use sbx_ns::{AgentOptions, Bind, Config, Init, Ipv4Config, Sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const GUEST_PACKAGES: &str = "curl,ca-certificates,python3,iputils-ping,procps";

pub fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Whether missing prerequisites must fail instead of skip.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SBX_REQUIRE_IMAGES").is_ok_and(|v| v == "1")
}

/// The Debian root (bookworm minbase + curl, python3, ping), built once and reused.
/// `SBX_NET_DEBIAN_ROOT` points at a ready one.
pub fn debian_root() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SBX_NET_DEBIAN_ROOT") {
        return Ok(PathBuf::from(p));
    }
    let done = tmp_root().join("sbx-net-debian-v1");
    if done.join("usr/bin/curl").exists() && done.join("usr/bin/python3").exists() {
        return Ok(done);
    }
    let building = tmp_root().join(format!("sbx-net-debian-building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(tmp_root()).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    eprintln!("building the guest Debian root with mmdebstrap (once)...");
    let out = Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            &format!("--include={GUEST_PACKAGES}"),
            "--aptopt=Acquire::Languages \"none\"",
            "--dpkgopt=force-unsafe-io",
            "bookworm",
        ])
        .arg(&building)
        .output()
        .map_err(|e| format!("mmdebstrap not available ({e}); apt-get install -y mmdebstrap"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        return Err(format!(
            "mmdebstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    eprintln!("built the guest root in {:?}", started.elapsed());
    match std::fs::rename(&building, &done) {
        Ok(()) => Ok(done),
        Err(_) if done.join("usr/bin/curl").exists() => {
            let _ = std::fs::remove_dir_all(&building);
            Ok(done)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A resolver that counts every name asked and answers from a fixed table.
#[derive(Default)]
pub struct CountingResolver {
    pub asked: Mutex<Vec<String>>,
    pub table: Mutex<HashMap<String, IpAddr>>,
}

impl Resolve for CountingResolver {
    fn resolve<'a>(&'a self, name: &'a str, _port: u16) -> ResolveFuture<'a> {
        self.asked.lock().unwrap().push(name.to_string());
        let hit = self.table.lock().unwrap().get(name).copied();
        Box::pin(async move {
            match hit {
                Some(ip) => Ok(vec![ip]),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such name",
                )),
            }
        })
    }
}

/// A guest: a namespace sandbox on the Debian root with its network served by our stack.
pub struct Guest {
    pub sandbox: Option<Sandbox>,
    pub client: Client,
    pub proxy: Arc<Proxy>,
    pub log: Arc<MemoryLog>,
    pub stack: NetStackHandle,
    pub state: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(sb) = self.sandbox.take() {
            let _ = sb.stop_timeout(std::time::Duration::from_secs(2));
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Guest {
    /// Starts the sandbox: `files` are (guest path, contents) bound read-only.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        root: &Path,
        name: &str,
        config: ProxyConfig,
        log: Arc<MemoryLog>,
        files: &[(&str, String)],
    ) -> Guest {
        static N: AtomicUsize = AtomicUsize::new(0);
        let state = tmp_root().join(format!(
            "stack-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(state.join("files")).unwrap();
        let mut cfg = Config::new(
            root,
            state.join("sb"),
            Init::new("/bin/sh", Vec::<String>::new()),
        )
        .with_hostname("guest")
        .with_network(true)
        .with_ipv4(Ipv4Config::new(
            Ipv4Addr::new(10, 77, 0, 2),
            24,
            Some(Ipv4Addr::new(10, 77, 0, 1)),
        ));
        let mut all: Vec<(&str, String)> = vec![(
            "/etc/resolv.conf",
            "nameserver 10.77.0.1\noptions attempts:2 timeout:2\n".to_string(),
        )];
        all.extend(files.iter().cloned());
        for (i, (guest, contents)) in all.iter().enumerate() {
            let host = state.join("files").join(i.to_string());
            std::fs::write(&host, contents).unwrap();
            cfg = cfg.with_bind(Bind::new(&host, *guest, true));
        }
        let mut sb = Sandbox::builder(cfg)
            .agent(AgentOptions::default())
            .start()
            .unwrap_or_else(|e| panic!("starting the sandbox: {e}"));
        let tap = sb.take_tap().expect("a tap device");
        let proxy = Arc::new(Proxy::new(config).unwrap());
        let stack = {
            let _g = rt.enter();
            NetStack::spawn(StackConfig::default(), tap.into(), proxy.clone()).unwrap()
        };
        let client = sb.client().expect("an exec socket");
        Guest {
            sandbox: Some(sb),
            client,
            proxy,
            log,
            stack,
            state,
            env: Vec::new(),
        }
    }

    /// Runs a bash script in the guest with the harness's environment.
    pub fn sh(&self, script: &str) -> Out {
        let mut req = ExecRequest::new(["/bin/bash", "-c", script]);
        for (k, v) in &self.env {
            req = req.env(k, v);
        }
        let o = self.client.output(req).unwrap();
        let out = Out {
            code: o.status.shell_code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        eprintln!(
            "$ {script}\n  -> {}\n  stdout: {}\n  stderr: {}",
            out.code,
            out.stdout.trim_end().chars().take(2000).collect::<String>(),
            out.stderr.trim_end().chars().take(2000).collect::<String>()
        );
        out
    }

    pub fn records(&self) -> Vec<sbx_net::LogRecord> {
        self.log.records()
    }
}

/// Policy allowing exactly these resources.
pub fn allow(rules: &[&str]) -> Policy {
    let mut p = Policy::new(sbx_net::Preset::DenyAll);
    for r in rules {
        p.allow(&sbx_net::Scope::Global, r).unwrap();
    }
    p
}

/// Deterministic content of download `i`: `len` bytes.
pub fn blob(i: u64, len: usize) -> impl Iterator<Item = Vec<u8>> {
    const CHUNK: usize = 64 * 1024;
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK);
        left -= n;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(n);
        Some(v)
    })
}

/// A cleartext HTTP/1.1 server: `GET /blob/<i>?len=<n>` streams [`blob`] (default 10 MiB),
/// anything else answers `hello from <path>`. One request per connection.
pub async fn blob_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    if head.len() > 65536 {
                        return;
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                if let Some(rest) = path.strip_prefix("/blob/") {
                    let (i, q) = rest.split_once('?').unwrap_or((rest, ""));
                    let i: u64 = i.parse().unwrap_or(0);
                    let len: usize = q
                        .strip_prefix("len=")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(10 << 20);
                    let h = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    if s.write_all(h.as_bytes()).await.is_err() {
                        return;
                    }
                    for chunk in blob(i, len) {
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let body = format!("hello from {path}");
                    let h = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(h.as_bytes()).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}
