//! Workspaces: the host folders a sandbox sees, and how each backend shows them.
//!
//! - **mount** (default): `sbx create AGENT PATH [PATH2[:ro]...]`. The first PATH is the
//!   workspace (read-write, the agent's working folder); the others are extra folders. Each is
//!   mounted at its own absolute host path inside. Namespace backend: bind mounts (a `:ro`
//!   bind is a read-only mount, so writes fail with `EROFS`). microVM: one `virtiofsd` per
//!   folder and a virtio-fs device per daemon, mounted by the guest agent
//!   (`--mount-virtiofs TAG:PATH[:ro]`).
//! - **clone** (`--clone`): see [`super::clone`].
//! - **none**: the agent works in `/home/agent/workspace` on the sandbox's own disk.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::config::SandboxConfig;
use super::state::SandboxDir;

/// Where clone mode shows the host repository (read-only) inside the sandbox.
pub const HOST_REPO: &str = "/run/sbx/host-repo";

/// The uid and gid of the agent user inside every image.
pub const AGENT_ID: u32 = 1000;

/// An extra host folder, mounted at the same absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute, canonical host path (also the path inside).
    pub path: PathBuf,
    /// Mounted read-only (`PATH:ro`).
    #[serde(default)]
    pub read_only: bool,
}

/// The host user that owns what the agent writes into a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Host uid.
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
}

/// The workspace settings fixed at create (flattened into `sandbox.json`: `"mounts"`,
/// `"clone"`, `"owner"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkspaceOptions {
    /// Extra folders after the workspace.
    pub mounts: Vec<Mount>,
    /// Clone mode: the agent works on a private clone of the workspace repository.
    pub clone: bool,
    /// The invoking host user at create (`SUDO_UID`/`SUDO_GID` under sudo).
    pub owner: Option<Owner>,
}

/// The invoking host user: `SUDO_UID`/`SUDO_GID` when sbx runs under sudo as root, else the
/// effective ids.
pub fn invoking_owner() -> Owner {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let env_id = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    match (uid, env_id("SUDO_UID"), env_id("SUDO_GID")) {
        (0, Some(u), Some(g)) => Owner { uid: u, gid: g },
        _ => Owner { uid, gid },
    }
}

/// One `PATH` or `PATH:ro` argument.
fn parse_one(arg: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let s = arg.to_string_lossy();
    let (p, ro) = match s.rsplit_once(':') {
        Some((p, "ro")) if !p.is_empty() => (PathBuf::from(p), true),
        Some((p, "rw")) if !p.is_empty() => (PathBuf::from(p), false),
        _ => (arg.to_owned(), false),
    };
    let abs = super::lifecycle::workspace_path(Some(&p))?
        .with_context(|| format!("folder {}", p.display()))?;
    if abs == Path::new("/") {
        bail!("the host's / cannot be mounted into a sandbox: name a project folder");
    }
    Ok((abs, ro))
}

/// Splits `PATH [PATH2[:ro]...]` into the workspace and the extra folders.
pub fn parse_paths(args: &[PathBuf]) -> anyhow::Result<(Option<PathBuf>, Vec<Mount>)> {
    let Some((first, rest)) = args.split_first() else {
        return Ok((None, Vec::new()));
    };
    let (ws, ro) = parse_one(first)?;
    if ro {
        bail!(
            "the workspace {} is the agent's read-write folder; to give a folder read-only, name it after the workspace (`sbx create AGENT WORKSPACE {}:ro`)",
            ws.display(),
            ws.display()
        );
    }
    let mut mounts: Vec<Mount> = Vec::new();
    for a in rest {
        let (path, read_only) = parse_one(a)?;
        let clash = path == ws || mounts.iter().any(|m| m.path == path);
        if clash {
            bail!("{} is named twice", path.display());
        }
        mounts.push(Mount { path, read_only });
    }
    Ok((Some(ws), mounts))
}

