/*
 * vsock: a minimal polling virtio-vsock driver (virtio-mmio version 2 registers, three split
 * queues of 8, no interrupts) that runs two connections against sbx-vmm's vsock device:
 *
 *   1. host-initiated, to guest port 52: waits for the REQUEST, answers RESPONSE, replies
 *      "pong:" + each chunk of data the host sends, and when the host closes (SHUTDOWN)
 *      finishes with RST;
 *   2. guest-initiated, from guest port 1024 to host port 53: REQUEST, waits for RESPONSE,
 *      sends "hello from guest", prints the host's answer, shuts down both directions and
 *      waits for the device's RST.
 *
 * The exact output is documented in src/lib.rs.
 */
#include "rt.h"
#include "virtio_mmio.h"

/* About 2 s per packet, and about 10 s for the host to connect, at 2.6 GHz. */
#define PACKET_TIMEOUT_TICKS 5000000000ULL
#define CONNECT_TIMEOUT_TICKS 25000000000ULL
#define RESET_POLL_LIMIT 1000

#define DEVICE_ID_VSOCK 19

#define NUM_QUEUES 3
#define RXQ 0
#define TXQ 1

#define HOST_CID 2
#define TYPE_STREAM 1
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define SHUTDOWN_BOTH 3

#define GUEST_LISTEN_PORT 52
#define GUEST_CONNECT_PORT 1024
#define HOST_PORT 53
#define BUF_ALLOC 65536
#define PKT_BUF 300

struct queue {
    struct virtq *vq;
    uint16_t size;
    uint16_t last_used;
    uint16_t avail_idx;
};

/* struct virtio_vsock_hdr, little endian like the guest. */
struct hdr {
    uint64_t src_cid;
    uint64_t dst_cid;
    uint32_t src_port;
    uint32_t dst_port;
    uint32_t len;
    uint16_t type;
    uint16_t op;
    uint32_t flags;
    uint32_t buf_alloc;
    uint32_t fwd_cnt;
} __attribute__((packed));

_Static_assert(sizeof(struct hdr) == 44, "virtio_vsock_hdr is 44 bytes");

static struct virtq vqs[NUM_QUEUES] __attribute__((aligned(4096)));
static struct queue queues[NUM_QUEUES];
static uint8_t rx_bufs[QUEUE_SIZE][PKT_BUF] __attribute__((aligned(16)));
static uint8_t tx_buf[PKT_BUF] __attribute__((aligned(16)));
static uintptr_t base;
static uint64_t cid;
static uint32_t fwd_cnt;
static unsigned errors;

