//! Is `/dev/kvm` usable, and is it hardware-assisted?
//!
//! Hosts without VT-x/AMD-V (cloud VMs without nested virtualization) sometimes expose a
//! software nested hypervisor (`kvm_pvm`) as `/dev/kvm`. It runs tiny guests but cannot boot a
//! stock distro kernel, so callers use [`detect_kvm`] to pick a backend.

use std::fs::OpenOptions;
use std::path::Path;

/// What kind of KVM the host offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvmKind {
    /// Hardware-assisted KVM on Intel VT-x.
    Intel,
    /// Hardware-assisted KVM on AMD-V.
    Amd,
    /// `kvm_pvm`: a software (shadow-paging) nested hypervisor. Small guests run, slowly; a
    /// stock Linux kernel does not boot.
    Pvm,
    /// `/dev/kvm` works but the flavour could not be determined.
    Unknown,
}

/// The result of probing the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmSupport {
    /// The KVM flavour, when `/dev/kvm` can be opened.
    pub kind: Option<KvmKind>,
    /// A one-line explanation fit for users, including how to fix it when unusable.
    pub reason: String,
}

impl KvmSupport {
    /// `/dev/kvm` can be opened.
    pub fn available(&self) -> bool {
        self.kind.is_some()
    }

    /// `/dev/kvm` can be opened and is hardware-assisted, so real kernels boot.
    pub fn hardware_assisted(&self) -> bool {
        matches!(self.kind, Some(KvmKind::Intel | KvmKind::Amd))
    }
}

/// Probe `/dev/kvm`, `/sys/module` and `/proc/cpuinfo`.
pub fn detect_kvm() -> KvmSupport {
    detect_at(
        Path::new("/dev/kvm"),
        Path::new("/sys/module"),
        Path::new("/proc/cpuinfo"),
    )
}

fn detect_at(dev: &Path, modules: &Path, cpuinfo: &Path) -> KvmSupport {
    if !dev.exists() {
        return KvmSupport {
            kind: None,
            reason: format!(
                "{} does not exist: enable VT-x/AMD-V (or nested virtualization) and load kvm_intel or kvm_amd",
                dev.display()
            ),
        };
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open(dev) {
        let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
            ": add your user to the group that owns it (`sudo usermod -aG kvm $USER`, then log in again)"
        } else {
            ""
        };
        return KvmSupport {
            kind: None,
            reason: format!("cannot open {}: {e}{fix}", dev.display()),
        };
    }
    let flags = std::fs::read_to_string(cpuinfo)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("flags"))
                .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        })
        .unwrap_or_default();
    let has = |f: &str| flags.iter().any(|x| x == f);
    if modules.join("kvm_pvm").exists() && !has("vmx") && !has("svm") {
        return KvmSupport {
            kind: Some(KvmKind::Pvm),
            reason: "/dev/kvm is kvm_pvm, a software nested hypervisor: tiny guests run, stock kernels do not boot".into(),
        };
    }
    if has("vmx") || modules.join("kvm_intel").exists() {
        return KvmSupport {
            kind: Some(KvmKind::Intel),
            reason: "hardware-assisted KVM (Intel VT-x)".into(),
        };
    }
    if has("svm") || modules.join("kvm_amd").exists() {
        return KvmSupport {
            kind: Some(KvmKind::Amd),
            reason: "hardware-assisted KVM (AMD-V)".into(),
        };
    }
    if modules.join("kvm_pvm").exists() {
        return KvmSupport {
            kind: Some(KvmKind::Pvm),
            reason: "/dev/kvm is kvm_pvm, a software nested hypervisor".into(),
        };
    }
    KvmSupport {
        kind: Some(KvmKind::Unknown),
        reason: "/dev/kvm opens but its flavour is unknown (no vmx/svm flag, no kvm_pvm module)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(flags: &str, modules: &[&str]) -> (tempdir::Dir, KvmSupport) {
        let d = tempdir::Dir::new();
        let dev = d.0.join("kvm");
        std::fs::write(&dev, b"").unwrap();
        let m = d.0.join("module");
        for name in modules {
            std::fs::create_dir_all(m.join(name)).unwrap();
        }
        std::fs::create_dir_all(&m).unwrap();
        let cpu = d.0.join("cpuinfo");
        std::fs::write(
            &cpu,
            format!("processor\t: 0\nflags\t\t: fpu {flags} sse\n"),
        )
        .unwrap();
        let s = detect_at(&dev, &m, &cpu);
        (d, s)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "sbx-kvm-detect-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn classifies_hosts() {
        assert_eq!(fake("vmx", &["kvm_intel"]).1.kind, Some(KvmKind::Intel));
        assert_eq!(fake("svm", &["kvm_amd"]).1.kind, Some(KvmKind::Amd));
        let (_d, pvm) = fake("", &["kvm", "kvm_pvm"]);
        assert_eq!(pvm.kind, Some(KvmKind::Pvm));
        assert!(pvm.available() && !pvm.hardware_assisted());
        assert_eq!(fake("", &[]).1.kind, Some(KvmKind::Unknown));
    }

    #[test]
    fn missing_device_says_how_to_fix() {
        let s = detect_at(
            Path::new("/nonexistent/kvm"),
            Path::new("/sys/module"),
            Path::new("/proc/cpuinfo"),
        );
        assert!(!s.available());
        assert!(s.reason.contains("VT-x"), "{}", s.reason);
    }
}