/// Every host folder a sandbox mounts, with its read-only flag, as `(host, guest, ro)`: the
/// workspace (mount mode) or the host repository at [`HOST_REPO`] (clone mode), then the
/// extra folders.
pub fn mounts(cfg: &SandboxConfig) -> Vec<(PathBuf, PathBuf, bool)> {
    let mut out = Vec::new();
    if let Some(ws) = &cfg.workspace {
        if cfg.workspace_mode.clone {
            out.push((ws.clone(), PathBuf::from(HOST_REPO), true));
        } else {
            out.push((ws.clone(), ws.clone(), false));
        }
    }
    for m in &cfg.workspace_mode.mounts {
        out.push((m.path.clone(), m.path.clone(), m.read_only));
    }
    out
}

/// The namespace backend's id map. Run as root, ids map one to one (root inside is host root,
/// `agent` is host uid 1000), except when the sandbox was created through `sudo` by a user
/// other than uid 1000: then `agent` and that user trade places, so the user's files look like
/// `agent`'s inside and what `agent` creates belongs to the user. As plain root (no
/// `SUDO_UID`) the map stays one to one: host root's files stay root's inside (see
/// docs/workspaces.md).
pub fn ns_id_map(cfg: &SandboxConfig) -> sbx_ns::IdMap {
    match cfg.workspace_mode.owner {
        Some(o) if o.uid != 0 && o.uid != AGENT_ID => sbx_ns::IdMap::Swap {
            inside: AGENT_ID,
            uid: o.uid,
            gid: o.gid,
        },
        _ => sbx_ns::IdMap::Auto,
    }
}

/// The namespace sandbox's workspace settings: the binds and the id map.
pub fn apply_ns(mut c: sbx_ns::Config, cfg: &SandboxConfig) -> sbx_ns::Config {
    for b in binds(cfg) {
        c = c.with_bind(b);
    }
    c.with_id_map(ns_id_map(cfg))
}

