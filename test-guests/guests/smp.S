/*
 * smp: counts the vCPUs it was started with, two ways.
 *
 *   1. ACPI: finds the RSDP (hvm_start_info.rsdp_paddr, else a scan of 0xe0000..0xfffff), walks
 *      the XSDT (or RSDT) to the MADT, checks its checksum, and counts the enabled Local APIC
 *      (type 0) and Local x2APIC (type 9) entries            -> "madt-cpus=N".
 *   2. For real: copies a real-mode trampoline to AP_TRAMPOLINE_ADDR, sends INIT, SIPI, SIPI to
 *      all other CPUs through the xAPIC ICR; every AP that runs the trampoline atomically
 *      increments a counter and halts. The BSP waits (TSC-bounded) for the APs and reports
 *      1 + the counter                                       -> "cpus=N".
 *
 * PVH entry (32-bit, paging off), so the LAPIC and ACPI tables are reached by physical address.
 */
#include "guest.h"

#define AP_TRAMPOLINE_ADDR 0x10000          /* free RAM in sbx-vmm's layout (below CMDLINE_START) */
#define SIPI_VECTOR (AP_TRAMPOLINE_ADDR >> 12)
/* The counter inside the copied trampoline. */
#define AP_COUNTER (AP_TRAMPOLINE_ADDR + ap_counter - ap_trampoline)

#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LOW 0x300
#define LAPIC_ICR_HIGH 0x310
#define SVR_APIC_ENABLE 0x100
#define ICR_DELIVERY_PENDING 0x1000
#define ICR_ALL_EXCLUDING_SELF 0xc0000
#define ICR_LEVEL_ASSERT 0x4000
#define ICR_INIT 0x500
#define ICR_STARTUP 0x600

/* TSC-based waits: guest code runs ~1000x slower under kvm_pvm, the TSC does not. */
#define INIT_DELAY_TICKS 10000000           /* a few ms */
#define SIPI_DELAY_TICKS 1000000            /* well under 1 ms */
#define AP_WAIT_TICKS 4000000000            /* about 1.5 s at 2.6 GHz */
#define AP_GRACE_TICKS 50000000             /* extra wait once all MADT CPUs checked in */

#define SIG_RSD 0x20445352                  /* "RSD " */
#define SIG_PTR 0x20525450                  /* "PTR " */
#define SIG_APIC 0x43495041                 /* "APIC" */

    .section .text.entry, "ax"
    .globl _start
    .code32
_start:
    cli
    mov $__stack_top, %esp
    mov %ebx, %ebp                          /* hvm_start_info */

    mov $msg_banner, %esi
    call serial_puts

    /* --- ACPI: count the CPUs the MADT describes. --- */
    call find_rsdp
    test %eax, %eax
    jnz 1f
    mov $msg_no_rsdp, %esi
    call serial_puts
    jmp 3f
1:  call find_madt
    test %eax, %eax
    jnz 2f
    mov $msg_no_madt, %esi
    call serial_puts
    jmp 3f
2:  call count_madt_cpus
    mov %eax, madt_cpus
3:  mov $msg_madt_cpus, %esi
    call serial_puts
    mov madt_cpus, %eax
    call serial_putdec
    mov $msg_newline, %esi
    call serial_puts

    /* --- Start the APs for real. --- */
    mov $ap_trampoline, %esi
    mov $AP_TRAMPOLINE_ADDR, %edi
    mov $(ap_trampoline_end - ap_trampoline), %ecx
    cld
    rep movsb
    movl $0, AP_COUNTER

    orl $SVR_APIC_ENABLE, LAPIC_BASE + LAPIC_SVR
    mov $(ICR_ALL_EXCLUDING_SELF | ICR_LEVEL_ASSERT | ICR_INIT), %eax
    call send_ipi
    mov $INIT_DELAY_TICKS, %eax
    call tsc_delay
    mov $(ICR_ALL_EXCLUDING_SELF | ICR_LEVEL_ASSERT | ICR_STARTUP | SIPI_VECTOR), %eax
    call send_ipi
    mov $SIPI_DELAY_TICKS, %eax
    call tsc_delay
    mov $(ICR_ALL_EXCLUDING_SELF | ICR_LEVEL_ASSERT | ICR_STARTUP | SIPI_VECTOR), %eax
    call send_ipi

    /* Wait until every AP the MADT announced checked in, or the deadline passes. */
    mov madt_cpus, %ebx
    dec %ebx                                /* APs expected; -1 (never met) without a MADT */
    mov $AP_WAIT_TICKS, %eax
    call tsc_deadline
