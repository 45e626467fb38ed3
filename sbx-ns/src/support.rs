//! Can this host run the namespace backend, and if not, why not.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::config::Helper;
use crate::proto::{self, FromHelper, ToHelper, HELPER_ENV};

/// The answer of [`host_support`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Support {
    /// Everything the backend needs works.
    pub ok: bool,
    /// One line per missing piece (empty when `ok`).
    pub reasons: Vec<String>,
    /// The check ran without root (root inside will be the invoking user only).
    pub rootless: bool,
    /// What works in a weaker form: missing cgroup controllers mean sandboxes run without
    /// those resource limits.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ProbeResult {
    pub userns: Option<String>,
    pub overlay: Option<String>,
    pub tap: Option<String>,
}

/// Mounts an overlay of fresh directories under `dir` (inside the probe's namespaces).
pub(crate) fn probe_overlay(dir: &Path) -> Result<(), String> {
    let sub = |n: &str| dir.join(n);
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(sub(d)).map_err(|e| format!("mkdir {}: {e}", sub(d).display()))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        sub("lower").display(),
        sub("upper").display(),
        sub("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &sub("merged"),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| format!("overlayfs in a user namespace: {e}"))?;
    std::fs::write(sub("merged").join("probe"), b"x").map_err(|e| format!("write to overlay: {e}"))
}

fn static_checks(reasons: &mut Vec<String>) {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        reasons.push("user namespaces are disabled (user.max_user_namespaces = 0)".into());
    }
    let root = nix::unistd::geteuid().is_root();
    if !root && read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        reasons.push(
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)"
                .into(),
        );
    }
    if !root
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        reasons.push("AppArmor restricts unprivileged user namespaces".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        reasons.push("/dev/net/tun is missing (no TAP devices)".into());
    }
}

fn helper_path(helper: &Helper) -> PathBuf {
    match helper {
        Helper::CurrentExe => PathBuf::from("/proc/self/exe"),
        Helper::Path(p) => p.clone(),
    }
}

/// Checks whether this host can run namespace sandboxes: user namespaces, overlayfs inside a
/// user namespace (with scratch directories under `scratch`, which should be on the file
/// system that will hold sandbox state), and TAP devices. Runs a real probe through `helper`.
pub fn host_support(helper: &Helper, scratch: &Path) -> Support {
    let mut reasons = Vec::new();
    static_checks(&mut reasons);
    let dir = scratch.join(format!(".sbx-ns-probe-{}", std::process::id()));
    match run_probe(helper, &dir) {
        Ok(r) => {
            for (what, e) in [
                ("user namespace", r.userns),
                ("overlayfs", r.overlay),
                ("TAP", r.tap),
            ] {
                if let Some(e) = e {
                    reasons.push(format!("{what}: {e}"));
                }
            }
        }
        Err(e) => reasons.push(format!("probe failed: {e}")),
    }
    let _ = std::fs::remove_dir_all(&dir);
    reasons.dedup();
    Support {
        ok: reasons.is_empty(),
        reasons,
        rootless: !nix::unistd::geteuid().is_root(),
        warnings: crate::cgroup::missing_controllers(),
    }
}

fn run_probe(helper: &Helper, dir: &Path) -> Result<ProbeResult, String> {
    let (ours, theirs) = proto::pair().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(helper_path(helper));
    cmd.env_clear()
        .env(HELPER_ENV, "3")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    crate::sandbox::pass_control(&mut cmd, theirs);
    let mut child = cmd.spawn().map_err(|e| format!("spawn helper: {e}"))?;
    // The command holds the helper's end of the socket; without this we never see EOF.
    drop(cmd);
    let dir_str = dir.to_str().ok_or("scratch path is not UTF-8")?.to_string();
    let res = proto::send(
        std::os::fd::AsFd::as_fd(&ours),
        &ToHelper::Probe { dir: dir_str },
        &[],
    )
    .map_err(|e| e.to_string())
    .and_then(
        |()| match proto::recv::<FromHelper>(std::os::fd::AsFd::as_fd(&ours)) {
            Ok(Some((FromHelper::Probed(r), _))) => Ok(r),
            Ok(Some((other, _))) => Err(format!("unexpected {other:?}")),
            Ok(None) => Err("helper exited without an answer (does it call run_if_helper?)".into()),
            Err(e) => Err(e.to_string()),
        },
    );
    drop(ours);
    let _ = child.wait();
    res
}
