/*
 * minimal: the cold-start benchmark guest. Its very first instruction sequence writes one
 * byte ('S') to COM1, then it powers off through ACPI S5. PVH entry (32-bit, paging off).
 * No stack, no start_info access, no polling: the shortest path from entry to first byte.
 */
#include "guest.h"

    .section .text.entry, "ax"
    .globl _start
    .code32
_start:
    mov $COM1_THR, %edx
    mov $'S', %al
    out %al, %dx
    mov $ACPI_SLEEP_CONTROL_PORT, %edx
    mov $ACPI_S5_VALUE, %al
    out %al, %dx
1:  cli
    hlt
    jmp 1b

    PVH_NOTE _start
