//! Initial register state of the boot vCPU: GDT, identity page tables, segment and control
//! registers for 64-bit or 32-bit (PVH) entry, general-purpose registers and the FPU.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::gdt::{
    segment_from_gdt, CODE_INDEX, DATA_INDEX, GDT_LONG_MODE, GDT_PROTECTED_MODE, TSS_INDEX,
};
use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    ZERO_PAGE_START,
};
use crate::memory::GuestMemory;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode with identity-mapped page tables (bzImage, ELF vmlinux); `rsi` holds
    /// the zero page.
    Long64,
    /// 32-bit protected mode, paging off (PVH); `rbx` holds the `hvm_start_info` address.
    Pvh,
}

/// Error writing boot structures into guest memory.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the {0} into guest memory")]
pub struct WriteError(pub &'static str);

/// Initial FPU state: x87 control word and MXCSR at their reset defaults.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Initial general-purpose registers of the boot vCPU.
pub fn boot_regs(mode: EntryMode, entry: u64, boot_info: u64) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Long64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = boot_info;
        }
        EntryMode::Pvh => regs.rbx = boot_info,
    }
    regs
}

/// Write the GDT (and page tables for 64-bit entry) and adjust `sregs` for `mode`.
pub fn setup_sregs(
    mem: &GuestMemory,
    mode: EntryMode,
    sregs: &mut kvm_sregs,
) -> Result<(), WriteError> {
    let gdt = match mode {
        EntryMode::Long64 => &GDT_LONG_MODE,
        EntryMode::Pvh => &GDT_PROTECTED_MODE,
    };
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(|_| WriteError("boot GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| WriteError("boot IDT"))?;

    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;

    let code = segment_from_gdt(gdt[CODE_INDEX as usize], CODE_INDEX);
    let data = segment_from_gdt(gdt[DATA_INDEX as usize], DATA_INDEX);
    let tss = segment_from_gdt(gdt[TSS_INDEX as usize], TSS_INDEX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        EntryMode::Long64 => {
            setup_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh => {
            sregs.cr0 = (sregs.cr0 & !X86_CR0_PG) | X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(())
}

/// Identity-map the first 4 GiB with 2 MiB pages: PML4[0] -> PDPT, PDPT[0..4] -> four PDs.
fn setup_page_tables(mem: &GuestMemory) -> Result<(), WriteError> {
    let err = |_| WriteError("boot page tables");
    mem.write_obj(PDPTE_START | 0x3, GuestAddress(PML4_START))
        .map_err(err)?;
    for pd in 0..4u64 {
        let pd_addr = PDE_START + pd * 0x1000;
        mem.write_obj(pd_addr | 0x3, GuestAddress(PDPTE_START + pd * 8))
            .map_err(err)?;
        let mut table = [0u8; 4096];
        for (i, chunk) in table.chunks_exact_mut(8).enumerate() {
            let phys = ((pd << 9) + i as u64) << 21;
            // Present | writable | page size (2 MiB).
            chunk.copy_from_slice(&(phys | 0x83).to_le_bytes());
        }
        mem.write_slice(&table, GuestAddress(pd_addr))
            .map_err(err)?;
    }
    Ok(())
}

/// Guest address passed in `rsi` for 64-bit entry.
pub const fn zero_page() -> u64 {
    ZERO_PAGE_START
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    #[test]
    fn long_mode_sregs_and_page_tables() {
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, EntryMode::Long64, &mut sregs).unwrap();
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cs.l, 1);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        // The page covering 0xd000_0000 (virtio MMIO) maps to itself.
        let idx = 0xd000_0000u64 >> 21;
        let pde: u64 = mem.read_obj(GuestAddress(PDE_START + idx * 8)).unwrap();
        assert_eq!(pde, 0xd000_0000 | 0x83);
        let last: u64 = mem
            .read_obj(GuestAddress(PDE_START + 3 * 0x1000 + 511 * 8))
            .unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
    }

    #[test]
    fn pvh_sregs_are_protected_mode_without_paging() {
        let mem = create_guest_memory(4 << 20).unwrap();
        let mut sregs = kvm_sregs {
            cr0: X86_CR0_PG,
            ..Default::default()
        };
        setup_sregs(&mem, EntryMode::Pvh, &mut sregs).unwrap();
        assert_eq!(sregs.cr0 & X86_CR0_PG, 0);
        assert_ne!(sregs.cr0 & X86_CR0_PE, 0);
        assert_eq!(sregs.efer, 0);
        assert_eq!((sregs.cs.db, sregs.cs.l), (1, 0));
        let regs = boot_regs(EntryMode::Pvh, 0x10_0000, 0x6000);
        assert_eq!((regs.rip, regs.rbx, regs.rsi), (0x10_0000, 0x6000, 0));
    }
}
