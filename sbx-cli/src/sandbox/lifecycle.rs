//! What the commands share: finding a sandbox (with a suggestion when the name is wrong),
//! choosing the backend, making sure the image exists, creating, starting, stopping and
//! removing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sbx_exec::Client;
use sbx_image::{ImageKind, Store};

use super::config::{self, Backend, Host, SandboxConfig};
use super::lock::SandboxLock;
use super::state::{closest, now_unix, Layout, SandboxDir, Status};
use super::supervisor;

/// Finds an existing sandbox or says which name was meant.
pub fn find(layout: &Layout, name: &str) -> anyhow::Result<(SandboxDir, SandboxConfig)> {
    let dir = layout.sandbox(name);
    if config::validate_name(name).is_ok() && dir.dir.is_dir() {
        if !dir.config_path().exists() {
            bail!(
                "sandbox {name} is broken (created only in part): remove it with `sbx rm {name}`"
            );
        }
        let cfg = dir.read_config()?;
        return Ok((dir, cfg));
    }
    Err(not_found(layout, name))
}

/// "no sandbox named X" with the closest name, if any.
pub fn not_found(layout: &Layout, name: &str) -> anyhow::Error {
    let names = layout.names().unwrap_or_default();
    let mut msg = format!("no sandbox named {name:?}");
    match closest(name, &names) {
        Some(s) => msg.push_str(&format!(": did you mean {s:?}?")),
        None if names.is_empty() => {
            msg.push_str(": there are no sandboxes yet (create one with `sbx create AGENT PATH`)")
        }
        None => msg.push_str(": `sbx ls` lists them"),
    }
    anyhow::anyhow!(msg)
}

/// The backend for a new sandbox, and why the microVM was not used.
pub fn choose_backend(forced: Option<Backend>) -> anyhow::Result<(Backend, Option<String>)> {
    let kvm = sbx_vmm::detect_kvm();
    match forced {
        Some(Backend::Microvm) if kvm.hardware_assisted() => Ok((Backend::Microvm, None)),
        Some(Backend::Microvm) if kvm.available() => bail!(
            "--isolation microvm: this host cannot run microVMs: {}.\n  A stock kernel needs hardware-assisted KVM (VT-x/AMD-V, or nested virtualization that exposes it); use a host or VM type that has it, or leave out --isolation (or pass --isolation namespace) for the namespace backend",
            kvm.reason
        ),
        Some(Backend::Microvm) => bail!(
            "--isolation microvm: this host cannot run microVMs: {}.\n  Or leave out --isolation (or pass --isolation namespace) for the namespace backend",
            kvm.reason
        ),
        Some(Backend::Namespace) => Ok((
            Backend::Namespace,
            Some("--isolation namespace was given".into()),
        )),
        None if kvm.hardware_assisted() => Ok((Backend::Microvm, None)),
        None => Ok((Backend::Namespace, Some(kvm.reason))),
    }
}

/// The image store in use.
pub fn store(layout: &Layout) -> Store {
    Store::new(layout.images())
}

/// Builds the images a backend needs on first use, with progress on stderr.
pub fn ensure_images(layout: &Layout, backend: Backend) -> anyhow::Result<()> {
    let store = store(layout);
    // An unreadable store is rebuilt like a missing one (the build reports what is wrong).
    let have_rootfs = store.current(ImageKind::Rootfs, "default").ok().flatten();
    let need_ext4 = backend == Backend::Microvm;
    if have_rootfs.is_none() || (need_ext4 && have_rootfs.and_then(|i| i.rootfs_ext4()).is_none()) {
        let _ = writeln!(
            std::io::stderr(),
            "sbx: building the default Debian image (first use; a few minutes)..."
        );
        crate::commands::image::build_default_rootfs(&store).with_context(|| {
            format!(
                "the image build failed; its log is kept at {}",
                store.log_path(ImageKind::Rootfs, "default").display()
            )
        })?;
    }
    if backend == Backend::Microvm
        && store
            .current(ImageKind::Kernel, "default")
            .ok()
            .flatten()
            .is_none()
    {
        let agent = std::env::current_exe()?;
        crate::commands::image::build_default_kernel(&store, &agent).with_context(|| {
            format!(
                "the kernel image build failed; its log is kept at {}",
                store.log_path(ImageKind::Kernel, "default").display()
            )
        })?;
    }
    Ok(())
}

