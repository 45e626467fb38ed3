//! The microVM backend: sbx-vmm with the default image's kernel and initramfs (the agent is
//! `/init`), the sandbox's own writable root disk, and the exec service on vsock.
//!
//! The root disk is the sandbox's copy of the image's `rootfs.ext4` (sparse, reflinked where
//! the filesystem can), made at the first start and kept until `rm`: the agent mounts one root
//! device, so the read-only base and the writable layer are one disk per sandbox here.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use sbx_vmm::{StopHandle, VmBuilder, VmExit};

use super::config::SandboxConfig;
use super::network;
use super::state::SandboxDir;

/// The vsock port the agent serves exec on.
pub const EXEC_PORT: u32 = 52;
/// The guest's vsock context id (each VM has its own vsock device, so any valid CID works).
pub const GUEST_CID: u64 = 3;

/// What the VM boots from.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// bzImage.
    pub kernel: PathBuf,
    /// The initramfs with the agent as `/init`.
    pub initramfs: PathBuf,
    /// The agent flags that load the initramfs's modules.
    pub module_args: Vec<String>,
    /// The image's root ext4 (copied once per sandbox).
    pub rootfs_ext4: PathBuf,
}

/// The kernel command line: console on the serial port, then the agent's flags after `--`.
pub fn cmdline(cfg: &SandboxConfig, boot: &BootFiles) -> String {
    let mut words: Vec<String> = [
        "console=ttyS0",
        "reboot=k",
        "panic=-1",
        "quiet",
        "rdinit=/init",
        "--",
        "--dev",
        "devtmpfs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    words.extend(boot.module_args.iter().cloned());
    words.extend(
        [
            "--root-device",
            "/dev/vda",
            "--vsock-port",
            &EXEC_PORT.to_string(),
            "--poweroff",
            "--on-main-exit",
            "stay",
            "--hostname",
            &cfg.name,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    if super::supervisor::NETWORK {
        words.extend(network::agent_args(true));
    }
    words.extend(super::workspace::guest_mount_args(cfg));
    words.join(" ")
}

/// The VM for a sandbox (without its console output, which [`start`] adds).
pub fn builder(
    cfg: &SandboxConfig,
    dir: &SandboxDir,
    boot: &BootFiles,
) -> anyhow::Result<VmBuilder> {
    let vcpus = u8::try_from(cfg.cpus)
        .ok()
        .filter(|&n| n <= sbx_vmm::MAX_VCPUS && n > 0)
        .with_context(|| format!("a microVM takes 1 to {} vCPUs", sbx_vmm::MAX_VCPUS))?;
    Ok(VmBuilder::new(&boot.kernel)
        .initrd(&boot.initramfs)
        .cmdline(cmdline(cfg, boot))
        .memory_mib(cfg.memory_bytes >> 20)
        .vcpus(vcpus)
        .disk(dir.disk(), false)
        .rng(true)
        .vsock(GUEST_CID, dir.vsock_socket()))
    .map(|b| {
        super::workspace::fs_shares(cfg, dir)
            .into_iter()
            .fold(b, |b, s| b.fs(sbx_vmm::FsConfig::new(s.tag, s.socket)))
    })
}

/// Copies the image's root disk for this sandbox (once).
pub fn prepare_disk(dir: &SandboxDir, rootfs_ext4: &Path) -> anyhow::Result<()> {
    let disk = dir.disk();
    if disk.exists() {
        return Ok(());
    }
    let tmp = dir.dir.join(".disk.ext4.tmp");
    let st = std::process::Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(rootfs_ext4)
        .arg(&tmp)
        .status()
        .context("running cp")?;
    if !st.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "copying {} to {} failed ({st})",
            rootfs_ext4.display(),
            tmp.display()
        );
    }
    std::fs::rename(&tmp, &disk).with_context(|| format!("creating {}", disk.display()))
}

/// A running microVM.
#[derive(Debug)]
pub struct VmRunning {
    stop: StopHandle,
    exited: mpsc::Receiver<VmExit>,
    client: sbx_exec::Client,
    net_fd: Option<std::os::fd::OwnedFd>,
    /// One per shared host folder; killed when the VM is dropped.
    _virtiofsd: Vec<sbx_vmm::Virtiofsd>,
}

/// Boots the VM with its serial console in `console.log`.
pub fn start(cfg: &SandboxConfig, dir: &SandboxDir, boot: &BootFiles) -> anyhow::Result<VmRunning> {
    prepare_disk(dir, &boot.rootfs_ext4)?;
    let _ = std::fs::remove_file(dir.vsock_socket());
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.console_log())
        .with_context(|| format!("opening {}", dir.console_log().display()))?;
    let virtiofsd = super::workspace::start_virtiofsd(cfg, &super::workspace::fs_shares(cfg, dir))?;
    let mut vmb = builder(cfg, dir, boot)?.serial_output(Box::new(console));
    let mut net_fd = None;
    if super::supervisor::NETWORK {
        // One end for virtio-net, the other for sbx-net's stack (`supervisor::start_network`).
        let (backend, theirs) =
            sbx_vmm::FdNetBackend::socketpair().context("creating the network socket pair")?;
        vmb = vmb.net(sbx_vmm::NetConfig::new(
            network::GUEST_MAC,
            Box::new(backend),
        ));
        net_fd = Some(theirs);
    }
    let vm = vmb.start().context("starting the microVM")?;
    let stop = vm.stop_handle();
    let (tx, exited) = mpsc::channel();
    std::thread::Builder::new()
        .name("sbx-vm-wait".into())
        .spawn(move || {
            let _ = tx.send(vm.wait());
        })?;
    let transport = sbx_exec::HybridVsockTransport::new(dir.vsock_socket(), EXEC_PORT);
    Ok(VmRunning {
        stop,
        exited,
        client: sbx_exec::Client::new(transport),
        net_fd,
        _virtiofsd: virtiofsd,
    })
}

