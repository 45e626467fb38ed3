//! Model-specific registers set on every vCPU before it first runs.

use kvm_bindings::{kvm_msr_entry, Msrs};

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// The boot MSR values (index, value).
pub fn boot_msr_entries() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
}

/// The boot MSRs as the KVM structure, keeping only those KVM reports it can save/restore.
pub fn boot_msrs(supported: &[u32]) -> Msrs {
    let entries: Vec<kvm_msr_entry> = boot_msr_entries()
        .into_iter()
        .filter(|(index, _)| supported.is_empty() || supported.contains(index))
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    // The list is far below KVM_MAX_MSR_ENTRIES, so building the wrapper cannot fail.
    Msrs::from_entries(&entries).unwrap_or_else(|_| Msrs::new(0).expect("empty MSR list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_msrs_are_dropped() {
        let msrs = boot_msrs(&[MSR_IA32_TSC, MSR_MTRR_DEF_TYPE]);
        let idx: Vec<u32> = msrs.as_slice().iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![MSR_IA32_TSC, MSR_MTRR_DEF_TYPE]);
        assert_eq!(boot_msrs(&[]).as_slice().len(), boot_msr_entries().len());
    }
}
