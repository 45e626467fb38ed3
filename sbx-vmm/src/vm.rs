//! Building, starting, stopping and waiting for a VM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::boot::{load_kernel, EntryPoint, KernelKind};
use crate::arch::x86_64::layout::{
    ACPI_SLEEP_CONTROL_PORT, I8042_DATA_PORT, SERIAL_IRQ, SERIAL_PORT,
};
use crate::arch::x86_64::{cpuid, lapic, msr, regs};
use crate::devices::legacy::{AcpiPm, SerialConsole, I8042};
use crate::devices::virtio::FsConfig;
use crate::devices::virtio::{NetConfig, NetMetrics, VsockConfig};
use crate::error::{host, kvm, Error, Result};
use crate::exit::{ExitSignal, VmExit};
use crate::kvm_detect::detect_kvm;
use crate::memory::{create_guest_memory, GuestMemory, MIN_MEM_BYTES};
use crate::metrics::VmMetrics;
use crate::vcpu::{install_kick_handler, Buses, VcpuThread};

/// Most vCPUs a VM may have (the MADT and CPUID carry 8-bit APIC ids).
pub const MAX_VCPUS: u8 = 32;

const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// A disk attached as a virtio-blk device.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Attach read-only (`VIRTIO_BLK_F_RO`).
    pub read_only: bool,
}

impl DiskConfig {
    /// A disk backed by the raw image at `path`.
    pub fn new(path: impl Into<PathBuf>, read_only: bool) -> Self {
        Self {
            path: path.into(),
            read_only,
        }
    }
}

/// Everything that defines a VM. Build one with [`VmBuilder`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmConfig {
    /// Kernel image: bzImage, ELF vmlinux (64-bit entry) or ELF with a PVH note.
    pub kernel: PathBuf,
    /// Optional initrd / initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// virtio-blk disks, in the order the guest sees them.
    pub disks: Vec<DiskConfig>,
    /// Attach a virtio-rng device.
    pub rng: bool,
    /// Attach a virtio-vsock device (guest CID and host Unix socket), after the disks and rng.
    pub vsock: Option<VsockConfig>,
    /// virtio-fs devices served by vhost-user backends (`virtiofsd`), after vsock.
    pub fs: Vec<FsConfig>,
}

impl VmConfig {
    /// Defaults for `kernel`: 128 MiB, one vCPU, console on the serial port, no devices.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: "console=ttyS0 reboot=k panic=-1".into(),
            mem_mib: 128,
            vcpus: 1,
            disks: Vec::new(),
            rng: false,
            vsock: None,
            fs: Vec::new(),
        }
    }
}

/// Builder for a [`Vm`].
///
/// ```no_run
/// use sbx_vmm::{VmBuilder, VmExit};
/// let vm = VmBuilder::new("/boot/vmlinuz")
///     .initrd("initrd.img")
///     .cmdline("console=ttyS0 quiet")
///     .memory_mib(256)
///     .vcpus(2)
///     .serial_output(Box::new(std::io::stdout()))
///     .start()?;
/// assert_eq!(vm.wait(), VmExit::Poweroff);
/// # Ok::<(), sbx_vmm::Error>(())
/// ```
pub struct VmBuilder {
    config: VmConfig,
    serial_out: Box<dyn Write + Send>,
    net: Option<NetConfig>,
}

impl std::fmt::Debug for VmBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmBuilder")
            .field("config", &self.config)
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

