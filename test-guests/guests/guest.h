/*
 * Shared definitions for the sbx test guests (assembly and C).
 *
 * The port numbers and values mirror sbx-vmm/src/arch/x86_64/layout.rs; keep them in sync.
 */
#ifndef SBX_GUEST_H
#define SBX_GUEST_H

#define COM1_THR 0x3f8          /* 8250 transmit holding register */
#define COM1_LSR 0x3fd          /* line status register */
#define LSR_THR_EMPTY 0x20

#define ACPI_SLEEP_CONTROL_PORT 0x600
#define ACPI_S5_VALUE ((5 << 2) | (1 << 5))     /* SLP_TYPx = 5, SLP_EN */

#define I8042_COMMAND_PORT 0x64
#define I8042_RESET_COMMAND 0xfe

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC 0x336ec578

#define LAPIC_BASE 0xfee00000

/* Bound on LSR polls per byte; the VMM's 8250 reports THR empty at once. */
#define LSR_POLL_LIMIT 10000

#ifdef __ASSEMBLER__

/* Emit the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) naming a 32-bit entry symbol. */
.macro PVH_NOTE entry
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                         /* n_namesz: "Xen\0" */
    .long 4                         /* n_descsz: a 32-bit physical address */
    .long XEN_ELFNOTE_PHYS32_ENTRY  /* n_type */
    .asciz "Xen"
    .balign 4
    .long \entry
    .popsection
.endm

/*
 * Serial and power routines, assembled in whatever mode (.code32 / .code64) is active where
 * the macro is expanded. Addresses are below 4 GiB, so 32-bit registers serve both modes.
 *
 *   serial_putc: byte in %bl; clobbers %eax, %ecx, %edx.
 *   serial_puts: NUL-terminated string at %esi; clobbers %eax, %ebx, %ecx, %edx, %esi.
 *   serial_putdec: unsigned value in %eax printed in decimal; clobbers %eax-%edx, %esi, %edi.
 *   acpi_poweroff / i8042_reset: never return.
 */
.macro SERIAL_ROUTINES
serial_putc:
    mov $COM1_LSR, %edx
    mov $LSR_POLL_LIMIT, %ecx
1:  in %dx, %al
    test $LSR_THR_EMPTY, %al
    jnz 2f
    dec %ecx
    jnz 1b
2:  mov $COM1_THR, %edx
    mov %bl, %al
    out %al, %dx
    ret

serial_puts:
1:  movzbl (%esi), %ebx
    test %bl, %bl
    jz 2f
    call serial_putc
    inc %esi
    jmp 1b
2:  ret

serial_putdec:
    /* Build the digits backwards in a 12-byte scratch buffer, then print it. */
    mov $putdec_buf_end, %edi
    movb $0, (%edi)
    mov $10, %ecx
1:  xor %edx, %edx
    div %ecx
    add $'0', %dl
    dec %edi
    mov %dl, (%edi)
    test %eax, %eax
    jnz 1b
    mov %edi, %esi
    jmp serial_puts

acpi_poweroff:
    mov $ACPI_SLEEP_CONTROL_PORT, %edx
    mov $ACPI_S5_VALUE, %al
    out %al, %dx
1:  hlt
    jmp 1b

i8042_reset:
    mov $I8042_COMMAND_PORT, %edx
    mov $I8042_RESET_COMMAND, %al
    out %al, %dx
1:  hlt
    jmp 1b

    .pushsection .bss
putdec_buf:
    .skip 11
putdec_buf_end:
    .skip 1
    .popsection
.endm

#endif /* __ASSEMBLER__ */
#endif /* SBX_GUEST_H */
