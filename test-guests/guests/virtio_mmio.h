/*
 * The virtio-mmio (version 2) register layout and split-virtqueue structures shared by the
 * polling driver guests (virtio.c, vsock.c). Virtio 1.x spec sections 2.7 and 4.2.2.
 */
#ifndef SBX_VIRTIO_MMIO_H
#define SBX_VIRTIO_MMIO_H

#include "rt.h"

#ifndef VIRTIO_MMIO_BASE
#define VIRTIO_MMIO_BASE 0xd0000000UL           /* sbx-vmm layout::VIRTIO_MMIO_START */
#endif
#ifndef VIRTIO_MMIO_STRIDE
#define VIRTIO_MMIO_STRIDE 0x1000UL             /* sbx-vmm layout::VIRTIO_MMIO_SIZE */
#endif
#ifndef VIRTIO_MMIO_COUNT
#define VIRTIO_MMIO_COUNT 8
#endif

#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_DEVICE_FEATURES 0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES 0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_STATUS 0x070
#define REG_QUEUE_DESC_LOW 0x080
#define REG_QUEUE_DESC_HIGH 0x084
#define REG_QUEUE_DRIVER_LOW 0x090
#define REG_QUEUE_DRIVER_HIGH 0x094
#define REG_QUEUE_DEVICE_LOW 0x0a0
#define REG_QUEUE_DEVICE_HIGH 0x0a4
#define REG_CONFIG_GENERATION 0x0fc
#define REG_CONFIG 0x100

#define VIRTIO_MAGIC 0x74726976                 /* "virt" */

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_FAILED 128

#define F_VERSION_1 (1ULL << 32)

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define AVAIL_F_NO_INTERRUPT 1

#define QUEUE_SIZE 8

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[QUEUE_SIZE];
    uint16_t used_event;
};

struct virtq_used_elem {
    uint32_t id;
    uint32_t len;
};

struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[QUEUE_SIZE];
    uint16_t avail_event;
};

/* One split queue in one page; the spec asks for 16/2/4 alignment of the three parts. */
struct virtq {
    struct virtq_desc desc[QUEUE_SIZE] __attribute__((aligned(16)));
    struct virtq_avail avail __attribute__((aligned(16)));
    struct virtq_used used __attribute__((aligned(16)));
} __attribute__((aligned(4096)));

#endif
