//! Capability reduction for the sandbox's PID 1 and everything it starts.

/// What a root-in-container keeps (Docker's default set). Notably absent: `CAP_SYS_ADMIN`
/// (mounts, namespaces), `CAP_NET_ADMIN` (the network config is fixed from outside),
/// `CAP_SYS_PTRACE`, `CAP_SYS_MODULE`, `CAP_SYS_RAWIO`, `CAP_DAC_READ_SEARCH`, `CAP_SYS_TIME`,
/// `CAP_SYSLOG`, `CAP_BPF`, `CAP_PERFMON`.
pub const KEPT_CAPABILITIES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The bounding-set mask we keep, as two 32-bit words.
fn kept_mask() -> [u32; 2] {
    let mut m = [0u32; 2];
    for (c, _) in KEPT_CAPABILITIES {
        m[(*c / 32) as usize] |= 1 << (c % 32);
    }
    m
}

/// Drops everything outside [`KEPT_CAPABILITIES`] from the bounding set, empties the
/// inheritable and ambient sets, and trims effective/permitted to the kept set. After `execve`
/// root inside gets exactly the bounding set.
pub(crate) fn reduce() -> std::io::Result<()> {
    let keep = kept_mask();
    for cap in 0..=last_cap() {
        if keep[(cap / 32) as usize] & (1 << (cap % 32)) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two `CapData` (the version-3 layout) into `data` and reads `hdr`.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for (d, k) in data.iter_mut().zip(keep) {
        d.effective &= k;
        d.permitted &= k;
        d.inheritable = 0;
    }
    // SAFETY: capset reads `hdr` and two `CapData`.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_mask_has_no_sys_admin() {
        let m = kept_mask();
        assert_eq!(m[0] & (1 << 21), 0, "CAP_SYS_ADMIN");
        assert_eq!(m[0] & (1 << 12), 0, "CAP_NET_ADMIN");
        assert_eq!(m[0] & (1 << 19), 0, "CAP_SYS_PTRACE");
        assert_ne!(m[0] & 1, 0, "CAP_CHOWN");
    }
}
