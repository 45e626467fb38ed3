/*
 * spin: prints one line, then spins forever in a busy loop with interrupts off. Only the host
 * can end it (a stop request must kick the vCPU out of KVM_RUN). PVH entry.
 */
#include "guest.h"

    .section .text.entry, "ax"
    .globl _start
    .code32
_start:
    cli
    mov $__stack_top, %esp
    mov $msg_spin, %esi
    call serial_puts
1:  jmp 1b

    SERIAL_ROUTINES
    PVH_NOTE _start

    .section .rodata
msg_spin: .asciz "sbx-test-guest: spinning\n"
