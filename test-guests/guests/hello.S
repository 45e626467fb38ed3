/*
 * hello: prints a fixed greeting, names the entry path it was started through, says how it is
 * about to leave, and leaves through ACPI S5 (default) or the i8042 reset line (-DEXIT_I8042).
 *
 * Built with -DPVH: 32-bit PVH entry (paging off, %ebx = hvm_start_info).
 * Built without:    64-bit ELF entry (long mode, identity-mapped, %rsi = zero page).
 */
#include "guest.h"

    .section .text.entry, "ax"
    .globl _start
#ifdef PVH
    .code32
_start:
    cli
    mov $__stack_top, %esp
    mov %ebx, %ebp                      /* hvm_start_info, checked below */
    mov $msg_hello, %esi
    call serial_puts
    mov $msg_entry_pvh, %esi
    call serial_puts
    mov $msg_start_info_ok, %esi
    cmpl $HVM_START_MAGIC, (%ebp)
    je 1f
    mov $msg_start_info_bad, %esi
1:  call serial_puts
#else
    .code64
_start:
    cli
    mov $__stack_top, %esp
    mov $msg_hello, %esi
    call serial_puts
    mov $msg_entry_long64, %esi
    call serial_puts
#endif

#ifdef EXIT_I8042
    mov $msg_reset, %esi
    call serial_puts
    jmp i8042_reset
#else
    mov $msg_poweroff, %esi
    call serial_puts
    jmp acpi_poweroff
#endif

    SERIAL_ROUTINES

#ifdef PVH
    PVH_NOTE _start
#endif

    .section .rodata
msg_hello:          .asciz "sbx-test-guest: hello\n"
msg_entry_pvh:      .asciz "sbx-test-guest: entry=pvh32"
msg_start_info_ok:  .asciz " start_info=ok\n"
msg_start_info_bad: .asciz " start_info=bad\n"
msg_entry_long64:   .asciz "sbx-test-guest: entry=long64\n"
#ifdef EXIT_I8042
msg_reset:          .asciz "sbx-test-guest: reset\n"
#else
msg_poweroff:       .asciz "sbx-test-guest: poweroff\n"
#endif
