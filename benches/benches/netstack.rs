//! Guest networking: sandbox-to-host-loopback download throughput and connection setup rate
//! through sbx-net's userspace stack (TAP -> smoltcp -> transparent proxy path -> loopback),
//! side by side with slirp4netns and pasta attached to the same kind of namespace sandbox,
//! measured in one run. The client is the same in every case: curl (throughput, `-o
//! /dev/null`) and a python3 loop of connect + `GET /small` + read to EOF (setup rate).
//!
//! `cargo bench -p sbx-benches --bench netstack`. Needs root, `mmdebstrap` (a Debian root
//! with curl and python3 is built once into the target's tmp folder) and, for the references,
//! `slirp4netns` and `pasta` (Debian `passt`); a missing reference is skipped with a message.
//! `SBX_BENCH_NET_MIB` (default 1024) and `SBX_BENCH_NET_CONNS` (default 500) size the runs.
//! All links use MTU 1500, plus rows for sbx-net and pasta at pasta's default MTU 65520.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sbx_exec::{Client, ExecRequest};
use sbx_net::{
    CertificateAuthority, NetStack, NetStackHandle, Policy, Preset, Proxy, ProxyConfig, Scope,
    SocketAddrOrIp, StackConfig,
};
use sbx_ns::{AgentOptions, Bind, Config, Init, Ipv4Config, Sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn debian_root() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SBX_NET_DEBIAN_ROOT") {
        return Ok(PathBuf::from(p));
    }
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let done = tmp.join("sbx-net-debian-v1");
    if done.join("usr/bin/curl").exists() && done.join("usr/bin/python3").exists() {
        return Ok(done);
    }
    let building = tmp.join(format!("sbx-net-debian-building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    eprintln!("building a Debian root with curl and python3 (once)...");
    let out = Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            "--include=curl,ca-certificates,python3,iputils-ping,procps",
            "--aptopt=Acquire::Languages \"none\"",
            "--dpkgopt=force-unsafe-io",
            "bookworm",
        ])
        .arg(&building)
        .output()
        .map_err(|e| format!("mmdebstrap not available ({e})"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        return Err("mmdebstrap failed".into());
    }
    std::fs::rename(&building, &done).map_err(|e| e.to_string())?;
    Ok(done)
}

