//! Clone mode (`sbx create --clone AGENT PATH`): the host repository is mounted read-only at
//! [`HOST_REPO`] inside, and at the first start the agent gets a private clone at the
//! workspace path on the sandbox's own disk (own index, refs and config; the host's `origin`
//! and `upstream` URLs copied in; the host's current branch checked out; the host repository
//! itself is the clone's remote `host`).
//!
//! On the host, `sbx` adds the remote `sandbox-<name>` to the repository:
//!
//! ```text
//! [remote "sandbox-<name>"]
//!     url = <data dir>/sandboxes/<name>/git
//!     uploadpack = SBX_HOME='<data dir>' '<sbx>' __git-upload-pack <name>
//!     fetch = +refs/heads/*:refs/remotes/sandbox-<name>/*
//! ```
//!
//! The URL is a local path that does not exist; git runs `uploadpack` through the shell with
//! the URL appended, and `sbx __git-upload-pack` runs `git-upload-pack` on the clone inside
//! the sandbox (starting it if stopped) with stdin and stdout bridged byte for byte. So
//! `git fetch sandbox-<name>` brings the agent's commits and touches nothing but refs and
//! objects. `sbx rm` removes the remote, and first warns about branch heads the host has not
//! fetched.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use sbx_exec::Client;

use super::config::SandboxConfig;
use super::state::Layout;
use super::supervisor;
use super::workspace::HOST_REPO;

/// The host remote of sandbox `name`.
pub fn remote_name(name: &str) -> String {
    format!("sandbox-{name}")
}

/// `'...'` for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Checks that `ws` can be cloned: the top folder of a repository with its own `.git` folder.
pub fn validate(ws: &Path) -> anyhow::Result<()> {
    check_git(ws)?;
    check_location(ws)
}

fn check_location(ws: &Path) -> anyhow::Result<()> {
    // The clone lives at the same path on the sandbox's disk; these are memory file systems
    // (or not files at all) inside, so a clone there would vanish at every stop.
    for fs in ["/tmp", "/run", "/dev", "/proc", "/sys"] {
        if ws.starts_with(fs) {
            bail!(
                "--clone: {} is under {fs}, which is not on the sandbox's disk (the clone is made at the same path inside and would be lost at every stop); move the repository elsewhere, or use mount mode (no --clone)",
                ws.display()
            );
        }
    }
    Ok(())
}

fn check_git(ws: &Path) -> anyhow::Result<()> {
    let git = ws.join(".git");
    if git.is_file() {
        bail!(
            "--clone: {} is a git worktree (its .git is a file pointing elsewhere); use the main checkout",
            ws.display()
        );
    }
    if !git.is_dir() {
        bail!(
            "--clone needs the top folder of a git repository: {} has no .git folder",
            ws.display()
        );
    }
    Ok(())
}

/// `git -C ws` with the repository marked safe (sbx may run as root over a user's repository;
/// only plumbing that runs no repository-configured programs is used).
fn host_git(ws: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-c")
        .arg(format!("safe.directory={}", ws.display()))
        .arg("-C")
        .arg(ws)
        .stdin(Stdio::null());
    c
}