/// First start: with a swapped id map the image's `agent` files (host uid 1000) show up
/// under the host user's id, so they are given back to `agent` (copied up into the
/// sandbox's own layer); then clone mode's clone.
pub fn first_start(cfg: &SandboxConfig, client: &sbx_exec::Client) -> anyhow::Result<()> {
    if cfg.backend == super::config::Backend::Namespace && ns_id_map(cfg) != sbx_ns::IdMap::Auto {
        let argv: Vec<String> = [
            "find",
            "/home/agent",
            "-xdev",
            "!",
            "-user",
            "agent",
            "-exec",
            "chown",
            "-h",
            "agent:agent",
            "{}",
            "+",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = client.output(super::supervisor::request(
            cfg,
            &argv,
            "root",
            Path::new("/"),
        ))?;
        if !out.status.success() {
            bail!(
                "giving /home/agent back to agent failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    super::clone::first_start(cfg, client)
}

/// A warning for a namespace sandbox whose agent will not own its workspace: created by root
/// without `sudo`, ids map one to one, so a folder owned by anyone but uid 1000 is not the
/// agent's to write.
pub fn ownership_notice(cfg: &SandboxConfig) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let ws = cfg.workspace.as_ref()?;
    if cfg.backend != super::config::Backend::Namespace
        || cfg.workspace_mode.clone
        || ns_id_map(cfg) != sbx_ns::IdMap::Auto
    {
        return None;
    }
    let owner = std::fs::metadata(ws).ok()?.uid();
    (owner != AGENT_ID).then(|| {
        format!(
            "sbx: {} belongs to host uid {owner}, and the agent is uid {AGENT_ID} (sbx runs as root without sudo, so ids map one to one): the agent can write there only where permissions let it, or with `sudo` inside. To have the agent work as the folder's owner, run sbx through sudo from that user's account.",
            ws.display()
        )
    })
}

/// The namespace backend's bind mounts.
pub fn binds(cfg: &SandboxConfig) -> Vec<sbx_ns::Bind> {
    mounts(cfg)
        .into_iter()
        .map(|(host, guest, ro)| sbx_ns::Bind::new(host, guest, ro))
        .collect()
}

/// Fails with what to do when a host folder the sandbox mounts is gone (renamed or deleted
/// since create).
pub fn check_present(cfg: &SandboxConfig) -> anyhow::Result<()> {
    for (host, _, _) in mounts(cfg) {
        if !host.is_dir() {
            let what = if Some(&host) == cfg.workspace.as_ref() {
                "workspace"
            } else {
                "mounted folder"
            };
            bail!(
                "the {what} {} of sandbox {} is missing on the host (renamed or deleted?): put it back at that path, or create a new sandbox for its new place (`sbx rm {}` removes this one)",
                host.display(),
                cfg.name,
                cfg.name
            );
        }
    }
    Ok(())
}

/// `sbx ls`'s WORKSPACE column: the path, with `(clone)` or `(missing)` when so.
pub fn describe(cfg: &SandboxConfig) -> Option<String> {
    let ws = cfg.workspace.as_ref()?;
    let mut s = ws.display().to_string();
    if cfg.workspace_mode.clone {
        s.push_str(" (clone)");
    }
    if !ws.is_dir() {
        s.push_str(" (missing)");
    }
    Some(s)
}

/// The microVM's virtio-fs shares: `(tag, host folder, guest path, read-only, socket)`.
pub fn fs_shares(cfg: &SandboxConfig, dir: &SandboxDir) -> Vec<FsShare> {
    mounts(cfg)
        .into_iter()
        .enumerate()
        .map(|(i, (host, guest, read_only))| FsShare {
            tag: format!("sbx{i}"),
            host,
            guest,
            read_only,
            socket: dir.dir.join(format!("fs{i}.sock")),
        })
        .collect()
}

/// One virtio-fs share of a microVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsShare {
    /// Mount tag.
    pub tag: String,
    /// The host folder virtiofsd serves.
    pub host: PathBuf,
    /// Where the guest mounts it.
    pub guest: PathBuf,
    /// `--readonly` and a read-only guest mount.
    pub read_only: bool,
    /// The vhost-user socket.
    pub socket: PathBuf,
}

/// The guest agent flags that mount a sandbox's shares (`--mount-virtiofs TAG:PATH[:ro]`).
pub fn guest_mount_args(cfg: &SandboxConfig) -> Vec<String> {
    // The tags and guest paths do not depend on where the sockets are.
    let dir = SandboxDir {
        name: cfg.name.clone(),
        dir: PathBuf::new(),
    };
    let mut out = Vec::new();
    for s in fs_shares(cfg, &dir) {
        out.push("--mount-virtiofs".to_owned());
        let mut v = format!("{}:{}", s.tag, s.guest.display());
        if s.read_only {
            v.push_str(":ro");
        }
        out.push(v);
    }
    out
}

/// The `virtiofsd` settings of a share: guest uid/gid 1000 (`agent`) mapped both ways to the
/// owner recorded at create, `--cache auto`, `--sandbox namespace`, `--readonly` for `:ro`.
pub fn virtiofsd_config(cfg: &SandboxConfig, share: &FsShare) -> sbx_vmm::VirtiofsdConfig {
    let owner = cfg.workspace_mode.owner.unwrap_or_else(invoking_owner);
    sbx_vmm::VirtiofsdConfig::new(&share.host, &share.socket)
        .read_only(share.read_only)
        .id_mapping(AGENT_ID, owner.uid, AGENT_ID, owner.gid)
}

/// What `sbx` says when a microVM sandbox has folders to share and no usable `virtiofsd`.
pub const VIRTIOFSD_MISSING: &str = "this sandbox mounts host folders into a microVM, which needs virtiofsd (the Rust daemon, 1.14 or later, with --translate-uid): install it with `scripts/install-deps` (or `apt-get install libseccomp-dev libcap-ng-dev pkg-config && cargo install virtiofsd --locked`), or point SBX_VIRTIOFSD at the binary";

/// Starts one `virtiofsd` per share (they stop when dropped).
pub fn start_virtiofsd(
    cfg: &SandboxConfig,
    shares: &[FsShare],
) -> anyhow::Result<Vec<sbx_vmm::Virtiofsd>> {
    if shares.is_empty() {
        return Ok(Vec::new());
    }
    check_present(cfg)?;
    if sbx_vmm::virtiofsd::find_virtiofsd().is_none() {
        bail!(VIRTIOFSD_MISSING);
    }
    shares
        .iter()
        .map(|s| {
            sbx_vmm::Virtiofsd::spawn(&virtiofsd_config(cfg, s))
                .with_context(|| format!("starting virtiofsd for {}", s.host.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::config::Backend;

    #[test]
    fn paths_split_into_workspace_and_read_only_extras() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        for p in [&a, &b, &c] {
            std::fs::create_dir(p).unwrap();
        }
        let args = [
            a.clone(),
            PathBuf::from(format!("{}:ro", b.display())),
            PathBuf::from(format!("{}:rw", c.display())),
        ];
        let (ws, mounts) = parse_paths(&args).unwrap();
        let canon = |p: &Path| p.canonicalize().unwrap();
        assert_eq!(ws, Some(canon(&a)));
        assert_eq!(
            mounts,
            [
                Mount {
                    path: canon(&b),
                    read_only: true
                },
                Mount {
                    path: canon(&c),
                    read_only: false
                }
            ]
        );
        assert_eq!(parse_paths(&[]).unwrap(), (None, vec![]));
        let e = parse_paths(&[PathBuf::from(format!("{}:ro", a.display()))]).unwrap_err();
        assert!(e.to_string().contains("read-write folder"), "{e}");
        assert!(parse_paths(&[a.clone(), a.clone()]).is_err());
        assert!(parse_paths(&[d.path().join("nope")]).is_err());
        assert!(parse_paths(&[PathBuf::from("/")]).is_err());
        let file = d.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(parse_paths(&[file]).is_err());
    }

    fn cfg(backend: Backend, clone: bool) -> SandboxConfig {
        SandboxConfig {
            name: "shell-app".into(),
            agent: "shell".into(),
            kits: vec![],
            workspace: Some("/h/app".into()),
            backend,
            backend_reason: None,
            cpus: 1,
            memory_bytes: 1 << 30,
            created_unix: 0,
            command: vec![],
            env: vec![],
            agent_env: vec![],
            sentinels: vec![],
            install: vec![],
            startup: vec![],
            files: vec![],
            workspace_mode: WorkspaceOptions {
                mounts: vec![Mount {
                    path: "/h/data".into(),
                    read_only: true,
                }],
                clone,
                owner: Some(Owner {
                    uid: 4242,
                    gid: 4343,
                }),
            },
        }
    }

    fn dir() -> SandboxDir {
        SandboxDir {
            name: "shell-app".into(),
            dir: "/d/sandboxes/shell-app".into(),
        }
    }

    #[test]
    fn namespace_binds_mount_the_workspace_or_the_repository_read_only() {
        let c = cfg(Backend::Namespace, false);
        assert_eq!(
            binds(&c),
            [
                sbx_ns::Bind::new("/h/app", "/h/app", false),
                sbx_ns::Bind::new("/h/data", "/h/data", true)
            ]
        );
        let c = cfg(Backend::Namespace, true);
        assert_eq!(
            binds(&c)[0],
            sbx_ns::Bind::new("/h/app", HOST_REPO, true),
            "clone mode shows the host repository read-only"
        );
        let ns = super::super::backend_ns::ns_config(&c, &dir(), Path::new("/img"), false);
        assert!(ns
            .binds
            .contains(&sbx_ns::Bind::new("/h/data", "/h/data", true)));
        let mut none = cfg(Backend::Namespace, false);
        none.workspace = None;
        none.workspace_mode.mounts.clear();
        assert!(binds(&none).is_empty());
        assert_eq!(
            none.workdir(),
            Path::new(super::super::config::DEFAULT_WORKDIR)
        );
    }

    #[test]
    fn microvm_shares_one_virtiofsd_per_folder_with_the_owner_mapped() {
        let c = cfg(Backend::Microvm, false);
        let shares = fs_shares(&c, &dir());
        assert_eq!(shares.len(), 2);
        assert_eq!(
            shares[1],
            FsShare {
                tag: "sbx1".into(),
                host: "/h/data".into(),
                guest: "/h/data".into(),
                read_only: true,
                socket: "/d/sandboxes/shell-app/fs1.sock".into(),
            }
        );
        assert_eq!(
            guest_mount_args(&c),
            [
                "--mount-virtiofs",
                "sbx0:/h/app",
                "--mount-virtiofs",
                "sbx1:/h/data:ro"
            ]
        );
        let args: Vec<String> = virtiofsd_config(&c, &shares[1])
            .args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let has = |a: &str, b: &str| args.windows(2).any(|w| w[0] == a && w[1] == b);
        assert!(has("--shared-dir", "/h/data"), "{args:?}");
        assert!(has("--socket-path", "/d/sandboxes/shell-app/fs1.sock"));
        assert!(has("--translate-uid", "map:1000:4242:1"), "{args:?}");
        assert!(has("--translate-gid", "map:1000:4343:1"), "{args:?}");
        assert!(has("--cache", "auto") && has("--sandbox", "namespace"));
        assert!(args.iter().any(|a| a == "--readonly"));
        let rw: Vec<_> = virtiofsd_config(&c, &shares[0]).args();
        assert!(!rw.iter().any(|a| a == "--readonly"));
        // Clone mode shares the repository read-only at HOST_REPO.
        let c = cfg(Backend::Microvm, true);
        assert_eq!(guest_mount_args(&c)[1], format!("sbx0:{HOST_REPO}:ro"));
    }

    #[test]
    fn the_vm_gets_a_device_per_share_and_the_agent_mounts_them() {
        let c = cfg(Backend::Microvm, false);
        let boot = super::super::backend_vm::BootFiles {
            kernel: "/k".into(),
            initramfs: "/i".into(),
            module_args: vec![],
            rootfs_ext4: "/r".into(),
        };
        let b = super::super::backend_vm::builder(&c, &dir(), &boot).unwrap();
        let vm = b.config();
        let devs: Vec<(&str, &Path)> = vm
            .fs
            .iter()
            .map(|f| (f.tag.as_str(), f.socket_path.as_path()))
            .collect();
        assert_eq!(
            devs,
            [
                ("sbx0", Path::new("/d/sandboxes/shell-app/fs0.sock")),
                ("sbx1", Path::new("/d/sandboxes/shell-app/fs1.sock"))
            ]
        );
        let (_, args) = vm.cmdline.split_once(" -- ").unwrap();
        let (agent, _) =
            sbx_guest::parse_args(args.split(' ').map(std::ffi::OsString::from)).unwrap();
        assert_eq!(
            agent.virtiofs,
            [
                sbx_guest::VirtiofsMount::new("sbx0", "/h/app", false),
                sbx_guest::VirtiofsMount::new("sbx1", "/h/data", true)
            ]
        );
    }

    #[test]
    fn a_missing_folder_is_named_with_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg(Backend::Namespace, false);
        c.workspace = Some(d.path().join("gone"));
        c.workspace_mode.mounts.clear();
        let e = check_present(&c).unwrap_err().to_string();
        assert!(e.contains("the workspace"), "{e}");
        assert!(e.contains("is missing on the host"), "{e}");
        assert!(describe(&c).unwrap().ends_with(" (missing)"));
        c.workspace = Some(d.path().to_owned());
        assert!(check_present(&c).is_ok());
        let e = start_virtiofsd(
            &cfg(Backend::Microvm, false),
            &fs_shares(&cfg(Backend::Microvm, false), &dir()),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is missing on the host"), "{e}");
    }

    #[test]
    fn sudo_ids_are_the_invoking_user_only_for_root() {
        let o = invoking_owner();
        if nix::unistd::geteuid().is_root() {
            if std::env::var_os("SUDO_UID").is_none() {
                assert_eq!(o, Owner { uid: 0, gid: 0 });
            }
        } else {
            assert_eq!(o.uid, nix::unistd::geteuid().as_raw());
        }
    }
}
