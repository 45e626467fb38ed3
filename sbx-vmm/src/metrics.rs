//! Counters of guest behaviour the VMM tolerated instead of failing on.

use std::sync::atomic::{AtomicU64, Ordering};

/// VM-wide counters. Read them with [`VmMetrics::snapshot`].
#[derive(Debug, Default)]
pub struct VmMetrics {
    /// Port reads nobody answers (they read as all ones).
    pub unknown_pio_reads: AtomicU64,
    /// Port writes nobody answers (dropped).
    pub unknown_pio_writes: AtomicU64,
    /// MMIO reads outside any device or RAM (they read as zeros).
    pub unknown_mmio_reads: AtomicU64,
    /// MMIO writes outside any device or RAM (dropped).
    pub unknown_mmio_writes: AtomicU64,
    /// KVM exits the VMM has no handler for.
    pub unhandled_exits: AtomicU64,
    /// Bytes the guest wrote to the serial console.
    pub serial_bytes: AtomicU64,
}

/// A plain copy of [`VmMetrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmMetricsSnapshot {
    /// See [`VmMetrics::unknown_pio_reads`].
    pub unknown_pio_reads: u64,
    /// See [`VmMetrics::unknown_pio_writes`].
    pub unknown_pio_writes: u64,
    /// See [`VmMetrics::unknown_mmio_reads`].
    pub unknown_mmio_reads: u64,
    /// See [`VmMetrics::unknown_mmio_writes`].
    pub unknown_mmio_writes: u64,
    /// See [`VmMetrics::unhandled_exits`].
    pub unhandled_exits: u64,
    /// See [`VmMetrics::serial_bytes`].
    pub serial_bytes: u64,
}

impl VmMetrics {
    /// Current values.
    pub fn snapshot(&self) -> VmMetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VmMetricsSnapshot {
            unknown_pio_reads: r(&self.unknown_pio_reads),
            unknown_pio_writes: r(&self.unknown_pio_writes),
            unknown_mmio_reads: r(&self.unknown_mmio_reads),
            unknown_mmio_writes: r(&self.unknown_mmio_writes),
            unhandled_exits: r(&self.unhandled_exits),
            serial_bytes: r(&self.serial_bytes),
        }
    }
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
