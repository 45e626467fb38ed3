//! The sandbox's seccomp filters (built with `seccompiler`, as Firecracker does).
//!
//! A deny list on top of the namespaces: the calls below either reach state that namespaces do
//! not isolate (the kernel keyring, modules, kexec, BPF, perf), widen the kernel attack surface
//! (`userfaultfd`, io_uring), or would let the sandbox rebuild what the setup took away (new user
//! namespaces, mounts, `setns`), or reach the host around the network namespace (`AF_VSOCK`
//! sockets). Everything else is allowed so ordinary tools (apt, git,
//! compilers, `strace` inside) keep working.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Syscalls denied outright with `EPERM`.
const DENIED: &[(i64, &str)] = &[
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
    (libc::SYS_vhangup, "vhangup"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_iopl, "iopl"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_ioperm, "ioperm"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_uselib, "uselib"),
];

/// Namespace flags refused in `clone` and `unshare`.
const NS_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
    0x80, // CLONE_NEWTIME
];

/// Terminal ioctls that push input into, or reconfigure, a terminal the sandbox may have
/// inherited from the host.
#[allow(clippy::unnecessary_cast)] // the request type differs between libcs
const DENIED_IOCTLS: &[u64] = &[libc::TIOCSTI as u64, libc::TIOCLINUX as u64];

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())
}

fn masked(arg: u8, bit: u64) -> Result<SeccompRule, String> {
    let cond = SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(bit),
        bit,
    )
    .map_err(|e| e.to_string())?;
    SeccompRule::new(vec![cond]).map_err(|e| e.to_string())
}

/// The two programs to install, in order: the deny list (`EPERM`) and `clone3` (`ENOSYS`, so
/// libc falls back to `clone`, whose flags a filter can inspect).
pub(crate) fn programs() -> Result<Vec<BpfProgram>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, _) in DENIED {
        rules.insert(*nr, Vec::new());
    }
    let ns_rules = |arg| -> Result<Vec<SeccompRule>, String> {
        NS_FLAGS
            .iter()
            .map(|f| masked(arg, *f as u64))
            .collect::<Result<_, _>>()
    };
    rules.insert(libc::SYS_unshare, ns_rules(0)?);
    rules.insert(libc::SYS_clone, ns_rules(0)?);
    let ioctl_rules = DENIED_IOCTLS
        .iter()
        .map(|req| {
            let cond = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *req)
                .map_err(|e| e.to_string())?;
            SeccompRule::new(vec![cond]).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    // vsock is not network-namespaced: an AF_VSOCK socket would reach the host's (or the
    // hypervisor's) vsock services around the TAP.
    let vsock = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::AF_VSOCK as u64,
    )
    .map_err(|e| e.to_string())?;
    rules.insert(
        libc::SYS_socket,
        vec![SeccompRule::new(vec![vsock]).map_err(|e| e.to_string())?],
    );
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(|e| e.to_string())?;

    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(|e| e.to_string())?;

    Ok(vec![
        deny.try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())?,
        clone3
            .try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())?,
    ])
}

/// Installs the filters on the calling thread and sets `no_new_privs` (seccompiler does).
pub(crate) fn install() -> Result<(), String> {
    for p in programs()? {
        seccompiler::apply_filter(&p).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Installs the filters on the calling thread without setting `no_new_privs`, so that setuid
/// programs keep working inside. Needs `CAP_SYS_ADMIN` in the current user namespace.
pub(crate) fn install_keeping_setuid() -> Result<(), String> {
    for p in programs()? {
        let prog = libc::sock_fprog {
            len: u16::try_from(p.len()).map_err(|_| "seccomp filter too long".to_string())?,
            // `seccompiler::sock_filter` is `#[repr(C)]` with the same fields as the kernel's
            // `struct sock_filter`, so the cast only renames the type.
            filter: p.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: `prog` points at `p`, a live, correctly sized array of BPF instructions, for
        // the duration of the call; the kernel copies the program before returning.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_arch() {
        let p = programs().unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].len() > DENIED.len());
    }
}