impl VmBuilder {
    /// Start from [`VmConfig::new`].
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self::from_config(VmConfig::new(kernel))
    }

    /// Start from a full configuration.
    pub fn from_config(config: VmConfig) -> Self {
        Self {
            config,
            serial_out: Box::new(std::io::sink()),
            net: None,
        }
    }

    /// Load `path` as the initrd.
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.initrd = Some(path.into());
        self
    }

    /// Replace the kernel command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.config.cmdline = cmdline.into();
        self
    }

    /// Guest RAM in MiB.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.config.mem_mib = mib;
        self
    }

    /// Number of vCPUs.
    pub fn vcpus(mut self, n: u8) -> Self {
        self.config.vcpus = n;
        self
    }

    /// Attach a raw disk image as the next virtio-blk device.
    pub fn disk(mut self, path: impl Into<PathBuf>, read_only: bool) -> Self {
        self.config.disks.push(DiskConfig::new(path, read_only));
        self
    }

    /// Attach (or not) a virtio-rng device.
    pub fn rng(mut self, enabled: bool) -> Self {
        self.config.rng = enabled;
        self
    }

    /// Attach a virtio-vsock device with guest CID `cid` whose host side listens on the Unix
    /// socket `uds_path` (which must not exist yet). A host process connects there and writes
    /// `CONNECT <guest port>\n`, then reads `OK <host port>\n` and uses the stream; guest
    /// connections to host port P go to `<uds_path>_<P>`.
    pub fn vsock(mut self, cid: u64, uds_path: impl Into<PathBuf>) -> Self {
        self.config.vsock = Some(VsockConfig::new(cid, uds_path));
        self
    }

    /// Attach a virtio-net device (placed after the disks, before rng and vsock) whose frames
    /// go to and come from `config`'s backend, e.g. an [`FdNetBackend`](crate::FdNetBackend)
    /// over a TAP fd or one end of a `SOCK_SEQPACKET` socketpair. Its counters are in
    /// [`Vm::net_metrics`].
    pub fn net(mut self, config: NetConfig) -> Self {
        self.net = Some(config);
        self
    }

    /// Attach a virtio-fs device whose vhost-user backend (e.g. a
    /// [`Virtiofsd`](crate::virtiofsd::Virtiofsd)) listens on `config.socket_path`; the guest
    /// mounts it with `mount -t virtiofs <tag> <dir>`. The VMM connects when the VM starts.
    pub fn fs(mut self, config: FsConfig) -> Self {
        self.config.fs.push(config);
        self
    }

    /// Where the guest's serial console output goes (default: discarded).
    pub fn serial_output(mut self, out: Box<dyn Write + Send>) -> Self {
        self.serial_out = out;
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Create the VM, load the kernel and start the vCPUs.
    pub fn start(self) -> Result<Vm> {
        Vm::start(self.config, self.serial_out, self.net)
    }
}

/// Stops a running VM from any thread.
#[derive(Clone, Debug)]
pub struct StopHandle {
    exit: Arc<ExitSignal>,
}

impl StopHandle {
    /// Ask the VM to stop. [`Vm::wait`] then returns [`VmExit::Stopped`] unless the guest had
    /// already ended it.
    pub fn stop(&self) {
        self.exit.request(VmExit::Stopped);
    }
}

/// Feeds the guest's serial console (the 8250's receive FIFO) from another thread.
#[derive(Clone)]
pub struct ConsoleInput {
    serial: Arc<Mutex<SerialConsole>>,
    exit: Arc<ExitSignal>,
}

impl std::fmt::Debug for ConsoleInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleInput").finish_non_exhaustive()
    }
}

impl ConsoleInput {
    /// Queue what fits in the receive FIFO now; returns how many bytes were taken.
    pub fn send(&self, input: &[u8]) -> usize {
        crate::devices::bus::lock(&self.serial).enqueue_input(input)
    }

    /// Queue all of `input`, waiting for the guest to drain the FIFO. Returns false if the VM
    /// ended first.
    pub fn send_all(&self, mut input: &[u8]) -> bool {
        while !input.is_empty() {
            if self.exit.stopping() {
                return false;
            }
            let n = self.send(input);
            input = &input[n..];
            if n == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        true
    }
}

/// A running VM. Dropping it stops it.
pub struct Vm {
    // Kept alive for the VM's lifetime: the vCPU and device fds refer to it.
    _vm_fd: VmFd,
    _memory: GuestMemory,
    kernel_kind: KernelKind,
    exit: Arc<ExitSignal>,
    metrics: Arc<VmMetrics>,
    vcpus: Vec<VcpuThread>,
    serial: Arc<Mutex<SerialConsole>>,
    extra: crate::device_manager::DeviceManager,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("kernel_kind", &self.kernel_kind)
            .field("vcpus", &self.vcpus.len())
            .finish_non_exhaustive()
    }
}

fn host_mem_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn open_kvm() -> Result<Kvm> {
    Kvm::new().map_err(|e| {
        let probe = detect_kvm();
        let reason = if probe.available() {
            format!("opening /dev/kvm failed: {e}")
        } else {
            probe.reason
        };
        Error::KvmUnavailable { reason }
    })
}

