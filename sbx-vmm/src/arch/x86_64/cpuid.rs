//! CPUID for each vCPU: KVM's supported list, with topology and hypervisor bits adjusted.

use kvm_bindings::CpuId;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
/// EBX[31:24] initial APIC id, EBX[23:16] max logical processors.
const EBX_APIC_ID_SHIFT: u32 = 24;
const EBX_CPU_COUNT_SHIFT: u32 = 16;
const EBX_CLFLUSH_SIZE_SHIFT: u32 = 8;
/// ECX bit 31: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// EDX bit 28: HTT (the logical processor count field is valid).
const EDX_HTT: u32 = 1 << 28;

/// Adjust `cpuid` (KVM's supported set) for vCPU `index` of `count`.
pub fn filter_cpuid(cpuid: &mut CpuId, index: u8, count: u8) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (u32::from(index) << EBX_APIC_ID_SHIFT)
                    | (u32::from(count) << EBX_CPU_COUNT_SHIFT)
                    | (8 << EBX_CLFLUSH_SIZE_SHIFT);
                entry.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => {
                // x2APIC id of this logical processor, whatever the sub-leaf.
                entry.edx = u32::from(index);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn apic_id_and_count_are_set() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xffff_ffff,
                edx: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        filter_cpuid(&mut cpuid, 3, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[1].edx, 3);
    }
}