1:  mov AP_COUNTER, %eax
    cmp %ebx, %eax
    je 2f
    call tsc_passed
    jnc 1b
    jmp 3f
    /* All expected APs are in; give any CPU the MADT did not mention a moment to show up. */
2:  mov $AP_GRACE_TICKS, %eax
    call tsc_delay

3:  mov $msg_cpus, %esi
    call serial_puts
    mov AP_COUNTER, %eax
    inc %eax
    call serial_putdec
    mov $msg_newline, %esi
    call serial_puts

    mov $msg_poweroff, %esi
    call serial_puts
    jmp acpi_poweroff

/* Write %eax to the ICR (destination by shorthand) and wait for delivery. Clobbers %ecx. */
send_ipi:
    movl $0, LAPIC_BASE + LAPIC_ICR_HIGH
    mov %eax, LAPIC_BASE + LAPIC_ICR_LOW
    mov $100000, %ecx
1:  testl $ICR_DELIVERY_PENDING, LAPIC_BASE + LAPIC_ICR_LOW
    jz 2f
    dec %ecx
    jnz 1b
2:  ret

/* Set the deadline to now + %eax TSC ticks. Clobbers %eax, %edx. */
tsc_deadline:
    mov %eax, deadline
    rdtsc
    add %eax, deadline
    adc $0, %edx
    mov %edx, deadline + 4
    ret

/* CF set once the deadline has passed. Clobbers %eax, %edx. */
tsc_passed:
    rdtsc
    sub deadline, %eax
    sbb deadline + 4, %edx
    cmc                                     /* borrow means "before the deadline" */
    ret

/* Busy-wait %eax TSC ticks. Clobbers %eax, %edx. */
tsc_delay:
    call tsc_deadline
1:  call tsc_passed
    jnc 1b
    ret

/*
 * Returns the RSDP address in %eax, or 0. Prefers hvm_start_info.rsdp_paddr (version >= 1),
 * else scans the BIOS area. Both candidates must carry the signature and a valid checksum.
 */
find_rsdp:
    cmpl $HVM_START_MAGIC, (%ebp)
    jne 1f
    cmpl $1, 4(%ebp)
    jb 1f
    cmpl $0, 36(%ebp)                       /* rsdp_paddr high half */
    jne 1f
    mov 32(%ebp), %eax
    test %eax, %eax
    jz 1f
    call check_rsdp
    test %eax, %eax
    jnz 3f
1:  mov $0xe0000, %eax
2:  push %eax
    call check_rsdp
    pop %ecx
    test %eax, %eax
    jnz 3f
    lea 16(%ecx), %eax
    cmp $0x100000, %eax
    jb 2b
    xor %eax, %eax
3:  ret

/* %eax = candidate; returns it if it is a valid RSDP, else 0. Clobbers %ecx, %edx, %esi. */
check_rsdp:
    cmpl $SIG_RSD, (%eax)
    jne 2f
    cmpl $SIG_PTR, 4(%eax)
    jne 2f
    mov %eax, %esi
    mov $20, %ecx                           /* ACPI 1.0 checksum covers the first 20 bytes */
    call checksum
    test %dl, %dl
    jnz 2f
    mov %esi, %eax
    ret
2:  xor %eax, %eax
    ret

/* Sum %ecx bytes at %esi into %dl (0 means valid). Preserves %esi; clobbers %ecx, %edx. */
checksum:
    push %esi
    xor %edx, %edx
