/*
 * net: a minimal polling virtio-net driver (virtio-mmio version 2 registers, two split queues
 * of 8, no interrupts) for sbx-vmm's net device: reads the MAC and link status, posts receive
 * buffers, sends one broadcast frame (EtherType 0x88b5, payload "ping from guest") and prints
 * the first frame it receives back. The exact output is documented in src/lib.rs.
 */
#include "rt.h"
#include "virtio_mmio.h"

/* About 4 s for the answer at 2.6 GHz; the TSC is not slowed by kvm_pvm. */
#define FRAME_TIMEOUT_TICKS 10000000000ULL
#define RESET_POLL_LIMIT 1000

#define DEVICE_ID_NET 1
#define NET_F_MAC (1ULL << 5)
#define NET_F_STATUS (1ULL << 16)

#define NUM_QUEUES 2
#define RXQ 0
#define TXQ 1

#define HDR_LEN 12
#define ETH_HLEN 14
#define ETHERTYPE 0x88b5
#define RX_BUF 1536

struct queue {
    struct virtq *vq;
    uint16_t size;
    uint16_t last_used;
    uint16_t avail_idx;
};

static struct virtq vqs[NUM_QUEUES] __attribute__((aligned(4096)));
static struct queue queues[NUM_QUEUES];
static uint8_t rx_bufs[QUEUE_SIZE][RX_BUF] __attribute__((aligned(16)));
static uint8_t tx_hdr[HDR_LEN] __attribute__((aligned(16)));
static uint8_t tx_frame[64] __attribute__((aligned(16)));
static uint8_t mac[6];
static uint16_t link_status;
static uintptr_t base;
static unsigned errors;

static const char ping[] = "ping from guest";

static void error(const char *what)
{
    serial_puts("net: error ");
    serial_puts(what);
    serial_putc('\n');
    errors++;
}

static uint32_t reg_read(uint32_t reg)
{
    return mmio_read32(base + reg);
}

static void reg_write(uint32_t reg, uint32_t value)
{
    mmio_write32(base + reg, value);
}

static void set_status(uint32_t bits)
{
    reg_write(REG_STATUS, reg_read(REG_STATUS) | bits);
}

static void put_mac(const uint8_t *m)
{
    for (int i = 0; i < 6; i++) {
        if (i)
            serial_putc(':');
        serial_puthex_byte(m[i]);
    }
}