/// What `sbx create` (and `sbx run` when the sandbox is missing) asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `--name`.
    pub name: Option<String>,
    /// `--kit`.
    pub kits: Vec<PathBuf>,
    /// `--cpus`.
    pub cpus: Option<u32>,
    /// `-m`.
    pub memory: Option<String>,
    /// `--isolation`.
    pub isolation: Option<Backend>,
    /// Extra folders after the workspace.
    pub mounts: Vec<super::workspace::Mount>,
    /// `--clone`.
    pub clone: bool,
}

/// The absolute workspace path, which must be a folder.
pub fn workspace_path(path: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    let Some(p) = path else { return Ok(None) };
    let abs = std::path::absolute(p).with_context(|| format!("workspace {}", p.display()))?;
    let abs = abs
        .canonicalize()
        .with_context(|| format!("workspace {}", p.display()))?;
    if !abs.is_dir() {
        bail!("workspace {} is not a folder", abs.display());
    }
    Ok(Some(abs))
}

/// Creates a sandbox folder and its `sandbox.json` (not started). Prints the namespace
/// notice once, here.
pub fn create(
    layout: &Layout,
    agent: &str,
    workspace: Option<PathBuf>,
    opts: &CreateOptions,
) -> anyhow::Result<(SandboxDir, SandboxConfig)> {
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| config::default_name(agent, workspace.as_deref()));
    config::validate_name(&name)?;
    if opts.clone {
        match &workspace {
            Some(ws) => super::clone::validate(ws)?,
            None => bail!("--clone needs a PATH: the git repository to clone"),
        }
    }
    let resolved = config::resolve_kits(agent, &opts.kits)?;
    let (cpus, memory_bytes) =
        config::resources(Host::detect(), opts.cpus, opts.memory.as_deref())?;
    let (backend, reason) = choose_backend(opts.isolation)?;
    let dir = layout.sandbox(&name);
    std::fs::create_dir_all(layout.sandboxes())
        .with_context(|| format!("creating {}", layout.sandboxes().display()))?;
    match std::fs::create_dir(&dir.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "a sandbox named {name} already exists: use it (`sbx run {name}`), pick another name with --name, or remove it first (`sbx rm {name}`)"
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("creating {}", dir.dir.display())))
        }
    }
    // The folder holds host-root files of the sandbox's writable layer: owner only.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&dir.dir, std::fs::Permissions::from_mode(0o700));
    let made = (|| -> anyhow::Result<SandboxConfig> {
        let catalog =
            sbx_secrets::Catalog::file(layout.data_dir.join("secrets").join("catalog.json"));
        let mut cfg = SandboxConfig {
            name: name.clone(),
            agent: agent.to_owned(),
            kits: resolved.kits.clone(),
            workspace: workspace.clone(),
            backend,
            backend_reason: reason.clone(),
            cpus,
            memory_bytes,
            created_unix: now_unix(),
            command: Vec::new(),
            env: Vec::new(),
            agent_env: Vec::new(),
            sentinels: config::sentinels(&name, &resolved.kit, &catalog)?,
            install: Vec::new(),
            startup: Vec::new(),
            files: Vec::new(),
            workspace_mode: super::workspace::WorkspaceOptions {
                mounts: opts.mounts.clone(),
                clone: opts.clone,
                owner: Some(super::workspace::invoking_owner()),
            },
        };
        config::apply_kit(&mut cfg, &resolved.kit);
        dir.write_config(&cfg)?;
        if cfg.workspace_mode.clone {
            super::clone::add_remote(layout, &cfg)?;
        }
        Ok(cfg)
    })();
    let cfg = match made {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir.dir);
            return Err(e);
        }
    };
    if backend == Backend::Namespace {
        let _ = writeln!(
            std::io::stderr(),
            "sbx: {name} runs in the namespace backend, a weaker boundary than a microVM: it shares the host's kernel, so a kernel bug reachable from inside is a host compromise.\n     Why no microVM: {}",
            reason.as_deref().unwrap_or("not available")
        );
    }
    if let Some(n) = super::workspace::ownership_notice(&cfg) {
        let _ = writeln!(std::io::stderr(), "{n}");
    }
    Ok((dir, cfg))
}

