//! vCPU threads: configure each vCPU, then run it and dispatch its exits to the buses.

use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::Bus;
use crate::exit::{CrashReport, ExitSignal, VmExit};
use crate::metrics::{inc, VmMetrics};

/// The port-I/O and MMIO buses shared by all vCPUs.
#[derive(Debug, Default)]
pub(crate) struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// Signal used to kick a vCPU thread out of `KVM_RUN` when the VM stops. sbx-vmm installs a
/// no-op handler for it; embedders must not use `SIGRTMIN` for anything else.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Install the kick signal's handler once per process.
pub(crate) fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

pub(crate) struct VcpuThread {
    handle: JoinHandle<()>,
}

impl VcpuThread {
    pub(crate) fn spawn(
        index: u8,
        fd: VcpuFd,
        buses: Arc<Buses>,
        exit: Arc<ExitSignal>,
        metrics: Arc<VmMetrics>,
    ) -> std::io::Result<Self> {
        let handle = std::thread::Builder::new()
            .name(format!("sbx-vcpu{index}"))
            .spawn(move || run(index, fd, &buses, &exit, &metrics))?;
        Ok(Self { handle })
    }

    /// Kick the thread out of KVM_RUN until it notices the VM is stopping, then join it.
    pub(crate) fn stop_and_join(self) {
        use std::os::unix::thread::JoinHandleExt;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.handle.is_finished() {
            // SAFETY: the pthread_t belongs to a thread we spawned and have not joined yet, so
            // it is valid; the signal has a no-op handler installed by `install_kick_handler`.
            unsafe { libc::pthread_kill(self.handle.as_pthread_t(), kick_signal()) };
            if Instant::now() > deadline {
                tracing::error!("vCPU thread did not stop within 10 s; leaving it detached");
                return;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        if self.handle.join().is_err() {
            tracing::error!("vCPU thread panicked");
        }
    }
}

fn crash(index: u8, fd: &VcpuFd, reason: String) -> VmExit {
    VmExit::Crashed(Box::new(CrashReport {
        vcpu: index,
        reason,
        regs: fd.get_regs().ok(),
        sregs: fd.get_sregs().ok(),
    }))
}

fn run(index: u8, mut fd: VcpuFd, buses: &Buses, exit: &ExitSignal, metrics: &VmMetrics) {
    tracing::debug!(vcpu = index, "vCPU running");
    while !exit.stopping() {
        let outcome = match fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !buses.pio.read(u64::from(port), data) {
                    inc(&metrics.unknown_pio_reads);
                    tracing::trace!(port, "unhandled port read");
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                if !buses.pio.write(u64::from(port), data) {
                    inc(&metrics.unknown_pio_writes);
                    tracing::trace!(port, "unhandled port write");
                }
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !buses.mmio.read(addr, data) {
                    inc(&metrics.unknown_mmio_reads);
                    tracing::debug!(addr, "unhandled MMIO read");
                    data.fill(0);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !buses.mmio.write(addr, data) {
                    inc(&metrics.unknown_mmio_writes);
                    tracing::debug!(addr, "unhandled MMIO write");
                }
                None
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::Poweroff,
                KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
                KVM_SYSTEM_EVENT_CRASH => crash(index, &fd, "guest reported a crash".into()),
                other => crash(index, &fd, format!("unknown system event {other}")),
            }),
            Ok(VcpuExit::Shutdown) => {
                Some(crash(index, &fd, "triple fault (KVM_EXIT_SHUTDOWN)".into()))
            }
            Ok(VcpuExit::Hlt) => Some(crash(index, &fd, "halted (KVM_EXIT_HLT)".into())),
            Ok(VcpuExit::InternalError) => Some(crash(
                index,
                &fd,
                "KVM internal error (emulation failure)".into(),
            )),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(crash(
                index,
                &fd,
                format!("VM entry failed (hardware reason {reason:#x} on host cpu {cpu})"),
            )),
            Ok(other) => {
                inc(&metrics.unhandled_exits);
                tracing::debug!(vcpu = index, exit = ?other, "unhandled vCPU exit");
                None
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                fd.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(crash(index, &fd, format!("KVM_RUN failed: {e}"))),
        };
        if let Some(outcome) = outcome {
            exit.request(outcome);
        }
    }
    tracing::debug!(vcpu = index, "vCPU stopped");
}
