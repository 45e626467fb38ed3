/* Freestanding runtime of the C test guests: port I/O, MMIO, serial output, TSC, power. */
#ifndef SBX_RT_H
#define SBX_RT_H

#include <stdint.h>
#include <stddef.h>
#include "guest.h"

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

static inline uint32_t mmio_read32(uintptr_t addr)
{
    return *(volatile uint32_t *)addr;
}

static inline void mmio_write32(uintptr_t addr, uint32_t value)
{
    *(volatile uint32_t *)addr = value;
}

/* Full barrier: orders the ring writes before the notify and the used-ring reads after it. */
static inline void barrier(void)
{
    __asm__ volatile("mfence" : : : "memory");
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

void serial_putc(char c);
void serial_puts(const char *s);
void serial_putdec(uint64_t value);
void serial_puthex(uint64_t value);           /* "0x" followed by lowercase hex digits */
void serial_puthex_byte(uint8_t value);       /* exactly two lowercase hex digits */
__attribute__((noreturn)) void acpi_poweroff(void);

void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);

#endif /* SBX_RT_H */
