//! x86-64 specifics: memory layout, boot register state, CPUID, MSRs and the local APIC.

pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod lapic;
pub mod layout;
pub mod msr;
pub mod regs;
