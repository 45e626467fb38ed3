//! Workspaces end to end through the `sbx` binary on real namespace sandboxes (the backend
//! these machines use) on the default Debian image: mount mode (both ways, ownership, `:ro`,
//! symlinks, a renamed or deleted host folder) and clone mode (the `sandbox-<name>` remote).
//!
//! Same harness as `tests/lifecycle.rs`: a temporary `SBX_HOME` per test, one shared image
//! store (`SBX_IMAGES_DIR` if set, else `CARGO_TARGET_TMPDIR/sbx-image-store`). Needs root and
//! git; skips with the reason otherwise, except under `CI=true`, where it fails.
#![allow(clippy::print_stderr)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Home {
    dir: PathBuf,
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.sbx().args(["rm", "-f", "--all"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn images_dir() -> PathBuf {
    std::env::var_os("SBX_IMAGES_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbx-image-store"))
}

fn skip_reason() -> Option<String> {
    if !nix_is_root() {
        return Some("needs root (namespace sandboxes and the image build)".into());
    }
    if !Path::new("/proc/self/ns/user").exists() {
        return Some("no user namespaces".into());
    }
    if Command::new("git").arg("--version").output().is_err() {
        return Some("git is not installed".into());
    }
    None
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Home {
    fn new(name: &str) -> Option<Home> {
        if let Some(why) = skip_reason() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot run sandboxes under CI: {why}"
            );
            eprintln!("skipped: {why}");
            return None;
        }
        // Not under /tmp: a namespace sandbox has its own /tmp, and clone mode refuses it
        // (a checkout of this repository under /tmp puts the target folder there too).
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let base = if ["/tmp", "/run", "/dev"]
            .iter()
            .any(|p| target.starts_with(p))
        {
            Path::new("/var/tmp")
        } else {
            target
        };
        let dir = base.join(format!("sbx-ws-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"default_policy":"balanced"}"#).unwrap();
        Some(Home { dir })
    }

    fn sbx(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sbx"));
        c.env("SBX_HOME", &self.dir)
            .env("SBX_IMAGES_DIR", images_dir())
            .env_remove("SBX_LOG")
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .stdin(Stdio::null());
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

    /// `sbx exec NAME sh -c SCRIPT`, asserting success.
    fn sh(&self, name: &str, script: &str) -> String {
        self.ok(&["exec", name, "sh", "-c", script])
    }

    fn folder(&self, name: &str) -> PathBuf {
        let p = self.dir.join("host").join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// `sbx create ARGS...` as if run through `sudo` by host user 4242:4343.
    fn create_as_user(&self, args: &[&str]) {
        let out = self
            .sbx()
            .env("SUDO_UID", USER.0.to_string())
            .env("SUDO_GID", USER.1.to_string())
            .arg("create")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "create {args:?}: {}", show(&out));
    }

    fn ls_workspace(&self, name: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["ls", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["workspace"].as_str().unwrap_or("").to_owned())
            .unwrap()
    }
}

/// The host user the sandboxes of these tests are created for (as through `sudo`).
const USER: (u32, u32) = (4242, 4343);

/// Gives `p` and everything under it to [`USER`].
fn give_to_user(p: &Path) {
    std::os::unix::fs::lchown(p, Some(USER.0), Some(USER.1)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            give_to_user(&e.path());
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn mount_mode_shares_both_ways_ro_refuses_writes_and_links_stay_inside() {
    let Some(h) = Home::new("mount") else { return };
    let ws = h.folder("proj");
    let data = h.folder("data");
    let outside = h.folder("outside");
    std::fs::write(ws.join("from-host.txt"), "host wrote this\n").unwrap();
    std::fs::write(data.join("ref.txt"), "reference\n").unwrap();
    std::fs::write(outside.join("secret.txt"), "host-only marker\n").unwrap();
    std::os::unix::fs::symlink("/etc", ws.join("etc-link")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("outside-link")).unwrap();
    give_to_user(&ws);
    let ro = format!("{}:ro", s(&data));
    h.create_as_user(&[
        "--name",
        "m",
        "--isolation",
        "namespace",
        "shell",
        s(&ws),
        &ro,
    ]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.dir.join("sandboxes/m/sandbox.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["mounts"][0]["path"], s(&data));
    assert_eq!(cfg["mounts"][0]["read_only"], true);
    assert_eq!(cfg["clone"], false);

    // Host to guest, at the same absolute path, which is the agent's working folder.
    assert_eq!(
        h.sh("m", "pwd; cat from-host.txt"),
        format!("{}\nhost wrote this\n", s(&ws))
    );
    // Guest to host.
    h.sh("m", "echo guest wrote this > from-guest.txt");
    assert_eq!(
        std::fs::read_to_string(ws.join("from-guest.txt")).unwrap(),
        "guest wrote this\n"
    );
    let m = std::fs::metadata(ws.join("from-guest.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), USER, "the agent's files are the user's");
    // A host change shows up at once.
    std::fs::write(ws.join("from-host.txt"), "changed\n").unwrap();
    assert_eq!(h.sh("m", "cat from-host.txt"), "changed\n");

    // The extra folder is readable and refuses writes, even root's.
    assert_eq!(
        h.sh("m", &format!("cat {}/ref.txt", s(&data))),
        "reference\n"
    );
    for (user, cmd) in [
        ("agent", format!("echo x > {}/new.txt", s(&data))),
        ("root", format!("echo x > {}/new.txt", s(&data))),
        ("root", format!("rm {}/ref.txt", s(&data))),
    ] {
        let out = h.run(&["exec", "-u", user, "m", "sh", "-c", &cmd]);
        assert!(!out.status.success(), "{user}: {cmd}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "{}",
            show(&out)
        );
    }
    assert!(!data.join("new.txt").exists());
    assert!(data.join("ref.txt").exists());

    // Links resolve inside the sandbox: /etc is the sandbox's, and a folder outside the
    // workspace simply is not there.
    let host_hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let inside = h.sh("m", "cat etc-link/hostname");
    assert_eq!(inside, h.sh("m", "cat /etc/hostname"));
    if host_hostname != inside {
        assert_ne!(inside, host_hostname, "the host's /etc is not visible");
    }
    let out = h.run(&["exec", "m", "cat", "outside-link/secret.txt"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such file or directory"),
        "{}",
        show(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("host-only marker"));
    // The guest's own writes through a link land in the guest, not on the host.
    h.ok(&[
        "exec",
        "-u",
        "root",
        "m",
        "sh",
        "-c",
        "echo guest > etc-link/sbx-link-test",
    ]);
    assert!(!Path::new("/etc/sbx-link-test").exists());
    h.ok(&["rm", "-f", "m"]);
    assert_eq!(
        std::fs::read_to_string(ws.join("from-guest.txt")).unwrap(),
        "guest wrote this\n",
        "rm leaves the workspace alone"
    );
}

#[test]
fn ownership_as_root_and_through_sudo() {
    let Some(h) = Home::new("owner") else { return };
    // Plain root (no SUDO_UID): ids map one to one. Root's files stay root's inside, so the
    // agent cannot write them; what the agent creates is host uid 1000; root inside is root.
    let ws = h.folder("root-ws");
    std::fs::write(ws.join("a.txt"), "x\n").unwrap();
    let out = h.run(&[
        "create",
        "--name",
        "r",
        "--isolation",
        "namespace",
        "shell",
        s(&ws),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "sbx: {} belongs to host uid 0, and the agent is uid 1000",
            s(&ws)
        )),
        "{err}"
    );
    assert_eq!(h.sh("r", "stat -c %u:%g a.txt"), "0:0\n");
    let out = h.run(&["exec", "r", "sh", "-c", "echo y >> a.txt"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    h.sh(
        "r",
        "sudo -n mkdir shared && sudo -n chmod 1777 shared && touch shared/by-agent",
    );
    let m = std::fs::metadata(ws.join("shared/by-agent")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    let m = std::fs::metadata(ws.join("shared")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "root inside is host root");

    // Through sudo by uid 4242: the agent sees that user's files as its own, and what it
    // creates belongs to the user on the host; its home and sudo keep working.
    let ws = h.folder("user-ws");
    std::fs::write(ws.join("a.txt"), "x\n").unwrap();
    std::os::unix::fs::chown(&ws, Some(4242), Some(4343)).unwrap();
    std::os::unix::fs::chown(ws.join("a.txt"), Some(4242), Some(4343)).unwrap();
    let out = h
        .sbx()
        .env("SUDO_UID", "4242")
        .env("SUDO_GID", "4343")
        .args([
            "create",
            "--name",
            "u",
            "--isolation",
            "namespace",
            "shell",
            s(&ws),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.dir.join("sandboxes/u/sandbox.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["owner"], serde_json::json!({"uid": 4242, "gid": 4343}));
    assert_eq!(
        h.sh(
            "u",
            "id -u; stat -c %U:%G a.txt ~ ~/.bashrc; echo y >> a.txt; mkdir d; echo z > d/new; echo h > ~/home-file; sudo -n id -u"
        ),
        "1000\nagent:agent\nagent:agent\nagent:agent\n0\n"
    );
    for p in ["a.txt", "d", "d/new"] {
        let m = std::fs::metadata(ws.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 4343), "{p}");
    }
    h.sh("u", "sudo -n touch by-root");
    let m = std::fs::metadata(ws.join("by-root")).unwrap();
    assert_eq!(m.uid(), 0, "root inside is still host root");
}

#[test]
fn a_renamed_or_deleted_workspace() {
    let Some(h) = Home::new("gone") else { return };
    let ws = h.folder("proj");
    std::fs::write(ws.join("a.txt"), "a\n").unwrap();
    give_to_user(&ws);
    h.create_as_user(&["--name", "g", "--isolation", "namespace", "shell", s(&ws)]);
    assert_eq!(h.sh("g", "cat a.txt"), "a\n");
    // Renamed while running: the mount follows the folder (same inode).
    let moved = h.dir.join("host").join("proj-moved");
    std::fs::rename(&ws, &moved).unwrap();
    assert_eq!(h.sh("g", "cat a.txt; echo b > b.txt"), "a\n");
    assert_eq!(std::fs::read_to_string(moved.join("b.txt")).unwrap(), "b\n");
    assert_eq!(h.ls_workspace("g"), format!("{} (missing)", s(&ws)));
    // The next start says what is wrong.
    h.ok(&["stop", "g"]);
    let out = h.run(&["exec", "g", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the workspace {} of sandbox g is missing on the host",
            s(&ws)
        )),
        "{err}"
    );
    // Put back, it starts again.
    std::fs::rename(&moved, &ws).unwrap();
    assert_eq!(h.sh("g", "cat b.txt"), "b\n");
    assert_eq!(h.ls_workspace("g"), s(&ws));

    // Deleted while running: the sandbox keeps running; commands in the folder get ENOENT.
    std::fs::remove_dir_all(&ws).unwrap();
    let out = h.run(&["exec", "g", "touch", "c.txt"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such file or directory"),
        "{}",
        show(&out)
    );
    assert_eq!(
        h.ok(&["exec", "-w", "/", "g", "sh", "-c", "echo still-running"]),
        "still-running\n"
    );
    h.ok(&["stop", "g"]);
    let out = h.run(&["run", "g", "--", "-c", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is missing on the host"));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Host")
        .env("GIT_AUTHOR_EMAIL", "host@example.com")
        .env("GIT_COMMITTER_NAME", "Host")
        .env("GIT_COMMITTER_EMAIL", "host@example.com")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// sha256 of every file under `dir` except `.git`, sorted by path.
fn tree_hashes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if e.file_name() == ".git" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                let m = std::fs::metadata(&p).unwrap();
                let mut key = bytes;
                key.extend_from_slice(&m.mtime().to_le_bytes());
                out.push((p.strip_prefix(root).unwrap().to_owned(), key));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn clone_mode_serves_the_agents_commits_through_the_sandbox_remote() {
    let Some(h) = Home::new("clone") else { return };
    let repo = h.folder("repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "host\n").unwrap();
    std::fs::write(repo.join("dirty.txt"), "uncommitted\n").unwrap();
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-q", "-m", "host commit"]);
    git(
        &repo,
        &["remote", "add", "origin", "https://example.com/app.git"],
    );
    git(
        &repo,
        &["remote", "add", "upstream", "https://example.com/up.git"],
    );
    let before = tree_hashes(&repo);
    let status_before = git(&repo, &["status", "--porcelain"]);

    h.ok(&[
        "create",
        "--clone",
        "--name",
        "c",
        "--isolation",
        "namespace",
        "shell",
        s(&repo),
    ]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.dir.join("sandboxes/c/sandbox.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["clone"], true);
    assert_eq!(
        git(&repo, &["config", "--get", "remote.sandbox-c.url"]).trim(),
        s(&h.dir.join("sandboxes/c/git"))
    );
    assert!(h.ls_workspace("c").ends_with(" (clone)"));

    // Inside: a private clone at the same path, on the host's branch, remotes copied.
    let out = h.sh(
        "c",
        "pwd; git rev-parse --abbrev-ref HEAD; git config --get remote.origin.url; \
         git config --get remote.upstream.url; git remote; cat README; test -e dirty.txt || echo clean; \
         stat -c %U .git/index",
    );
    assert_eq!(
        out,
        format!(
            "{}\nmain\nhttps://example.com/app.git\nhttps://example.com/up.git\nhost\norigin\nupstream\nhost\nclean\nagent\n",
            s(&repo)
        )
    );
    // The host repository is visible read-only.
    let out = h.run(&["exec", "c", "touch", "/run/sbx/host-repo/x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));

    // The agent commits; the host fetches it through the sandbox remote.
    h.sh(
        "c",
        "echo 'agent change' > agent.txt && git add agent.txt && \
         git -c user.name=Agent -c user.email=agent@example.com commit -q -m 'agent commit'",
    );
    let agent_head = h.sh("c", "git rev-parse HEAD");
    git(&repo, &["fetch", "-q", "sandbox-c"]);
    assert_eq!(git(&repo, &["rev-parse", "sandbox-c/main"]), agent_head);
    let diff = git(&repo, &["diff", "main..sandbox-c/main"]);
    assert!(diff.contains("+agent change"), "{diff}");
    // Protocol v2 too.
    git(
        &repo,
        &["-c", "protocol.version=2", "fetch", "-q", "sandbox-c"],
    );
    // The host working tree, index and branch are untouched.
    assert_eq!(tree_hashes(&repo), before);
    assert_eq!(git(&repo, &["status", "--porcelain"]), status_before);
    assert!(!repo.join("agent.txt").exists());
    assert_eq!(git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]), "main\n");

    // Stopped, the remote starts it again; the clone survived.
    h.ok(&["stop", "c"]);
    h.sh(
        "c",
        "echo more >> agent.txt && git -c user.name=Agent -c user.email=agent@example.com commit -qam second",
    );
    h.ok(&["stop", "c"]);
    git(&repo, &["fetch", "-q", "sandbox-c"]);
    assert_eq!(
        git(&repo, &["log", "--format=%s", "-1", "sandbox-c/main"]),
        "second\n"
    );

    // rm warns about commits the host has not fetched, then removes the remote.
    h.sh(
        "c",
        "git checkout -q -b feature && git -c user.name=A -c user.email=a@x commit -q --allow-empty -m unfetched",
    );
    let unfetched = h.sh("c", "git rev-parse --short=12 feature");
    let out = h.run(&["rm", "-f", "c"]);
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("c holds commits the host has not fetched"),
        "{err}"
    );
    assert!(
        err.contains(&format!("feature {}", unfetched.trim())),
        "{err}"
    );
    assert!(!err.contains("main "), "main was fetched: {err}");
    assert_eq!(git(&repo, &["remote"]), "origin\nupstream\n");
    assert_eq!(git(&repo, &["branch", "-r"]), "");
    assert_eq!(tree_hashes(&repo), before);
}

#[test]
fn clone_mode_needs_a_repository() {
    let Some(h) = Home::new("clone-err") else {
        return;
    };
    let plain = h.folder("plain");
    let out = h.run(&[
        "create",
        "--clone",
        "--isolation",
        "namespace",
        "shell",
        s(&plain),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no .git folder"));
    let out = h.run(&["create", "--clone", "--isolation", "namespace", "shell"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clone needs a PATH"));
    assert_eq!(h.ok(&["ls", "-q"]), "", "nothing half-made");
}