/// Starts a sandbox unless it runs; returns its exec client once it answers.
pub fn ensure_running(
    layout: &Layout,
    dir: &SandboxDir,
    cfg: &SandboxConfig,
) -> anyhow::Result<Client> {
    if dir.status() == Status::Running {
        return Ok(supervisor::client_for(cfg, dir));
    }
    super::workspace::check_present(cfg)?;
    ensure_images(layout, cfg.backend)?;
    let child = supervisor::spawn(dir, layout)?;
    let timeout = match cfg.backend {
        Backend::Namespace => Duration::from_secs(600),
        Backend::Microvm => Duration::from_secs(900),
    };
    supervisor::wait_ready(dir, cfg, child, timeout)?;
    Ok(supervisor::client_for(cfg, dir))
}

/// Stops a sandbox: SIGTERM to its supervisor (the agent ends everything), then SIGKILL after
/// [`supervisor::STOP_TIMEOUT`]. Returns false when it was not running.
pub fn stop(dir: &SandboxDir) -> anyhow::Result<bool> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if SandboxLock::try_acquire(&dir.lock_path())?.is_some() {
        return Ok(false);
    }
    let pid = dir
        .supervisor_pid()
        .with_context(|| format!("sandbox {} runs but has no supervisor.pid", dir.name))?;
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    if SandboxLock::acquire_within(&dir.lock_path(), supervisor::STOP_TIMEOUT)?.is_some() {
        return Ok(true);
    }
    let _ = writeln!(
        std::io::stderr(),
        "sbx: {} did not stop within {}s; killing it",
        dir.name,
        supervisor::STOP_TIMEOUT.as_secs()
    );
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    if SandboxLock::acquire_within(&dir.lock_path(), Duration::from_secs(10))?.is_none() {
        bail!(
            "sandbox {} could not be stopped (supervisor {pid})",
            dir.name
        );
    }
    Ok(true)
}

/// Removes a sandbox folder (stopping it first).
pub fn remove(dir: &SandboxDir) -> anyhow::Result<()> {
    stop(dir)?;
    let started = Instant::now();
    let lock = loop {
        if let Some(l) = SandboxLock::try_acquire(&dir.lock_path())? {
            break l;
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!(
                "sandbox {} is being started by another sbx; try again",
                dir.name
            );
        }
        stop(dir)?;
    };
    // Rename first so that a crash mid-delete leaves a hidden folder, not a broken sandbox.
    let trash = dir
        .dir
        .with_file_name(format!(".rm-{}-{}", dir.name, std::process::id()));
    std::fs::rename(&dir.dir, &trash).with_context(|| format!("removing {}", dir.dir.display()))?;
    drop(lock);
    std::fs::remove_dir_all(&trash).with_context(|| format!("removing {}", trash.display()))?;
    Ok(())
}

/// Deletes folders left by removals that were cut short.
pub fn sweep(layout: &Layout) {
    if let Ok(entries) = std::fs::read_dir(layout.sandboxes()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".rm-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// "how to get back in" after the agent exits or the user detaches.
pub fn back_in_hint(name: &str) -> String {
    format!(
        "sandbox {name} keeps running. Back in: `sbx run {name}` or `sbx exec -it {name} bash`; stop it with `sbx stop {name}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_suggests_the_closest_name() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout {
            data_dir: d.path().to_owned(),
        };
        let e = not_found(&layout, "x").to_string();
        assert!(e.contains("no sandboxes yet"), "{e}");
        std::fs::create_dir_all(layout.sandboxes().join("shell-work")).unwrap();
        let e = not_found(&layout, "shell-wrok").to_string();
        assert!(e.ends_with("did you mean \"shell-work\"?"), "{e}");
        let e = find(&layout, "shell-work").unwrap_err().to_string();
        assert!(e.contains("broken"), "{e}");
    }

    #[test]
    fn forcing_a_backend() {
        let (b, why) = choose_backend(Some(Backend::Namespace)).unwrap();
        assert_eq!(b, Backend::Namespace);
        assert!(why.is_some());
        let kvm = sbx_vmm::detect_kvm();
        match choose_backend(Some(Backend::Microvm)) {
            Ok((b, _)) => assert!(kvm.hardware_assisted() && b == Backend::Microvm),
            Err(e) => {
                assert!(!kvm.hardware_assisted());
                assert!(e.to_string().contains("cannot run microVMs"), "{e}");
            }
        }
    }
}
