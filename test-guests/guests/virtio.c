/*
 * virtio: a minimal polling driver for virtio-mmio (version 2 register layout, split queues).
 *
 * Probes VIRTIO_MMIO_COUNT windows from VIRTIO_MMIO_BASE, then
 *   - virtio-blk (device id 2): reads the capacity, reads sector 0, writes "written-by-guest"
 *     (zero padded) to sector 1 unless the device is read-only, reads sector 1 back, flushes
 *     when VIRTIO_BLK_F_FLUSH is offered;
 *   - virtio-rng (device id 4): fetches 16 bytes of entropy.
 * Every request is completed by polling the used ring with a TSC deadline; no interrupts.
 * The exact output is documented in src/lib.rs.
 */
#include "rt.h"
#include "virtio_mmio.h"

/* Request deadline in TSC ticks (about 2 s at 2.6 GHz); the TSC is not slowed by kvm_pvm. */
#define REQUEST_TIMEOUT_TICKS 5000000000ULL
#define RESET_POLL_LIMIT 1000

#define DEVICE_ID_BLOCK 2
#define DEVICE_ID_RNG 4

#define BLK_F_RO (1ULL << 5)
#define BLK_F_FLUSH (1ULL << 9)

#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_S_OK 0
#define SECTOR_SIZE 512

struct device {
    uintptr_t base;
    struct virtq *vq;
    uint16_t size;          /* negotiated queue size */
    uint16_t last_used;     /* used->idx we have consumed up to */
    uint16_t avail_idx;     /* our copy of avail->idx */
    uint64_t features;      /* accepted features */
};