impl VmRunning {
    /// The exec client (over the vsock socket).
    pub fn client(&self) -> sbx_exec::Client {
        self.client.clone()
    }

    /// The network stack's end of the virtio-net socket pair, once.
    pub fn take_net_fd(&mut self) -> Option<std::os::fd::OwnedFd> {
        self.net_fd.take()
    }

    /// How it ended, if it did.
    pub fn try_exit(&mut self) -> Option<String> {
        self.exited.try_recv().ok().map(|e| e.to_string())
    }

    /// Asks the agent to power off, stops the VM after `grace`.
    pub fn shutdown(self, grace: Duration) -> String {
        if let Err(e) = self.client.shutdown() {
            tracing::warn!("agent shutdown request failed: {e}");
        }
        match self.exited.recv_timeout(grace) {
            Ok(e) => e.to_string(),
            Err(_) => {
                self.stop.stop();
                self.exited
                    .recv_timeout(Duration::from_secs(10))
                    .map_or_else(|_| "did not stop".into(), |e| format!("forced: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::config::{Backend, SandboxConfig};

    fn cfg(cpus: u32) -> SandboxConfig {
        SandboxConfig {
            name: "copilot-app".into(),
            agent: "copilot".into(),
            kits: vec![],
            workspace: None,
            backend: Backend::Microvm,
            backend_reason: None,
            cpus,
            memory_bytes: 2 << 30,
            created_unix: 0,
            command: vec![],
            env: vec![],
            agent_env: vec![],
            sentinels: vec![],
            install: vec![],
            startup: vec![],
            files: vec![],
            workspace_mode: Default::default(),
        }
    }

    fn boot() -> BootFiles {
        BootFiles {
            kernel: "/img/k/vmlinuz".into(),
            initramfs: "/img/k/initramfs.cpio".into(),
            module_args: vec![
                "--modules-dir".into(),
                "/lib/modules/6.1.0-cloud-amd64".into(),
                "--load-module".into(),
                "virtio_mmio".into(),
            ],
            rootfs_ext4: "/img/r/rootfs.ext4".into(),
        }
    }

    #[test]
    fn vm_config_boots_the_agent_with_the_sandbox_disk_and_vsock() {
        let dir = SandboxDir {
            name: "copilot-app".into(),
            dir: "/d/sandboxes/copilot-app".into(),
        };
        let b = builder(&cfg(2), &dir, &boot()).unwrap();
        let c = b.config();
        assert_eq!(c.kernel, Path::new("/img/k/vmlinuz"));
        assert_eq!(
            c.initrd.as_deref(),
            Some(Path::new("/img/k/initramfs.cpio"))
        );
        assert_eq!((c.mem_mib, c.vcpus), (2048, 2));
        assert_eq!(c.disks.len(), 1);
        assert_eq!(
            c.disks[0].path,
            Path::new("/d/sandboxes/copilot-app/disk.ext4")
        );
        assert!(!c.disks[0].read_only && c.rng);
        let vsock = c.vsock.as_ref().unwrap();
        assert_eq!(vsock.guest_cid, GUEST_CID);
        assert_eq!(
            vsock.uds_path,
            Path::new("/d/sandboxes/copilot-app/vsock.sock")
        );
        // The agent flags after `--` parse, and say what the guest must do.
        let (_, args) = c.cmdline.split_once(" -- ").unwrap();
        let (agent, _) =
            sbx_guest::parse_args(args.split(' ').map(std::ffi::OsString::from)).unwrap();
        assert_eq!(agent.hostname.as_deref(), Some("copilot-app"));
        assert_eq!(agent.modules, ["virtio_mmio"]);
        assert!(agent.power_off);
        assert_eq!(agent.listen, [sbx_guest::Listen::Vsock(EXEC_PORT)]);
        assert!(agent.switch_root.is_some());
        assert!(c.cmdline.starts_with("console=ttyS0 "));
    }

    #[test]
    fn too_many_vcpus_is_an_error() {
        let dir = SandboxDir {
            name: "x".into(),
            dir: "/d/x".into(),
        };
        assert!(builder(&cfg(1000), &dir, &boot()).is_err());
    }

    #[test]
    fn the_disk_is_copied_once() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("rootfs.ext4");
        std::fs::write(&base, b"base").unwrap();
        let dir = SandboxDir {
            name: "x".into(),
            dir: d.path().join("sb"),
        };
        std::fs::create_dir_all(&dir.dir).unwrap();
        prepare_disk(&dir, &base).unwrap();
        std::fs::write(dir.disk(), b"changed").unwrap();
        prepare_disk(&dir, &base).unwrap();
        assert_eq!(std::fs::read(dir.disk()).unwrap(), b"changed");
    }
}