fn run_git(mut c: Command, what: &str) -> anyhow::Result<String> {
    let out = c
        .output()
        .with_context(|| format!("{what}: running git (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The shell command git runs to reach the sandbox (`remote.<r>.uploadpack`).
pub fn upload_pack_command(layout: &Layout, name: &str, exe: &Path) -> String {
    let mut cmd = String::new();
    // Under sudo the user's own `git fetch` needs root again to reach the sandbox.
    if nix::unistd::geteuid().is_root() && std::env::var_os("SUDO_UID").is_some() {
        cmd.push_str("sudo --preserve-env=GIT_PROTOCOL ");
    }
    cmd.push_str(&format!(
        "SBX_HOME={} ",
        sh_quote(&layout.data_dir.to_string_lossy())
    ));
    if let Some(images) = std::env::var_os("SBX_IMAGES_DIR").filter(|v| !v.is_empty()) {
        cmd.push_str(&format!(
            "SBX_IMAGES_DIR={} ",
            sh_quote(&images.to_string_lossy())
        ));
    }
    cmd.push_str(&format!(
        "{} __git-upload-pack {}",
        sh_quote(&exe.to_string_lossy()),
        name
    ));
    cmd
}

/// Keeps a file's owner across a rewrite by git running as root.
fn with_owner_kept<T>(file: &Path, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(file).ok().map(|m| (m.uid(), m.gid()));
    let r = f();
    if let Some((uid, gid)) = before {
        let now = std::fs::metadata(file).ok().map(|m| (m.uid(), m.gid()));
        if now.is_some() && now != Some((uid, gid)) {
            let _ = std::os::unix::fs::chown(file, Some(uid), Some(gid));
        }
    }
    r
}

/// Adds the `sandbox-<name>` remote to the host repository (create time).
pub fn add_remote(layout: &Layout, cfg: &SandboxConfig) -> anyhow::Result<()> {
    let ws = cfg
        .workspace
        .as_deref()
        .context("--clone needs a PATH: the repository to clone")?;
    let remote = remote_name(&cfg.name);
    let exe = std::env::current_exe().context("finding the sbx executable")?;
    let url = layout.sandbox(&cfg.name).dir.join("git");
    let config = ws.join(".git").join("config");
    with_owner_kept(&config, || {
        // A remote left by an earlier sandbox of the same name is replaced.
        let mut c = host_git(ws);
        c.args(["remote", "remove", &remote]).stderr(Stdio::null());
        let _ = c.status();
        let set = |key: &str, value: &str| {
            let mut c = host_git(ws);
            c.args(["config", &format!("remote.{remote}.{key}"), value]);
            run_git(c, &format!("adding the git remote {remote}"))
        };
        set("url", &url.to_string_lossy())?;
        set("fetch", &format!("+refs/heads/*:refs/remotes/{remote}/*"))?;
        set("uploadpack", &upload_pack_command(layout, &cfg.name, &exe))?;
        Ok(())
    })
}

/// Removes the `sandbox-<name>` remote (and its remote-tracking refs) from the host repository.
pub fn remove_remote(cfg: &SandboxConfig) -> anyhow::Result<()> {
    let Some(ws) = cfg
        .workspace
        .as_deref()
        .filter(|_| cfg.workspace_mode.clone)
    else {
        return Ok(());
    };
    if !ws.join(".git").is_dir() {
        return Ok(());
    }
    let remote = remote_name(&cfg.name);
    with_owner_kept(&ws.join(".git").join("config"), || {
        let mut c = host_git(ws);
        c.args(["remote", "remove", &remote]);
        run_git(c, &format!("removing the git remote {remote}")).map(|_| ())
    })
}

/// Branch heads of the sandbox's clone whose commits the host repository does not have:
/// `(branch, sha)`. Asks the sandbox directly (starting it if stopped); on the host only
/// object lookups run, never a command from the repository's config.
pub fn unfetched(layout: &Layout, cfg: &SandboxConfig) -> anyhow::Result<Vec<(String, String)>> {
    let Some(ws) = cfg
        .workspace
        .as_deref()
        .filter(|_| cfg.workspace_mode.clone)
    else {
        return Ok(Vec::new());
    };
    let dir = layout.sandbox(&cfg.name);
    let client = super::lifecycle::ensure_running(layout, &dir, cfg)?;
    let argv: Vec<String> = [
        "git",
        "for-each-ref",
        "--format=%(objectname) %(refname:short)",
        "refs/heads",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = client.output(supervisor::request(cfg, &argv, "agent", ws))?;
    if !out.status.success() {
        bail!(
            "listing the clone's branches failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut missing = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((sha, branch)) = line.split_once(' ') else {
            continue;
        };
        if !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let mut c = host_git(ws);
        c.args(["cat-file", "-e", &format!("{sha}^{{commit}}")])
            .stderr(Stdio::null());
        if !c.status().is_ok_and(|s| s.success()) {
            missing.push((branch.to_owned(), sha.to_owned()));
        }
    }
    Ok(missing)
}

/// Before `sbx rm`: warns on stderr about commits only the sandbox holds.
pub fn warn_before_rm(layout: &Layout, cfg: &SandboxConfig) {
    if !cfg.workspace_mode.clone {
        return;
    }
    let remote = remote_name(&cfg.name);
    let found = unfetched(layout, cfg);
    let mut err = std::io::stderr().lock();
    match found {
        Ok(list) if list.is_empty() => {}
        Ok(list) => {
            let _ = writeln!(
                err,
                "sbx: warning: {} holds commits the host has not fetched (they are deleted with it; `git fetch {remote}` first to keep them):",
                cfg.name
            );
            for (branch, sha) in list {
                let _ = writeln!(err, "     {branch} {}", &sha[..sha.len().min(12)]);
            }
        }
        Err(e) => {
            let _ = writeln!(
                err,
                "sbx: warning: could not check {} for commits the host has not fetched: {e:#}",
                cfg.name
            );
        }
    }
}

/// The argv (run as `agent`) that makes the clone at the first start.
pub fn clone_argv(ws: &Path) -> Vec<String> {
    let script = r#"set -e
ws="$1"; host="$2"
# The host repository belongs to a host user, not to agent.
for d in "$host" "$host/.git"; do
    git config --global --get-all safe.directory | grep -qxF "$d" ||
        git config --global --add safe.directory "$d"
done
git clone --quiet --no-hardlinks "$host" "$ws"
cd "$ws"
git remote rename origin host
for r in origin upstream; do
    if url=$(git -C "$host" config --get "remote.$r.url"); then
        git remote add "$r" "$url"
    fi
done
"#;
    vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        ws.to_string_lossy().into_owned(),
        HOST_REPO.into(),
    ]
}

/// First start of a clone-mode sandbox: the workspace folder (owned by `agent`), then the
/// clone. Does nothing for other sandboxes or when the clone exists.
pub fn first_start(cfg: &SandboxConfig, client: &Client) -> anyhow::Result<()> {
    let Some(ws) = cfg
        .workspace
        .as_deref()
        .filter(|_| cfg.workspace_mode.clone)
    else {
        return Ok(());
    };
    let root = Path::new("/");
    let check = |argv: Vec<String>, user: &str, what: &str| -> anyhow::Result<()> {
        let out = client
            .output(supervisor::request(cfg, &argv, user, root))
            .with_context(|| what.to_owned())?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let have = client.output(supervisor::request(
        cfg,
        &[
            "test".into(),
            "-d".into(),
            ws.join(".git").to_string_lossy().into_owned(),
        ],
        "root",
        root,
    ))?;
    if have.status.success() {
        return Ok(());
    }
    let ws_s = ws.to_string_lossy().into_owned();
    check(
        vec![
            "install".into(),
            "-d".into(),
            "-o".into(),
            "agent".into(),
            "-g".into(),
            "agent".into(),
            ws_s,
        ],
        "root",
        "creating the clone's folder",
    )?;
    check(
        clone_argv(ws),
        "agent",
        "cloning the host repository in the sandbox",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        let out = Command::new("sh")
            .args(["-c", &format!("printf %s {}", sh_quote("x'y \"$HOME\""))])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"x'y \"$HOME\"");
    }

    #[test]
    fn the_upload_pack_command_names_the_data_dir_and_sandbox() {
        let layout = Layout {
            data_dir: "/d/sbx home".into(),
        };
        let cmd = upload_pack_command(&layout, "shell-app", Path::new("/usr/bin/sbx"));
        assert!(cmd.contains("SBX_HOME='/d/sbx home' "), "{cmd}");
        assert!(
            cmd.ends_with("'/usr/bin/sbx' __git-upload-pack shell-app"),
            "{cmd}"
        );
    }

    #[test]
    fn only_repository_tops_can_be_cloned() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_git(d.path()).is_err());
        std::fs::write(d.path().join(".git"), "gitdir: /x").unwrap();
        assert!(check_git(d.path())
            .unwrap_err()
            .to_string()
            .contains("worktree"));
        std::fs::remove_file(d.path().join(".git")).unwrap();
        std::fs::create_dir(d.path().join(".git")).unwrap();
        assert!(check_git(d.path()).is_ok());
        assert!(check_location(Path::new("/home/u/app")).is_ok());
        let e = check_location(Path::new("/tmp/x")).unwrap_err().to_string();
        assert!(e.contains("under /tmp"), "{e}");
    }
}
