/*
 * PVH-to-long-mode shim, linked only into the "-qemu" check variants of the 64-bit guests.
 *
 * QEMU boots ELF kernels only through PVH (32-bit entry), while sbx-vmm enters a note-less ELF
 * in long mode. This shim recreates sbx-vmm's 64-bit entry state so that the very same 64-bit
 * guest code can be exercised under QEMU: identity map of 0..4 GiB in 2 MiB pages, a flat
 * 64-bit GDT, interrupts off, %rsp = 0x8ff0, %rsi = 0 (there is no zero page), then a jump to
 * the guest's `_start`.
 */
#include "guest.h"

#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define PTE_PRESENT_RW 0x3
#define PDE_LARGE_PAGE 0x83
#define BOOT_STACK_POINTER 0x8ff0

    .section .text, "ax"
    .code32
pvh_long_shim:
    cli
    /* Clear PML4 and PDPT (the four page directories are fully written below). */
    xor %eax, %eax
    mov $shim_pml4, %edi
    mov $(2 * 4096 / 4), %ecx
    rep stosl
    movl $(shim_pdpt + PTE_PRESENT_RW), shim_pml4
    mov $shim_pdpt, %edi
    mov $shim_pd, %eax
    or $PTE_PRESENT_RW, %eax
    mov $4, %ecx
1:  mov %eax, (%edi)
    movl $0, 4(%edi)
    add $8, %edi
    add $4096, %eax
    dec %ecx
    jnz 1b
    /* 2048 entries of 2 MiB each: 0..4 GiB. */
    mov $shim_pd, %edi
    mov $PDE_LARGE_PAGE, %eax
    mov $2048, %ecx
1:  mov %eax, (%edi)
    movl $0, 4(%edi)
    add $8, %edi
    add $0x200000, %eax
    dec %ecx
    jnz 1b

    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $shim_pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    lgdt shim_gdt_desc
    mov %cr0, %eax
    or $(CR0_PE | CR0_PG), %eax
    mov %eax, %cr0
    ljmp $0x08, $shim_long

    .code64
shim_long:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $BOOT_STACK_POINTER, %esp
    xor %esi, %esi
    jmp _start

    PVH_NOTE pvh_long_shim

    .section .rodata
    .balign 8
shim_gdt:
    .quad 0                         /* null */
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: data */
shim_gdt_end:
shim_gdt_desc:
    .word shim_gdt_end - shim_gdt - 1
    .long shim_gdt

    .section .pagetables, "aw", @nobits
    .balign 4096
shim_pml4: .skip 4096
shim_pdpt: .skip 4096
shim_pd:   .skip 4 * 4096
