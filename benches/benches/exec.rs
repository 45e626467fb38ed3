//! `exec true` round trip (median, p99 over 1,000 runs) and 1 GiB stream throughput each way,
//! into a running namespace sandbox whose PID 1 is the agent, with references measured in the
//! same run: spawning `true` directly on the host, and 1 GiB through a local pipe.
//!
//! The agent is this very binary (installed into the sandbox root with its libraries and
//! started as `sbx-guest` through the multi-call hook), so no separate build is needed.
//! Needs root and util-linux `unshare`; `busybox` (busybox-static) for the root.
//! `SBX_BENCH_EXEC_RUNS` overrides the 1,000 runs.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sbx_benches::{median, percentile};
use sbx_exec::{Client, ExecRequest};

const GIB: usize = 1 << 30;

struct Sandbox {
    dir: PathBuf,
    child: Child,
    client: Client,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.client.shutdown();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn busybox_root(root: &Path) -> std::io::Result<()> {
    for d in [
        "bin", "usr/bin", "sbin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "run",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    let list = Command::new("/bin/busybox").arg("--list-full").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join(applet);
        if applet != "bin/busybox" && !link.exists() {
            std::fs::create_dir_all(link.parent().unwrap_or(root))?;
            std::os::unix::fs::symlink("/bin/busybox", &link)?;
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
}

fn start() -> Result<Sandbox, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sbx-bench-exec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    busybox_root(&root)?;
    let agent = sbx_guest::install_agent(&root, None)?;
    let sock = dir.join("exec.sock");
    let listener = UnixListener::bind(&sock)?;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount", "--uts", "--kill-child"])
        .arg(format!("--root={}", root.display()))
        .args(agent.command(["--listen-fd", "3", "--hostname", "bench"]))
        .stdin(Stdio::null());
    // SAFETY: dup2/fcntl are async-signal-safe; `fd` is open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(listener);
    let client = Client::unix(&sock);
    Ok(Sandbox { dir, child, client })
}

fn stats(name: &str, samples: &[Duration]) -> Duration {
    let med = median(samples);
    println!(
        "{name:<34} median {:>8.3} ms   p99 {:>8.3} ms   (n={})",
        med.as_secs_f64() * 1e3,
        percentile(samples, 99.0).as_secs_f64() * 1e3,
        samples.len()
    );
    med
}

fn throughput(name: &str, bytes: usize, t: Duration) -> f64 {
    let mbs = bytes as f64 / t.as_secs_f64() / 1e6;
    println!("{name:<34} {mbs:>8.0} MB/s   ({:.2} s)", t.as_secs_f64());
    mbs
}

fn main() {
    sbx_guest::run_if_agent();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/bin/busybox").exists() {
        eprintln!("exec bench: needs root and /bin/busybox (busybox-static); skipped");
        return;
    }
    let runs: usize = std::env::var("SBX_BENCH_EXEC_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let sb = match start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("exec bench: cannot start the sandbox: {e}");
            std::process::exit(1);
        }
    };
    let c = &sb.client;
    // Warm up (and wait until the agent serves).
    for _ in 0..20 {
        c.output(ExecRequest::new(["true"])).expect("exec true");
    }

    let mut rt = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = c.output(ExecRequest::new(["true"])).expect("exec true");
        rt.push(t.elapsed());
        assert!(out.status.success());
    }
    let mut host = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let st = Command::new("true").status().expect("true");
        host.push(t.elapsed());
        assert!(st.success());
    }
    println!("== exec round trip ==");
    let a = stats("sbx exec true (namespace sandbox)", &rt);
    let b = stats("reference: spawn true on the host", &host);
    println!(
        "ratio sbx/reference: {:.2}x",
        a.as_secs_f64() / b.as_secs_f64()
    );

    println!("== 1 GiB stream ==");
    // The same busybox producer and consumer run in the sandbox and, for the reference, on the
    // host through a plain pipe, so the difference is the agent and the protocol. The agent
    // gives commands 1 MiB pipes; the reference pipe keeps the default 64 KiB, which is why the
    // sandbox can come out ahead.
    let dd = ["dd", "if=/dev/zero", "bs=1M", "count=1024"];
    let mut s = c.exec(ExecRequest::new(dd)).expect("exec dd");
    let t = Instant::now();
    let n = drain(s.take_stdout().expect("stdout"));
    let out_t = t.elapsed();
    assert_eq!(n, GIB);
    assert!(s.wait().expect("wait").success());
    let out_mbs = throughput("guest -> host (dd | agent)", GIB, out_t);

    let mut s = c
        .exec(ExecRequest::new(["sh", "-c", "cat > /dev/null"]))
        .expect("exec cat");
    let t = Instant::now();
    fill(s.take_stdin().expect("stdin"));
    assert!(s.wait().expect("wait").success());
    let in_mbs = throughput("host -> guest (agent | cat)", GIB, t.elapsed());

    let t = Instant::now();
    let mut child = Command::new("/bin/busybox")
        .args(dd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("busybox dd");
    let n = drain(child.stdout.take().expect("stdout"));
    let _ = child.wait();
    assert_eq!(n, GIB);
    let ref_out = throughput("reference: dd | host pipe", GIB, t.elapsed());

    let t = Instant::now();
    let mut child = Command::new("/bin/busybox")
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("busybox cat");
    fill(child.stdin.take().expect("stdin"));
    let _ = child.wait();
    let ref_in = throughput("reference: host pipe | cat", GIB, t.elapsed());
    println!(
        "ratio sbx/reference: out {:.2}x, in {:.2}x",
        out_mbs / ref_out,
        in_mbs / ref_in
    );
}

fn drain(mut r: impl Read) -> usize {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let k = r.read(&mut buf).expect("read");
        if k == 0 {
            return n;
        }
        n += k;
    }
}

fn fill(mut w: impl Write) {
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..GIB / chunk.len() {
        w.write_all(&chunk).expect("write");
    }
}
