//! A throwaway namespace sandbox: a busybox root, the agent as PID 1 of fresh pid, mount and
//! UTS namespaces (util-linux `unshare`), driven over an inherited listening socket.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sbx_exec::Client;

/// A unique scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "sbx-guest-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds a busybox-static root at `root` with root and `agent` (1000) users.
pub fn build_busybox_root(root: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox-static is installed (apt-get install -y busybox-static)");
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "root",
        "home/agent",
        "tmp",
        "proc",
        "sys",
        "dev",
        "run",
        "sock",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list-full").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let link = root.join(applet);
        if applet == "bin/busybox" || link.exists() {
            continue;
        }
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", &link).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:Agent:/home/agent:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwheel:x:10:agent\nagent:x:1000:\n",
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("home/agent"), Some(1000), Some(1000)).unwrap();
}

/// The agent binary built for these tests, or `SBX_TEST_AGENT_EXE` (e.g. a statically linked
/// build) when set.
pub fn agent_exe() -> PathBuf {
    std::env::var_os("SBX_TEST_AGENT_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sbx-guest")))
}

/// A running sandbox.
pub struct Sandbox {
    pub dir: TempDir,
    pub root: PathBuf,
    pub sock: PathBuf,
    pub child: Option<Child>,
    pub client: Client,
}

/// Options for [`Sandbox::start_with`].
#[derive(Default)]
pub struct Opts<'a> {
    /// Extra agent flags.
    pub args: &'a [&'a str],
    /// Listen on `/sock/exec.sock` inside the root instead of an inherited fd.
    pub listen_path: bool,
    /// Start in the host's root (no chroot) with the agent binary as built; for tests that
    /// move to another root themselves (switch_root).
    pub host_root: bool,
    /// Run in this named network namespace (`ip netns exec`) instead of the host's.
    pub netns: Option<&'a str>,
    /// Files to create in the root before the agent starts: (path inside the root, contents).
    pub files: &'a [(&'a str, &'a [u8])],
}

impl Sandbox {
    pub fn start() -> Self {
        Self::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts<'_>) -> Self {
        let dir = TempDir::new("sb");
        let root = dir.0.join("root");
        build_busybox_root(&root);
        for (path, data) in opts.files {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let argv0: Vec<std::ffi::OsString> = if opts.host_root {
            vec![agent_exe().into_os_string()]
        } else {
            sbx_guest::install_agent(&root, Some(&agent_exe()))
                .unwrap()
                .argv
        };
        let mut args: Vec<String> = vec![
            "--hostname".into(),
            "sbx-test".into(),
            "--shutdown-grace-ms".into(),
            "500".into(),
            "--log".into(),
            std::env::var("SBX_TEST_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
        ];
        let sock;
        let listener;
        if opts.listen_path {
            sock = root.join("sock/exec.sock");
            args.extend(["--listen".into(), "/sock/exec.sock".into()]);
            listener = None;
        } else {
            sock = dir.0.join("exec.sock");
            listener = Some(UnixListener::bind(&sock).unwrap());
            args.extend(["--listen-fd".into(), "3".into()]);
        }
        args.extend(opts.args.iter().map(|s| s.to_string()));
        let mut cmd = match opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "unshare"]);
                c
            }
            None => Command::new("unshare"),
        };
        cmd.args(["--pid", "--fork", "--mount", "--uts", "--kill-child"]);
        if !opts.host_root {
            cmd.arg(format!("--root={}", root.display()));
        }
        cmd.args(&argv0).args(&args).stdin(Stdio::null());
        if let Some(l) = &listener {
            let fd = l.as_raw_fd();
            // SAFETY: dup2/fcntl are async-signal-safe; `fd` stays open in the parent until
            // after spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    if fd == 3 {
                        if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("unshare runs");
        drop(listener);
        if opts.listen_path {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !sock.exists() {
                assert!(Instant::now() < deadline, "agent socket never appeared");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let client = Client::unix(&sock);
        Self {
            dir,
            root,
            sock,
            child: Some(child),
            client,
        }
    }

    /// Waits for the sandbox (unshare) to end, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The host pid of the sandbox's PID 1 (unshare's child).
    pub fn init_host_pid(&self) -> i32 {
        let upid = self.child.as_ref().unwrap().id();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children")).unwrap();
            if let Some(p) = children.split_whitespace().next() {
                return p.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "no PID 1 under unshare");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("did not finish within {secs} s (hang?)"))
}
