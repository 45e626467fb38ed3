/*
 * misbehave: touches things no device answers, then powers off. The VMM must log and count
 * them, never fail: a read and a write of port 0x1234, a 32-bit read and write at 0xe0000000
 * (inside the MMIO hole, no device there), and a 1-byte write and read at the first virtio-mmio
 * window (wrong access size for a virtio register, or no device at all). PVH entry.
 */
#include "guest.h"

#define UNKNOWN_PORT 0x1234
#define UNKNOWN_MMIO 0xe0000000
#define VIRTIO_WINDOW0 0xd0000000

    .section .text.entry, "ax"
    .globl _start
    .code32
_start:
    cli
    mov $__stack_top, %esp
    mov $UNKNOWN_PORT, %dx
    in %dx, %al
    out %al, %dx
    mov $UNKNOWN_MMIO, %edi
    mov (%edi), %eax
    movl $0x12345678, (%edi)
    mov $VIRTIO_WINDOW0, %edi
    movb $0xff, 0x70(%edi)              /* status register, written with the wrong size */
    movb 0x0(%edi), %al                 /* magic register, read with the wrong size */
    mov $msg_done, %esi
    call serial_puts
    jmp acpi_poweroff

    SERIAL_ROUTINES
    PVH_NOTE _start

    .section .rodata
msg_done: .asciz "sbx-test-guest: misbehaved\nsbx-test-guest: poweroff\n"
