//! sbx-vmm: a KVM microVM monitor on the rust-vmm crates.
//!
//! It boots Linux kernels the way Firecracker does (bzImage through the Linux boot protocol,
//! ELF vmlinux with a 64-bit entry, ELF with a PVH note), with an in-kernel irqchip and PIT,
//! an 8250 serial console, i8042 and ACPI power-off/reset, and virtio-mmio devices that the
//! guest discovers through ACPI.
//!
//! ```no_run
//! use sbx_vmm::{detect_kvm, VmBuilder, VmExit};
//!
//! let kvm = detect_kvm();
//! if !kvm.hardware_assisted() {
//!     eprintln!("no hardware KVM here: {}", kvm.reason);
//! }
//! let vm = VmBuilder::new("vmlinuz")
//!     .initrd("initramfs.cpio")
//!     .memory_mib(256)
//!     .disk("rootfs.ext4", true)
//!     .serial_output(Box::new(std::io::stdout()))
//!     .start()?;
//! let stop = vm.stop_handle(); // move to another thread to stop the VM from there
//! match vm.wait() {
//!     VmExit::Poweroff | VmExit::Reset => {}
//!     other => eprintln!("VM ended: {other}"),
//! }
//! # drop(stop);
//! # Ok::<(), sbx_vmm::Error>(())
//! ```
//!
//! # Platform
//! x86-64 Linux with KVM. The crate is synchronous: one thread per vCPU and one event loop
//! thread for device queues. It installs a no-op handler for `SIGRTMIN` to kick vCPU threads
//! out of `KVM_RUN` when a VM stops.

pub mod acpi;
pub mod arch;
mod device_manager;
pub mod devices;
mod error;
mod exit;
mod kvm_detect;
pub mod memory;
mod metrics;
#[cfg(feature = "test-utils")]
pub mod test_utils;
mod vcpu;
pub mod virtiofsd;
mod vm;

pub use arch::x86_64::boot::{EntryPoint, KernelKind};
pub use devices::virtio::vsock::connect_guest_port;
pub use devices::virtio::FsConfig;
pub use devices::virtio::{FdNetBackend, NetBackend, NetConfig, VsockConfig};
pub use error::{BootError, Error, MemoryError, Result};
pub use exit::{CrashReport, VmExit};
pub use kvm_detect::{detect_kvm, KvmKind, KvmSupport};
pub use metrics::{VmMetrics, VmMetricsSnapshot};
pub use vcpu::kick_signal;
pub use virtiofsd::{Virtiofsd, VirtiofsdConfig};
pub use vm::{ConsoleInput, DiskConfig, StopHandle, Vm, VmBuilder, VmConfig, MAX_VCPUS};