impl Vm {
    fn start(
        config: VmConfig,
        serial_out: Box<dyn Write + Send>,
        net: Option<NetConfig>,
    ) -> Result<Self> {
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(Error::InvalidVcpuCount(config.vcpus));
        }
        let min_mib = MIN_MEM_BYTES >> 20;
        if config.mem_mib < min_mib {
            return Err(Error::MemoryTooSmall {
                mib: config.mem_mib,
                min_mib,
            });
        }
        if let Some(host_mib) = host_mem_mib() {
            if config.mem_mib > host_mib {
                return Err(Error::MemoryTooLarge {
                    mib: config.mem_mib,
                    host_mib,
                });
            }
        }
        // Fail early on unusable disks, before touching KVM.
        for disk in &config.disks {
            check_disk(&disk.path, disk.read_only)?;
        }

        let kvm_sys = open_kvm()?;
        let vm_fd = kvm_sys.create_vm().map_err(kvm("create_vm"))?;
        vm_fd
            .set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm("set_tss_address"))?;
        vm_fd.create_irq_chip().map_err(kvm("create_irq_chip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm_fd.create_pit2(pit).map_err(kvm("create_pit2"))?;

        let mem_bytes = config.mem_mib << 20;
        let memory = create_guest_memory(mem_bytes)?;
        for (slot, region) in memory.iter().enumerate() {
            let mem_region = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mapping owned by `memory`, which the returned `Vm`
            // keeps alive for as long as `vm_fd` (and so the KVM slot) exists.
            unsafe { vm_fd.set_user_memory_region(mem_region) }
                .map_err(kvm("set_user_memory_region"))?;
        }

        let (kernel_kind, entry) = load_kernel(
            &memory,
            mem_bytes,
            &config.kernel,
            config.initrd.as_deref(),
            &config.cmdline,
        )?;
        tracing::debug!(?kernel_kind, entry = entry.addr, "kernel loaded");

        let exit = Arc::new(ExitSignal::default());
        let metrics = Arc::new(VmMetrics::default());
        let mut buses = Buses::default();

        let serial_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(host("serial eventfd"))?;
        vm_fd
            .register_irqfd(&serial_evt, SERIAL_IRQ)
            .map_err(kvm("register_irqfd (serial)"))?;
        let serial = Arc::new(Mutex::new(SerialConsole::new(
            serial_evt,
            serial_out,
            metrics.clone(),
        )));
        let overlap = |e: crate::devices::bus::Overlap| Error::Device {
            name: "legacy".into(),
            source: Box::new(e),
        };
        buses
            .pio
            .insert(serial.clone(), u64::from(SERIAL_PORT), 8)
            .map_err(overlap)?;
        buses
            .pio
            .insert(
                Arc::new(Mutex::new(I8042::new(exit.clone()))),
                u64::from(I8042_DATA_PORT),
                5,
            )
            .map_err(overlap)?;
        buses
            .pio
            .insert(
                Arc::new(Mutex::new(AcpiPm::new(exit.clone()))),
                u64::from(ACPI_SLEEP_CONTROL_PORT),
                3,
            )
            .map_err(overlap)?;

        let extra = crate::device_manager::DeviceManager::new(
            &config,
            net,
            &vm_fd,
            &memory,
            &mut buses.mmio,
        )?;
        let acpi = crate::acpi::AcpiConfig::new(config.vcpus).with_virtio_devices(
            extra
                .placements()
                .iter()
                .map(|p| crate::acpi::VirtioMmioDevice::new(p.base, p.size, p.gsi)),
        );
        crate::acpi::create_acpi_tables(&memory, &acpi).map_err(Error::Acpi)?;

        // vCPUs last: from here on the guest runs.
        install_kick_handler().map_err(host("vCPU kick signal handler"))?;
        let supported_cpuid = kvm_sys
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("get_supported_cpuid"))?;
        let msr_list = kvm_sys
            .get_msr_index_list()
            .map(|l| l.as_slice().to_vec())
            .unwrap_or_default();
        let mut fds = Vec::with_capacity(config.vcpus as usize);
        for index in 0..config.vcpus {
            let fd = vm_fd
                .create_vcpu(u64::from(index))
                .map_err(kvm("create_vcpu"))?;
            configure_vcpu(
                &fd,
                &memory,
                index,
                config.vcpus,
                &supported_cpuid,
                &msr_list,
                entry,
            )?;
            fds.push(fd);
        }
        let buses = Arc::new(buses);
        let mut vcpus = Vec::with_capacity(fds.len());
        for (index, fd) in fds.into_iter().enumerate() {
            let t = VcpuThread::spawn(
                index as u8,
                fd,
                buses.clone(),
                exit.clone(),
                metrics.clone(),
            );
            match t {
                Ok(t) => vcpus.push(t),
                Err(e) => {
                    exit.request(VmExit::Stopped);
                    for t in vcpus {
                        t.stop_and_join();
                    }
                    return Err(Error::Host {
                        what: "vCPU thread",
                        source: e,
                    });
                }
            }
        }

        Ok(Vm {
            _vm_fd: vm_fd,
            _memory: memory,
            kernel_kind,
            exit,
            metrics,
            vcpus,
            serial,
            extra,
        })
    }

    /// A handle that stops this VM from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            exit: self.exit.clone(),
        }
    }

    /// What kind of kernel image was booted.
    pub fn kernel_kind(&self) -> KernelKind {
        self.kernel_kind
    }

    /// Counters of tolerated guest misbehaviour; the handle stays valid after the VM ends.
    pub fn metrics(&self) -> Arc<VmMetrics> {
        self.metrics.clone()
    }

    /// Counters of the virtio-net device, if the VM has one; the handle stays valid after the
    /// VM ends.
    pub fn net_metrics(&self) -> Option<Arc<NetMetrics>> {
        self.extra.net_metrics()
    }

    /// A handle that feeds bytes to the guest's serial console input.
    pub fn console_input(&self) -> ConsoleInput {
        ConsoleInput {
            serial: self.serial.clone(),
            exit: self.exit.clone(),
        }
    }

    /// Block until the VM ends, then release its threads and return how it ended.
    pub fn wait(mut self) -> VmExit {
        let exit = self.exit.wait();
        self.shutdown();
        exit
    }

    fn shutdown(&mut self) {
        self.exit.request(VmExit::Stopped);
        for t in self.vcpus.drain(..) {
            t.stop_and_join();
        }
        self.extra.shutdown();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn check_disk(path: &Path, read_only: bool) -> Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map(drop)
        .map_err(|source| Error::Disk {
            path: path.to_owned(),
            source,
        })
}

