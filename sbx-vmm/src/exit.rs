//! How a VM ended, and the shared signal that ends it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use kvm_bindings::{kvm_regs, kvm_sregs};

/// How a VM ended.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum VmExit {
    /// The guest powered off (ACPI S5, or KVM's system-event shutdown).
    Poweroff,
    /// The guest asked for a reset (i8042 `0xfe`, ACPI reset register). sbx does not reboot
    /// guests: a reset ends the VM.
    Reset,
    /// The host stopped the VM through a [`StopHandle`](crate::StopHandle).
    Stopped,
    /// The guest crashed or KVM failed; the report says where.
    Crashed(Box<CrashReport>),
}

impl VmExit {
    /// Whether the guest ended on its own terms (poweroff or reset).
    pub fn is_clean(&self) -> bool {
        matches!(self, VmExit::Poweroff | VmExit::Reset)
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Poweroff => f.write_str("guest powered off"),
            VmExit::Reset => f.write_str("guest reset"),
            VmExit::Stopped => f.write_str("stopped by the host"),
            VmExit::Crashed(r) => write!(f, "{r}"),
        }
    }
}

/// What went wrong on which vCPU, with its registers when they could be read.
#[derive(Clone, Debug, PartialEq)]
pub struct CrashReport {
    /// Index of the vCPU that stopped.
    pub vcpu: u8,
    /// What happened, e.g. `triple fault` or `KVM internal error`.
    pub reason: String,
    /// General-purpose registers at the time.
    pub regs: Option<kvm_regs>,
    /// Segment and control registers at the time.
    pub sregs: Option<kvm_sregs>,
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vCPU {} stopped: {}", self.vcpu, self.reason)?;
        if let Some(r) = &self.regs {
            write!(
                f,
                " (rip={:#x} rsp={:#x} rflags={:#x} rax={:#x})",
                r.rip, r.rsp, r.rflags, r.rax
            )?;
        }
        if let Some(s) = &self.sregs {
            write!(
                f,
                " (cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs.sel={:#x})",
                s.cr0, s.cr3, s.cr4, s.efer, s.cs.selector
            )?;
        }
        Ok(())
    }
}

/// The first exit wins; everybody else sees `stopping()` and winds down.
#[derive(Debug, Default)]
pub(crate) struct ExitSignal {
    exit: Mutex<Option<VmExit>>,
    cond: Condvar,
    stopping: AtomicBool,
}

impl ExitSignal {
    /// Record `exit` if nothing ended the VM yet. Returns whether this call won.
    pub(crate) fn request(&self, exit: VmExit) -> bool {
        let mut guard = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        self.stopping.store(true, Ordering::SeqCst);
        if guard.is_some() {
            return false;
        }
        tracing::debug!(%exit, "vm exit requested");
        *guard = Some(exit);
        self.cond.notify_all();
        true
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Block until an exit was requested.
    pub(crate) fn wait(&self) -> VmExit {
        let mut guard = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(exit) = guard.as_ref() {
                return exit.clone();
            }
            guard = self.cond.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The exit, if any.
    #[cfg(test)]
    pub(crate) fn get(&self) -> Option<VmExit> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_exit_wins() {
        let s = ExitSignal::default();
        assert!(!s.stopping());
        assert!(s.request(VmExit::Poweroff));
        assert!(!s.request(VmExit::Stopped));
        assert!(s.stopping());
        assert_eq!(s.wait(), VmExit::Poweroff);
    }
}