struct blk_req_header {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

static struct virtq blk_vq __attribute__((aligned(4096)));
static struct virtq rng_vq __attribute__((aligned(4096)));
static struct blk_req_header blk_header;
static uint8_t blk_data[SECTOR_SIZE] __attribute__((aligned(16)));
static volatile uint8_t blk_status;
static uint8_t rng_buf[16];
static unsigned errors;

static const char blk_write_text[] = "written-by-guest";

static void error(const char *what)
{
    serial_puts("virtio: error ");
    serial_puts(what);
    serial_putc('\n');
    errors++;
}

static uint32_t reg_read(const struct device *dev, uint32_t reg)
{
    return mmio_read32(dev->base + reg);
}

static void reg_write(const struct device *dev, uint32_t reg, uint32_t value)
{
    mmio_write32(dev->base + reg, value);
}

static void set_status(const struct device *dev, uint32_t bits)
{
    reg_write(dev, REG_STATUS, reg_read(dev, REG_STATUS) | bits);
}

/*
 * Device initialisation (virtio 1.x, 3.1.1) up to and including queue 0; DRIVER_OK is left to
 * the caller. `wanted` are the optional features to accept when offered; VERSION_1 is required.
 * Returns 0 on success.
 */
static int device_init(struct device *dev, struct virtq *vq, uint64_t wanted, const char *name)
{
    reg_write(dev, REG_STATUS, 0);
    for (int i = 0; reg_read(dev, REG_STATUS) != 0; i++) {
        if (i == RESET_POLL_LIMIT) {
            error("device reset did not complete");
            return -1;
        }
    }
    set_status(dev, STATUS_ACKNOWLEDGE);
    set_status(dev, STATUS_DRIVER);

    reg_write(dev, REG_DEVICE_FEATURES_SEL, 0);
    uint64_t offered = reg_read(dev, REG_DEVICE_FEATURES);
    reg_write(dev, REG_DEVICE_FEATURES_SEL, 1);
    offered |= (uint64_t)reg_read(dev, REG_DEVICE_FEATURES) << 32;
    serial_puts(name);
    serial_puts(": features=");
    serial_puthex(offered);
    serial_putc('\n');
    if (!(offered & F_VERSION_1)) {
        error("VIRTIO_F_VERSION_1 not offered");
        set_status(dev, STATUS_FAILED);
        return -1;
    }

    dev->features = offered & (F_VERSION_1 | wanted);
    reg_write(dev, REG_DRIVER_FEATURES_SEL, 0);
    reg_write(dev, REG_DRIVER_FEATURES, (uint32_t)dev->features);
    reg_write(dev, REG_DRIVER_FEATURES_SEL, 1);
    reg_write(dev, REG_DRIVER_FEATURES, (uint32_t)(dev->features >> 32));
    set_status(dev, STATUS_FEATURES_OK);
    if (!(reg_read(dev, REG_STATUS) & STATUS_FEATURES_OK)) {
        error("FEATURES_OK rejected");
        set_status(dev, STATUS_FAILED);
        return -1;
    }

    reg_write(dev, REG_QUEUE_SEL, 0);
    if (reg_read(dev, REG_QUEUE_READY) != 0) {
        error("queue 0 already ready");
        set_status(dev, STATUS_FAILED);
        return -1;
    }
    uint32_t max = reg_read(dev, REG_QUEUE_NUM_MAX);
    if (max == 0) {
        error("queue 0 not available");
        set_status(dev, STATUS_FAILED);
        return -1;
    }
    dev->vq = vq;
    dev->size = max < QUEUE_SIZE ? (uint16_t)max : QUEUE_SIZE;
    dev->last_used = 0;
    dev->avail_idx = 0;
    vq->avail.flags = AVAIL_F_NO_INTERRUPT;
    reg_write(dev, REG_QUEUE_NUM, dev->size);
    uintptr_t desc = (uintptr_t)vq->desc;
    uintptr_t avail = (uintptr_t)&vq->avail;
    uintptr_t used = (uintptr_t)&vq->used;
    reg_write(dev, REG_QUEUE_DESC_LOW, (uint32_t)desc);
    reg_write(dev, REG_QUEUE_DESC_HIGH, (uint32_t)((uint64_t)desc >> 32));
    reg_write(dev, REG_QUEUE_DRIVER_LOW, (uint32_t)avail);
    reg_write(dev, REG_QUEUE_DRIVER_HIGH, (uint32_t)((uint64_t)avail >> 32));
    reg_write(dev, REG_QUEUE_DEVICE_LOW, (uint32_t)used);
    reg_write(dev, REG_QUEUE_DEVICE_HIGH, (uint32_t)((uint64_t)used >> 32));
    reg_write(dev, REG_QUEUE_READY, 1);
    return 0;
}

static void desc_set(struct device *dev, uint16_t i, const volatile void *addr, uint32_t len,
                     uint16_t flags)
{
    volatile struct virtq_desc *d = &dev->vq->desc[i];
    d->addr = (uint64_t)(uintptr_t)addr;
    d->len = len;
    d->flags = flags;
    d->next = (flags & DESC_F_NEXT) ? (uint16_t)(i + 1) : 0;
}

/*
 * Publishes the chain starting at descriptor 0, notifies queue 0 and polls the used ring.
 * Returns the number of bytes the device wrote, or -1 on timeout / a bogus used element.
 */
static int64_t submit_and_wait(struct device *dev, const char *what)
{
    volatile struct virtq_avail *avail = &dev->vq->avail;
    volatile struct virtq_used *used = &dev->vq->used;

    avail->ring[dev->avail_idx % dev->size] = 0;
    barrier();
    dev->avail_idx++;
    avail->idx = dev->avail_idx;
    barrier();
    reg_write(dev, REG_QUEUE_NOTIFY, 0);

    uint64_t deadline = rdtsc() + REQUEST_TIMEOUT_TICKS;
    while (used->idx == dev->last_used) {
        if (rdtsc() > deadline) {
            serial_puts("virtio: error timeout waiting for ");
            serial_puts(what);
            serial_putc('\n');
            errors++;
            return -1;
        }
    }
    barrier();
    volatile struct virtq_used_elem *elem = &used->ring[dev->last_used % dev->size];
    uint32_t id = elem->id;
    uint32_t len = elem->len;
    dev->last_used++;
    if (id != 0) {
        serial_puts("virtio: error used element names descriptor ");
        serial_putdec(id);
        serial_puts(" for ");
        serial_puts(what);
        serial_putc('\n');
        errors++;
        return -1;
    }
    return len;
}

/* One virtio-blk request: header, optional 512-byte data buffer, status. Returns 0 on success. */
static int blk_request(struct device *dev, uint32_t type, uint64_t sector, const char *what)
{
    blk_header.type = type;
    blk_header.reserved = 0;
    blk_header.sector = sector;
    blk_status = 0xff;

    desc_set(dev, 0, &blk_header, sizeof(blk_header), DESC_F_NEXT);
    uint16_t status_desc = 1;
    if (type == BLK_T_IN || type == BLK_T_OUT) {
        desc_set(dev, 1, blk_data, SECTOR_SIZE,
                 DESC_F_NEXT | (type == BLK_T_IN ? DESC_F_WRITE : 0));
        status_desc = 2;
    }
    desc_set(dev, status_desc, &blk_status, 1, DESC_F_WRITE);

    if (submit_and_wait(dev, what) < 0)
        return -1;
    if (blk_status != BLK_S_OK) {
        serial_puts("virtio: error ");
        serial_puts(what);
        serial_puts(" status=");
        serial_putdec(blk_status);
        serial_putc('\n');
        errors++;
        return -1;
    }
    return 0;
}

/* Prints the first n bytes of the data buffer as text, '.' for anything unprintable. */
static void put_text(const uint8_t *p, int n)
{
    for (int i = 0; i < n; i++)
        serial_putc(p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '.');
}

static uint64_t blk_capacity(const struct device *dev)
{
    uint32_t gen, lo, hi;
    do {
        gen = reg_read(dev, REG_CONFIG_GENERATION);
        lo = reg_read(dev, REG_CONFIG);
        hi = reg_read(dev, REG_CONFIG + 4);
    } while (gen != reg_read(dev, REG_CONFIG_GENERATION));
    return ((uint64_t)hi << 32) | lo;
}

static void run_blk(struct device *dev)
{
    if (device_init(dev, &blk_vq, BLK_F_FLUSH | BLK_F_RO, "blk") != 0)
        return;
    set_status(dev, STATUS_DRIVER_OK);

    uint64_t capacity = blk_capacity(dev);
    if (blk_request(dev, BLK_T_IN, 0, "read sector0") != 0)
        return;
    serial_puts("blk: capacity=");
    serial_putdec(capacity);
    serial_puts(" sector0=");
    put_text(blk_data, 16);
    serial_putc('\n');

    if (dev->features & BLK_F_RO) {
        serial_puts("blk: read-only, no write\n");
    } else {
        memset(blk_data, 0, SECTOR_SIZE);
        memcpy(blk_data, blk_write_text, sizeof(blk_write_text) - 1);
        if (blk_request(dev, BLK_T_OUT, 1, "write sector1") != 0)
            return;
        serial_puts("blk: wrote sector1=");
        serial_puts(blk_write_text);
        serial_putc('\n');
    }

    memset(blk_data, 0, SECTOR_SIZE);
    if (blk_request(dev, BLK_T_IN, 1, "read sector1") != 0)
        return;
    serial_puts("blk: sector1=");
    put_text(blk_data, 16);
    serial_putc('\n');

    if (dev->features & BLK_F_FLUSH) {
        if (blk_request(dev, BLK_T_FLUSH, 0, "flush") != 0)
            return;
        serial_puts("blk: flush ok\n");
    } else {
        serial_puts("blk: flush not offered\n");
    }
}

static void run_rng(struct device *dev)
{
    if (device_init(dev, &rng_vq, 0, "rng") != 0)
        return;
    set_status(dev, STATUS_DRIVER_OK);

    /* The device may return fewer bytes than asked for; ask again for the rest. */
    uint32_t have = 0;
    for (int attempt = 0; have < sizeof(rng_buf) && attempt < 8; attempt++) {
        desc_set(dev, 0, &rng_buf[have], sizeof(rng_buf) - have, DESC_F_WRITE);
        int64_t got = submit_and_wait(dev, "entropy");
        if (got < 0)
            return;
        if ((uint64_t)got > sizeof(rng_buf) - have) {
            error("rng used length larger than the buffer");
            return;
        }
        have += (uint32_t)got;
    }
    if (have < sizeof(rng_buf)) {
        error("rng returned too few bytes");
        return;
    }
    uint8_t any = 0;
    serial_puts("rng: bytes=");
    for (uint32_t i = 0; i < sizeof(rng_buf); i++) {
        serial_puthex_byte(rng_buf[i]);
        any |= rng_buf[i];
    }
    serial_putc('\n');
    if (!any)
        error("rng returned only zeros");
}

__attribute__((noreturn)) void guest_main(void)
{
    struct device blk = {0}, rng = {0};

    serial_puts("sbx-test-guest: virtio\n");
    for (int i = 0; i < VIRTIO_MMIO_COUNT && !(blk.base && rng.base); i++) {
        uintptr_t base = VIRTIO_MMIO_BASE + (uintptr_t)i * VIRTIO_MMIO_STRIDE;
        uint32_t magic = mmio_read32(base + REG_MAGIC);
        if (magic == 0)
            continue;
        if (magic != VIRTIO_MAGIC) {
            serial_puts("virtio: error bad magic ");
            serial_puthex(magic);
            serial_puts(" in slot ");
            serial_putdec(i);
            serial_putc('\n');
            errors++;
            continue;
        }
        uint32_t id = mmio_read32(base + REG_DEVICE_ID);
        if (id == 0)
            continue; /* a transport without a device behind it */
        uint32_t version = mmio_read32(base + REG_VERSION);
        serial_puts("virtio: slot ");
        serial_putdec(i);
        serial_puts(" id=");
        serial_putdec(id);
        serial_puts(" version=");
        serial_putdec(version);
        serial_putc('\n');
        if (version != 2) {
            error("only the version 2 (virtio 1.x) register layout is supported");
            continue;
        }
        if (id == DEVICE_ID_BLOCK && !blk.base)
            blk.base = base;
        else if (id == DEVICE_ID_RNG && !rng.base)
            rng.base = base;
    }

    if (blk.base)
        run_blk(&blk);
    else
        error("no virtio-blk device");
    if (rng.base)
        run_rng(&rng);
    else
        error("no virtio-rng device");

    serial_puts("virtio: done errors=");
    serial_putdec(errors);
    serial_putc('\n');
    acpi_poweroff();
}
