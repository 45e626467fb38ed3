/*
 * Entry of the C guests: sbx-vmm's 64-bit ELF entry (long mode, identity-mapped 0..4 GiB,
 * interrupts off). Switches to the image's own stack, zeroes .bss and calls guest_main(),
 * which never returns.
 */
    .section .text.entry, "ax"
    .globl _start
    .code64
_start:
    cli
    cld
    mov $__stack_top, %esp
    xor %eax, %eax
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    rep stosb
    call guest_main
1:  hlt
    jmp 1b