/// A loopback HTTP server: `/blob?len=N` streams N bytes, anything else answers `ok`.
async fn server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let block: Arc<Vec<u8>> = Arc::new((0..1u32 << 20).map(|i| (i * 7 + 3) as u8).collect());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let block = block.clone();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                if let Some(len) = path.strip_prefix("/blob?len=") {
                    let mut left: usize = len.parse().unwrap_or(0);
                    let h = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {left}\r\nConnection: close\r\n\r\n"
                    );
                    if s.write_all(h.as_bytes()).await.is_err() {
                        return;
                    }
                    while left > 0 {
                        let n = left.min(block.len());
                        if s.write_all(&block[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                } else {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

struct Backend {
    name: &'static str,
    sandbox: Option<Sandbox>,
    client: Client,
    base: String,
    _stack: Option<(NetStackHandle, Arc<Proxy>)>,
    helper: Option<Child>,
    state: PathBuf,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(mut c) = self.helper.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let ns_file = self.state.join("netns");
        if ns_file.exists() {
            let _ = Command::new("umount").arg(&ns_file).status();
        }
        if let Some(sb) = self.sandbox.take() {
            let _ = sb.stop_timeout(Duration::from_secs(2));
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// A sandbox; `ours`: with a TAP and static IPv4 for sbx-net's stack at `mtu`.
fn sandbox(root: &Path, state: &Path, ours: bool, mtu: u32) -> Sandbox {
    let _ = std::fs::remove_dir_all(state);
    std::fs::create_dir_all(state).unwrap();
    let resolv = state.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.77.0.1\n").unwrap();
    let mut cfg = Config::new(
        root,
        state.join("sb"),
        Init::new("/bin/sh", Vec::<String>::new()),
    )
    .with_bind(Bind::new(&resolv, "/etc/resolv.conf", true))
    .with_network(ours);
    if ours {
        cfg = cfg.with_ipv4(
            Ipv4Config::new(
                Ipv4Addr::new(10, 77, 0, 2),
                24,
                Some(Ipv4Addr::new(10, 77, 0, 1)),
            )
            .with_mtu(mtu),
        );
    }
    Sandbox::builder(cfg)
        .agent(AgentOptions::default())
        .start()
        .expect("start sandbox")
}

fn sh(c: &Client, script: &str) -> (i32, String, String) {
    let o = c
        .output(ExecRequest::new(["/bin/bash", "-c", script]))
        .unwrap();
    (
        o.status.shell_code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ours(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    dir: &Path,
    server: SocketAddr,
    name: &'static str,
) -> Backend {
    let big = name.ends_with("65520");
    let state = dir.join(name.replace(' ', "-"));
    let mtu = if big { 65520 } else { 1500 };
    let mut sb = sandbox(root, &state, true, mtu);
    let tap = sb.take_tap().expect("tap");
    let mut policy = Policy::new(Preset::DenyAll);
    policy.allow(&Scope::Global, "bench.test").unwrap();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let config = ProxyConfig::new(ca)
        .with_policy(policy)
        .with_override("bench.test", SocketAddrOrIp::Socket(server))
        .unwrap();
    let proxy = Arc::new(Proxy::new(config).unwrap());
    let stack = {
        let _g = rt.enter();
        NetStack::spawn(
            StackConfig::default().with_mtu(mtu as usize),
            tap.into(),
            proxy.clone(),
        )
        .unwrap()
    };
    let client = sb.client().unwrap();
    Backend {
        name,
        sandbox: Some(sb),
        client,
        base: "http://bench.test".into(),
        _stack: Some((stack, proxy)),
        helper: None,
        state,
    }
}

fn reference(name: &'static str, root: &Path, dir: &Path, server: SocketAddr) -> Option<Backend> {
    let bin = if name == "slirp4netns" {
        "slirp4netns"
    } else {
        "pasta"
    };
    // pasta's own default MTU (65520) as an extra row: its best case, which the sbx guest
    // (MTU 1500 on a plain TAP) cannot use.
    let mtu = if name == "pasta mtu 65520" {
        "65520"
    } else {
        "1500"
    };
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()));
    if !found {
        println!("{name}: skipped ({bin} not installed: apt-get install slirp4netns passt)");
        return None;
    }
    let state = dir.join(name.replace(' ', "-"));
    let sb = sandbox(root, &state, false, 1500);
    let pid = sb.pid().to_string();
    let mut cmd = Command::new(bin);
    // pasta drops CAP_SYS_PTRACE before opening /proc/PID/ns/*, so it gets the network
    // namespace through a bind mount (opening that needs no ptrace access).
    let ns_file = state.join("netns");
    if name == "slirp4netns" {
        cmd.args(["--configure", "--mtu=1500", &pid, "tap0"]);
    } else {
        std::fs::write(&ns_file, b"").unwrap();
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(format!("/proc/{pid}/ns/net"))
            .arg(&ns_file)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("{name}: skipped (could not bind-mount the sandbox's network namespace)");
            return None;
        }
        cmd.args([
            "--runas",
            "0:0",
            "--foreground",
            "--config-net",
            "--mtu",
            mtu,
            "-a",
            "10.0.2.100",
            "-n",
            "24",
            "-g",
            "10.0.2.2",
            "-t",
            "none",
            "-u",
            "none",
            "-T",
            "none",
            "-U",
            "none",
            "--quiet",
            "--netns-only",
            "--netns",
        ]);
        cmd.arg(&ns_file);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let client = sb.client().unwrap();
    let mut b = Backend {
        name,
        sandbox: Some(sb),
        client,
        base: format!("http://10.0.2.2:{}", server.port()),
        _stack: None,
        helper: Some(child),
        state,
    };
    // Wait for the interface and the path to the host.
    let t = Instant::now();
    loop {
        let (code, _, _) = sh(
            &b.client,
            &format!("curl -s -m 2 -o /dev/null {}/small", b.base),
        );
        if code == 0 {
            return Some(b);
        }
        if t.elapsed() > Duration::from_secs(15) {
            println!("{name}: skipped (no path to the host loopback after 15 s)");
            if let Some(mut c) = b.helper.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// MiB/s of the best of `runs` downloads of `mib` MiB.
fn throughput(b: &Backend, mib: usize, runs: usize) -> f64 {
    let mut best: f64 = 0.0;
    for _ in 0..runs {
        let (code, out, err) = sh(
            &b.client,
            &format!(
                "curl -sS -o /dev/null -w '%{{size_download}} %{{time_total}}' '{}/blob?len={}'",
                b.base,
                mib << 20
            ),
        );
        assert_eq!(code, 0, "{}: {err}", b.name);
        let mut it = out.split_whitespace();
        let bytes: f64 = it.next().unwrap().parse().unwrap();
        let secs: f64 = it.next().unwrap().parse().unwrap();
        assert_eq!(bytes as usize, mib << 20, "{}: short download", b.name);
        best = best.max(bytes / secs / (1 << 20) as f64);
    }
    best
}

/// Connections per second of `n` sequential connect + GET + read-to-EOF.
fn conn_rate(b: &Backend, n: usize) -> f64 {
    let (host, port) = match b.base.strip_prefix("http://").unwrap().split_once(':') {
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => (
            b.base.strip_prefix("http://").unwrap().to_string(),
            "80".into(),
        ),
    };
    let py = format!(
        "import socket, time\n\
         addr = socket.getaddrinfo('{host}', {port}, socket.AF_INET, socket.SOCK_STREAM)[0][4]\n\
         t = time.monotonic()\n\
         for _ in range({n}):\n\
         \x20   s = socket.create_connection(addr)\n\
         \x20   s.sendall(b'GET /small HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n')\n\
         \x20   while s.recv(4096):\n\
         \x20       pass\n\
         \x20   s.close()\n\
         print(time.monotonic() - t)\n"
    );
    let (code, out, err) = sh(&b.client, &format!("python3 -c \"{py}\""));
    assert_eq!(code, 0, "{}: {err}", b.name);
    n as f64 / out.trim().parse::<f64>().unwrap()
}

fn main() {
    sbx_ns::run_if_helper();
    sbx_guest::run_if_agent();
    let full = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (mib, conns, runs) = if full {
        (
            env("SBX_BENCH_NET_MIB", 1024),
            env("SBX_BENCH_NET_CONNS", 500),
            3,
        )
    } else {
        (16, 20, 1)
    };
    let root = match debian_root() {
        Ok(r) => r,
        Err(why) => {
            println!("netstack bench skipped: {why}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(server());
    let dir = std::env::temp_dir().join(format!("sbx-bench-net-{}", std::process::id()));
    let mut rows: Vec<(&str, f64, f64)> = Vec::new();
    for name in [
        "sbx-net stack",
        "slirp4netns",
        "pasta",
        "sbx-net mtu 65520",
        "pasta mtu 65520",
    ] {
        let b = if name.starts_with("sbx-net") {
            Some(ours(&rt, &root, &dir, server, name))
        } else {
            reference(name, &root, &dir, server)
        };
        let Some(b) = b else { continue };
        let tput = throughput(&b, mib, runs);
        let rate = conn_rate(&b, conns);
        println!(
            "{:<17} download {mib} MiB: {tput:>8.1} MiB/s   setup: {rate:>7.0} conn/s ({conns} sequential)",
            b.name
        );
        rows.push((b.name, tput, rate));
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Each sbx-net row against the references at the same MTU.
    println!("\nratios (sbx-net / reference, same MTU):");
    let find = |n: &str| rows.iter().find(|r| r.0 == n).map(|r| (r.1, r.2));
    for (ours, refs) in [
        ("sbx-net stack", &["slirp4netns", "pasta"][..]),
        ("sbx-net mtu 65520", &["pasta mtu 65520"][..]),
    ] {
        let Some((t0, r0)) = find(ours) else { continue };
        for name in refs {
            if let Some((t, r)) = find(name) {
                println!(
                    "  {ours:<17} vs {name:<16} throughput {:.2}x   connection setup {:.2}x",
                    t0 / t,
                    r0 / r
                );
            }
        }
    }
}
