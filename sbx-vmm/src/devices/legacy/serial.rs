//! The COM1 8250 UART (vm-superio) at 0x3f8, printing to a caller-supplied writer.

use std::io::Write;
use std::sync::Arc;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::BusDevice;
use crate::metrics::{inc, VmMetrics};

/// An interrupt line backed by an `EventFd` registered as a KVM irqfd.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Writer wrapper that counts bytes and flushes every write so the console is live.
struct CountingWriter {
    inner: Box<dyn Write + Send>,
    metrics: Arc<VmMetrics>,
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.metrics
            .serial_bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.flush()?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The serial console device.
pub struct SerialConsole {
    serial: Serial<EventFdTrigger, vm_superio::serial::NoEvents, CountingWriter>,
    metrics: Arc<VmMetrics>,
}

impl std::fmt::Debug for SerialConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialConsole").finish_non_exhaustive()
    }
}

impl SerialConsole {
    /// A UART raising `irq` and writing guest output to `out`.
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>, metrics: Arc<VmMetrics>) -> Self {
        let writer = CountingWriter {
            inner: out,
            metrics: metrics.clone(),
        };
        Self {
            serial: Serial::new(EventFdTrigger(irq), writer),
            metrics,
        }
    }

    /// Queue bytes for the guest to read (console input). Returns how many were accepted.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        self.serial.enqueue_raw_bytes(input).unwrap_or(0)
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset >= 8 {
            inc(&self.metrics.unknown_pio_reads);
            data.fill(0xff);
            return;
        }
        data[0] = self.serial.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset >= 8 {
            inc(&self.metrics.unknown_pio_writes);
            return;
        }
        if let Err(e) = self.serial.write(offset as u8, data[0]) {
            tracing::debug!(error = ?e, "serial console write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_reach_the_writer_and_bad_sizes_are_counted() {
        let sink = Sink::default();
        let metrics = Arc::new(VmMetrics::default());
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = SerialConsole::new(evt, Box::new(sink.clone()), metrics.clone());
        for b in b"hi" {
            s.write(0, &[*b]);
        }
        s.write(0, &[1, 2]);
        let mut d = [0u8; 1];
        s.read(5, &mut d);
        assert_ne!(d[0] & 0x20, 0, "THR empty");
        assert_eq!(&*sink.0.lock().unwrap(), b"hi");
        let snap = metrics.snapshot();
        assert_eq!((snap.serial_bytes, snap.unknown_pio_writes), (2, 1));
        assert_eq!(s.enqueue_input(b"x"), 1);
    }
}
