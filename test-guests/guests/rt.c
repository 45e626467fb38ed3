/* Freestanding runtime of the C test guests (see rt.h). */
#include "rt.h"

void serial_putc(char c)
{
    for (int i = 0; i < LSR_POLL_LIMIT; i++) {
        if (inb(COM1_LSR) & LSR_THR_EMPTY)
            break;
    }
    outb(COM1_THR, (uint8_t)c);
}

void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

void serial_putdec(uint64_t value)
{
    char buf[21];
    int i = sizeof(buf) - 1;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    serial_puts(&buf[i]);
}

static const char hex_digits[] = "0123456789abcdef";

void serial_puthex(uint64_t value)
{
    int shift = 60;
    serial_puts("0x");
    while (shift > 0 && ((value >> shift) & 0xf) == 0)
        shift -= 4;
    for (; shift >= 0; shift -= 4)
        serial_putc(hex_digits[(value >> shift) & 0xf]);
}

void serial_puthex_byte(uint8_t value)
{
    serial_putc(hex_digits[value >> 4]);
    serial_putc(hex_digits[value & 0xf]);
}

void acpi_poweroff(void)
{
    serial_puts("sbx-test-guest: poweroff\n");
    outb(ACPI_SLEEP_CONTROL_PORT, ACPI_S5_VALUE);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* The compiler may emit calls to these even in freestanding code. */
void *memset(void *dst, int c, size_t n)
{
    volatile uint8_t *d = dst;
    while (n--)
        *d++ = (uint8_t)c;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    volatile uint8_t *d = dst;
    const uint8_t *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}