static void error(const char *what)
{
    serial_puts("vsock: error ");
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
    reg_write(REG_DEVICE_FEATURES_SEL, 1);
    if (!(((uint64_t)reg_read(REG_DEVICE_FEATURES) << 32) & F_VERSION_1)) {
        error("VIRTIO_F_VERSION_1 not offered");
        return -1;
    }
    reg_write(REG_DRIVER_FEATURES_SEL, 0);
    reg_write(REG_DRIVER_FEATURES, 0);
    reg_write(REG_DRIVER_FEATURES_SEL, 1);
    reg_write(REG_DRIVER_FEATURES, (uint32_t)(F_VERSION_1 >> 32));
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
    cid = reg_read(REG_CONFIG) | ((uint64_t)reg_read(REG_CONFIG + 4) << 32);
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
    d->len = PKT_BUF;
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

static int send_pkt(uint32_t src_port, uint32_t dst_port, uint16_t op, uint32_t flags,
                    const char *data, uint32_t len)
{
    struct hdr h = {
        .src_cid = cid,
        .dst_cid = HOST_CID,
        .src_port = src_port,
        .dst_port = dst_port,
        .len = len,
        .type = TYPE_STREAM,
        .op = op,
        .flags = flags,
        .buf_alloc = BUF_ALLOC,
        .fwd_cnt = fwd_cnt,
    };
    memcpy(tx_buf, &h, sizeof(h));
    memcpy(tx_buf + sizeof(h), data, len);
    volatile struct virtq_desc *d = &queues[TXQ].vq->desc[0];
    d->addr = (uint64_t)(uintptr_t)tx_buf;
    d->len = (uint32_t)sizeof(h) + len;
    d->flags = 0;
    d->next = 0;
    publish(&queues[TXQ], 0, TXQ);
    uint32_t used_len;
    if (wait_used(&queues[TXQ], PACKET_TIMEOUT_TICKS, &used_len) != 0) {
        error("tx not completed");
        return -1;
    }
    return 0;
}

/* Receive one packet; its payload (NUL-terminated) goes to `data`. */
static int recv_pkt(struct hdr *h, char *data, uint32_t max, uint64_t ticks)
{
    uint32_t len;
    int id = wait_used(&queues[RXQ], ticks, &len);
    if (id < 0)
        return -1;
    if (id >= QUEUE_SIZE || len < sizeof(*h) || len > PKT_BUF) {
        error("bad rx used element");
        return -1;
    }
    memcpy(h, rx_bufs[id], sizeof(*h));
    if (h->len >= max || sizeof(*h) + h->len != len || h->type != TYPE_STREAM ||
        h->src_cid != HOST_CID || h->dst_cid != cid) {
        error("bad rx packet");
        post_rx((uint16_t)id);
        return -1;
    }
    memcpy(data, rx_bufs[id] + sizeof(*h), h->len);
    data[h->len] = 0;
    post_rx((uint16_t)id);
    return 0;
}

static void host_initiated(void)
{
    struct hdr h;
    char data[PKT_BUF];
    if (recv_pkt(&h, data, sizeof(data), CONNECT_TIMEOUT_TICKS) != 0) {
        error("no connection from the host");
        return;
    }
    if (h.op != OP_REQUEST || h.dst_port != GUEST_LISTEN_PORT) {
        error("expected a REQUEST to port 52");
        return;
    }
    uint32_t host_port = h.src_port;
    fwd_cnt = 0;
    if (send_pkt(GUEST_LISTEN_PORT, host_port, OP_RESPONSE, 0, 0, 0) != 0)
        return;
    serial_puts("vsock: accepted host port=");
    serial_putdec(host_port);
    serial_putc('\n');
    for (;;) {
        if (recv_pkt(&h, data, sizeof(data), PACKET_TIMEOUT_TICKS) != 0) {
            error("host connection stalled");
            return;
        }
        if (h.src_port != host_port || h.dst_port != GUEST_LISTEN_PORT) {
            error("packet for another connection");
            return;
        }
        switch (h.op) {
        case OP_RW: {
            fwd_cnt += h.len;
            serial_puts("vsock: got ");
            serial_puts(data);
            serial_putc('\n');
            char reply[PKT_BUF];
            memcpy(reply, "pong:", 5);
            memcpy(reply + 5, data, h.len);
            if (send_pkt(GUEST_LISTEN_PORT, host_port, OP_RW, 0, reply, 5 + h.len) != 0)
                return;
            break;
        }
        case OP_CREDIT_UPDATE:
            break;
        case OP_SHUTDOWN:
            serial_puts("vsock: host closed\n");
            send_pkt(GUEST_LISTEN_PORT, host_port, OP_RST, 0, 0, 0);
            return;
        default:
            error("unexpected op on the host connection");
            return;
        }
    }
}

static void guest_initiated(void)
{
    static const char hello[] = "hello from guest";
    struct hdr h;
    char data[PKT_BUF];
    fwd_cnt = 0;
    if (send_pkt(GUEST_CONNECT_PORT, HOST_PORT, OP_REQUEST, 0, 0, 0) != 0)
        return;
    if (recv_pkt(&h, data, sizeof(data), PACKET_TIMEOUT_TICKS) != 0 || h.op != OP_RESPONSE ||
        h.src_port != HOST_PORT || h.dst_port != GUEST_CONNECT_PORT) {
        error("connect to host port 53 failed");
        return;
    }
    serial_puts("vsock: connected to host port 53\n");
    if (send_pkt(GUEST_CONNECT_PORT, HOST_PORT, OP_RW, 0, hello, sizeof(hello) - 1) != 0)
        return;
    for (;;) {
        if (recv_pkt(&h, data, sizeof(data), PACKET_TIMEOUT_TICKS) != 0) {
            error("no answer from host port 53");
            return;
        }
        if (h.op == OP_RW) {
            fwd_cnt += h.len;
            serial_puts("vsock: got ");
            serial_puts(data);
            serial_putc('\n');
            break;
        }
        if (h.op != OP_CREDIT_UPDATE) {
            error("unexpected op from host port 53");
            return;
        }
    }
    if (send_pkt(GUEST_CONNECT_PORT, HOST_PORT, OP_SHUTDOWN, SHUTDOWN_BOTH, 0, 0) != 0)
        return;
    for (;;) {
        if (recv_pkt(&h, data, sizeof(data), PACKET_TIMEOUT_TICKS) != 0) {
            error("no RST after shutdown");
            return;
        }
        if (h.op == OP_RST)
            break;
        if (h.op != OP_CREDIT_UPDATE && h.op != OP_SHUTDOWN) {
            error("unexpected op while closing");
            return;
        }
    }
    serial_puts("vsock: closed\n");
}

__attribute__((noreturn)) void guest_main(void)
{
    serial_puts("sbx-test-guest: vsock\n");
    for (int i = 0; i < VIRTIO_MMIO_COUNT && !base; i++) {
        uintptr_t b = VIRTIO_MMIO_BASE + (uintptr_t)i * VIRTIO_MMIO_STRIDE;
        if (mmio_read32(b + REG_MAGIC) == VIRTIO_MAGIC && mmio_read32(b + REG_VERSION) == 2 &&
            mmio_read32(b + REG_DEVICE_ID) == DEVICE_ID_VSOCK)
            base = b;
    }
    if (!base) {
        error("no virtio-vsock device");
    } else if (device_init() == 0) {
        serial_puts("vsock: cid=");
        serial_putdec(cid);
        serial_putc('\n');
        for (uint16_t i = 0; i < queues[RXQ].size; i++)
            post_rx(i);
        host_initiated();
        guest_initiated();
    } else {
        set_status(STATUS_FAILED);
    }
    serial_puts("vsock: done errors=");
    serial_putdec(errors);
    serial_putc('\n');
    acpi_poweroff();
}
