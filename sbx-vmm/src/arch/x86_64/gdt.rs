//! The boot GDT and the segment registers derived from it.

use kvm_bindings::kvm_segment;

/// Encode a GDT descriptor from access/flags (`0xF0FF` mask: flags nibble and access byte),
/// base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// Selector index of the code segment.
pub const CODE_INDEX: u16 = 1;
/// Selector index of the data segment.
pub const DATA_INDEX: u16 = 2;
/// Selector index of the TSS.
pub const TSS_INDEX: u16 = 3;

/// The four GDT entries for a 64-bit boot: null, 64-bit code, data, TSS.
pub const GDT_LONG_MODE: [u64; 4] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// The four GDT entries for a 32-bit protected-mode (PVH) boot: null, 32-bit code, data, TSS.
pub const GDT_PROTECTED_MODE: [u64; 4] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// The KVM segment register value for GDT entry `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let granularity = ((entry >> 55) & 1) as u8;
    let limit = if granularity == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granularity,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_code_segment() {
        let cs = segment_from_gdt(GDT_LONG_MODE[1], CODE_INDEX);
        assert_eq!(cs.selector, 8);
        assert_eq!(cs.l, 1);
        assert_eq!(cs.db, 0);
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.present, 1);
        assert_eq!(cs.s, 1);
        assert_eq!(cs.g, 1);
    }

    #[test]
    fn protected_mode_segments_are_flat_32_bit() {
        let cs = segment_from_gdt(GDT_PROTECTED_MODE[1], CODE_INDEX);
        assert_eq!((cs.l, cs.db, cs.base, cs.limit), (0, 1, 0, 0xffff_ffff));
        let ds = segment_from_gdt(GDT_PROTECTED_MODE[2], DATA_INDEX);
        assert_eq!((ds.type_, ds.db), (3, 1));
        let tss = segment_from_gdt(GDT_PROTECTED_MODE[3], TSS_INDEX);
        assert_eq!((tss.type_, tss.s, tss.present), (0xb, 0, 1));
    }

    #[test]
    fn encoding_round_trips_base() {
        let e = gdt_entry(0xc093, 0x1234_5678, 0xabcde);
        let s = segment_from_gdt(e, 2);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcd_efff);
    }
}
