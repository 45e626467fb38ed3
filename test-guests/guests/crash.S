/*
 * crash: prints one line, loads an empty IDT and raises an exception, which becomes a triple
 * fault. The VMM must report a crash with the vCPU's registers (rip near `boom`). PVH entry.
 */
#include "guest.h"

    .section .text.entry, "ax"
    .globl _start
    .code32
_start:
    cli
    mov $__stack_top, %esp
    mov $msg_crash, %esi
    call serial_puts
    lidt empty_idt
    mov $0x5bc0ffee, %eax               /* marker the test finds in the crash report */
    .globl boom
boom:
    int3
1:  jmp 1b

    SERIAL_ROUTINES
    PVH_NOTE _start

    .section .rodata
    .p2align 3
empty_idt:
    .word 0
    .long 0
msg_crash: .asciz "sbx-test-guest: crashing\n"