fn configure_vcpu(
    fd: &kvm_ioctls::VcpuFd,
    memory: &GuestMemory,
    index: u8,
    count: u8,
    supported_cpuid: &kvm_bindings::CpuId,
    msr_list: &[u32],
    entry: EntryPoint,
) -> Result<()> {
    let mut cpuid = supported_cpuid.clone();
    cpuid::filter_cpuid(&mut cpuid, index, count);
    fd.set_cpuid2(&cpuid).map_err(kvm("set_cpuid2"))?;
    let msrs = msr::boot_msrs(msr_list);
    let set = fd.set_msrs(&msrs).map_err(kvm("set_msrs"))?;
    if set != msrs.as_slice().len() {
        tracing::debug!(
            set,
            wanted = msrs.as_slice().len(),
            "KVM accepted only some boot MSRs"
        );
    }
    fd.set_fpu(&regs::boot_fpu()).map_err(kvm("set_fpu"))?;
    let mut lapic_state = fd.get_lapic().map_err(kvm("get_lapic"))?;
    lapic::set_lint(&mut lapic_state);
    fd.set_lapic(&lapic_state).map_err(kvm("set_lapic"))?;
    if index == 0 {
        let mut sregs = fd.get_sregs().map_err(kvm("get_sregs"))?;
        regs::setup_sregs(memory, entry.mode, &mut sregs)
            .map_err(|e| Error::Boot(crate::error::BootError::Write(e.0)))?;
        fd.set_sregs(&sregs).map_err(kvm("set_sregs"))?;
        fd.set_regs(&regs::boot_regs(entry.mode, entry.addr, entry.boot_info))
            .map_err(kvm("set_regs"))?;
    }
    Ok(())
}