static int device_init(void)
{
    reg_write(REG_STATUS, 0);
    for (int i = 0; reg_read(REG_STATUS) != 0; i++) {
        if (i == RESET_POLL_LIMIT) {
            error("device reset did not complete");
            return -1;
        }
    }
    set_status(STATUS_ACKNOWLEDGE);
    set_status(STATUS_DRIVER);
    reg_write(REG_DEVICE_FEATURES_SEL, 0);
    uint64_t offered = reg_read(REG_DEVICE_FEATURES);
    reg_write(REG_DEVICE_FEATURES_SEL, 1);
    offered |= (uint64_t)reg_read(REG_DEVICE_FEATURES) << 32;
    uint64_t need = F_VERSION_1 | NET_F_MAC | NET_F_STATUS;
    if ((offered & need) != need) {
        error("VERSION_1, MAC or STATUS not offered");
        return -1;
    }
    reg_write(REG_DRIVER_FEATURES_SEL, 0);
    reg_write(REG_DRIVER_FEATURES, (uint32_t)need);
    reg_write(REG_DRIVER_FEATURES_SEL, 1);
    reg_write(REG_DRIVER_FEATURES, (uint32_t)(need >> 32));
    set_status(STATUS_FEATURES_OK);
    if (!(reg_read(REG_STATUS) & STATUS_FEATURES_OK)) {
        error("FEATURES_OK rejected");
        return -1;
    }
    for (uint32_t i = 0; i < NUM_QUEUES; i++) {
        reg_write(REG_QUEUE_SEL, i);
        uint32_t max = reg_read(REG_QUEUE_NUM_MAX);
        if (max == 0) {
            error("queue not available");
            return -1;
        }
        struct queue *q = &queues[i];
        struct virtq *vq = &vqs[i];
        q->vq = vq;
        q->size = max < QUEUE_SIZE ? (uint16_t)max : QUEUE_SIZE;
        vq->avail.flags = AVAIL_F_NO_INTERRUPT;
        reg_write(REG_QUEUE_NUM, q->size);
        uint64_t desc = (uintptr_t)vq->desc;
        uint64_t avail = (uintptr_t)&vq->avail;
        uint64_t used = (uintptr_t)&vq->used;
        reg_write(REG_QUEUE_DESC_LOW, (uint32_t)desc);
        reg_write(REG_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
        reg_write(REG_QUEUE_DRIVER_LOW, (uint32_t)avail);
        reg_write(REG_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
        reg_write(REG_QUEUE_DEVICE_LOW, (uint32_t)used);
        reg_write(REG_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
        reg_write(REG_QUEUE_READY, 1);
    }
    uint32_t lo = reg_read(REG_CONFIG);
    uint32_t hi = reg_read(REG_CONFIG + 4);
    for (int i = 0; i < 4; i++)
        mac[i] = (uint8_t)(lo >> (8 * i));
    mac[4] = (uint8_t)hi;
    mac[5] = (uint8_t)(hi >> 8);
    link_status = (uint16_t)(hi >> 16);
    set_status(STATUS_DRIVER_OK);
    return 0;
}

static void publish(struct queue *q, uint16_t head, uint32_t index)
{
    q->vq->avail.ring[q->avail_idx % q->size] = head;
    barrier();
    q->avail_idx++;
    *(volatile uint16_t *)&q->vq->avail.idx = q->avail_idx;
    barrier();
    reg_write(REG_QUEUE_NOTIFY, index);
}

static void post_rx(uint16_t i)
{
    volatile struct virtq_desc *d = &queues[RXQ].vq->desc[i];
    d->addr = (uint64_t)(uintptr_t)rx_bufs[i];
    d->len = RX_BUF;
    d->flags = DESC_F_WRITE;
    d->next = 0;
    publish(&queues[RXQ], i, RXQ);
}

/* Wait for the next used element of `q`; returns its id or -1 on timeout. */
static int wait_used(struct queue *q, uint64_t ticks, uint32_t *len)
{
    volatile struct virtq_used *used = &q->vq->used;
    uint64_t deadline = rdtsc() + ticks;
    while (used->idx == q->last_used) {
        if (rdtsc() > deadline)
            return -1;
    }
    barrier();
    volatile struct virtq_used_elem *e = &used->ring[q->last_used % q->size];
    int id = (int)e->id;
    *len = e->len;
    q->last_used++;
    return id;
}

/* One broadcast frame: the header in descriptor 0, the frame in descriptor 1. */
static void send_ping(void)
{
    memset(tx_hdr, 0, sizeof(tx_hdr));
    memset(tx_frame, 0xff, 6);
    memcpy(tx_frame + 6, mac, 6);
    tx_frame[12] = ETHERTYPE >> 8;
    tx_frame[13] = ETHERTYPE & 0xff;
    memcpy(tx_frame + ETH_HLEN, ping, sizeof(ping) - 1);
    uint32_t len = ETH_HLEN + sizeof(ping) - 1;
    volatile struct virtq_desc *d = queues[TXQ].vq->desc;
    d[0].addr = (uint64_t)(uintptr_t)tx_hdr;
    d[0].len = HDR_LEN;
    d[0].flags = DESC_F_NEXT;
    d[0].next = 1;
    d[1].addr = (uint64_t)(uintptr_t)tx_frame;
    d[1].len = len;
    d[1].flags = 0;
    d[1].next = 0;
    publish(&queues[TXQ], 0, TXQ);
    uint32_t used_len;
    if (wait_used(&queues[TXQ], FRAME_TIMEOUT_TICKS, &used_len) != 0) {
        error("tx not completed");
        return;
    }
    serial_puts("net: sent ");
    serial_putdec(len);
    serial_puts(" bytes\n");
}

static void receive_one(void)
{
    uint32_t len;
    int id = wait_used(&queues[RXQ], FRAME_TIMEOUT_TICKS, &len);
    if (id < 0) {
        error("no frame received");
        return;
    }
    if (id >= QUEUE_SIZE || len < HDR_LEN + ETH_HLEN || len > RX_BUF) {
        error("bad rx used element");
        return;
    }
    const uint8_t *b = rx_bufs[id];
    for (int i = 0; i < HDR_LEN; i++) {
        if (b[i] != (i == 10 ? 1 : 0)) {
            error("rx header is not zero with num_buffers=1");
            break;
        }
    }
    const uint8_t *f = b + HDR_LEN;
    int to_us = 1;
    for (int i = 0; i < 6; i++)
        to_us &= f[i] == mac[i];
    if (!to_us || f[12] != (ETHERTYPE >> 8) || f[13] != (ETHERTYPE & 0xff)) {
        error("unexpected frame");
        return;
    }
    serial_puts("net: got ");
    serial_putdec(len - HDR_LEN);
    serial_puts(" bytes from ");
    put_mac(f + 6);
    serial_puts(": ");
    for (uint32_t i = HDR_LEN + ETH_HLEN; i < len; i++) {
        char c = (char)b[i];
        serial_putc(c >= 0x20 && c < 0x7f ? c : '.');
    }
    serial_putc('\n');
}

__attribute__((noreturn)) void guest_main(void)
{
    serial_puts("sbx-test-guest: net\n");
    for (int i = 0; i < VIRTIO_MMIO_COUNT && !base; i++) {
        uintptr_t b = VIRTIO_MMIO_BASE + (uintptr_t)i * VIRTIO_MMIO_STRIDE;
        if (mmio_read32(b + REG_MAGIC) == VIRTIO_MAGIC && mmio_read32(b + REG_VERSION) == 2 &&
            mmio_read32(b + REG_DEVICE_ID) == DEVICE_ID_NET)
            base = b;
    }
    if (!base) {
        error("no virtio-net device");
    } else if (device_init() == 0) {
        serial_puts("net: mac=");
        put_mac(mac);
        serial_puts(" status=");
        serial_putdec(link_status);
        serial_putc('\n');
        send_ping();
        /* Buffers only after the ping: the answer must wait in the backend until then. */
        for (uint16_t i = 0; i < queues[RXQ].size; i++)
            post_rx(i);
        receive_one();
    } else {
        set_status(STATUS_FAILED);
    }
    serial_puts("net: done errors=");
    serial_putdec(errors);
    serial_putc('\n');
    acpi_poweroff();
}
