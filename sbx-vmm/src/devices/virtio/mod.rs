//! virtio-mmio transport and devices.