1:  add (%esi), %dl
    inc %esi
    dec %ecx
    jnz 1b
    pop %esi
    ret

/* %eax = RSDP; returns the MADT address in %eax or 0. Clobbers %ebx-%edi. */
find_madt:
    mov $4, %edi                            /* entry size: RSDT */
    mov 16(%eax), %ebx                      /* RsdtAddress */
    cmpb $2, 15(%eax)                       /* Revision */
    jb 1f
    cmpl $0, 28(%eax)                       /* XsdtAddress high half */
    jne 1f
    mov 24(%eax), %ecx                      /* XsdtAddress */
    test %ecx, %ecx
    jz 1f
    mov %ecx, %ebx
    mov $8, %edi
1:  test %ebx, %ebx
    jz 4f
    mov 4(%ebx), %ecx                       /* Length */
    lea (%ebx, %ecx), %edx                  /* end of the entry array */
    lea 36(%ebx), %esi                      /* first entry */
2:  lea (%esi, %edi), %ecx
    cmp %edx, %ecx
    ja 4f
    mov (%esi), %eax
    cmp $8, %edi
    jne 3f
    cmpl $0, 4(%esi)                        /* tables above 4 GiB are out of reach */
    jne 5f
3:  test %eax, %eax
    jz 5f
    cmpl $SIG_APIC, (%eax)
    je 6f
5:  add %edi, %esi
    jmp 2b
4:  xor %eax, %eax
6:  ret

/* %eax = MADT; returns the number of enabled (x2)APIC entries. Clobbers %ebx-%esi. */
count_madt_cpus:
    mov %eax, %ebx
    mov %eax, %esi
    mov 4(%ebx), %ecx
    call checksum
    test %dl, %dl
    jz 1f
    mov $msg_madt_checksum, %esi
    call serial_puts
1:  mov 4(%ebx), %edx
    add %ebx, %edx                          /* end */
    lea 44(%ebx), %esi                      /* first interrupt controller structure */
    xor %eax, %eax
2:  lea 2(%esi), %ecx
    cmp %edx, %ecx
    ja 5f
    movzbl 1(%esi), %ecx                    /* Length */
    cmp $2, %ecx
    jb 5f                                   /* malformed; stop rather than loop forever */
    cmpb $0, (%esi)                         /* Processor Local APIC */
    jne 3f
    testl $1, 4(%esi)                       /* Enabled */
    jz 4f
    inc %eax
    jmp 4f
3:  cmpb $9, (%esi)                         /* Processor Local x2APIC */
    jne 4f
    testl $1, 8(%esi)
    jz 4f
    inc %eax
4:  add %ecx, %esi
    jmp 2b
5:  ret

    SERIAL_ROUTINES

/*
 * Real-mode AP trampoline, copied to AP_TRAMPOLINE_ADDR; the SIPI starts APs at
 * CS = SIPI_VECTOR << 8, IP = 0, so data is addressed relative to CS.
 */
    .code16
ap_trampoline:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lock incl %ds:(ap_counter - ap_trampoline)
1:  hlt
    jmp 1b
    .balign 4
ap_counter:
    .long 0
ap_trampoline_end:
    .code32


    PVH_NOTE _start

    .section .bss
    .balign 8
deadline:   .skip 8
madt_cpus:  .skip 4

    .section .rodata
msg_banner:        .asciz "sbx-test-guest: smp\n"
msg_no_rsdp:       .asciz "sbx-test-guest: error no RSDP\n"
msg_no_madt:       .asciz "sbx-test-guest: error no MADT\n"
msg_madt_checksum: .asciz "sbx-test-guest: error bad MADT checksum\n"
msg_madt_cpus:     .asciz "sbx-test-guest: madt-cpus="
msg_cpus:          .asciz "sbx-test-guest: cpus="
msg_newline:       .asciz "\n"
msg_poweroff:      .asciz "sbx-test-guest: poweroff\n"
