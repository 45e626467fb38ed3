//! Running a queue: pop every available chain, complete it, decide whether to interrupt.

use virtio_queue::{DescriptorChain, Queue, QueueT};

use crate::memory::GuestMemory;

/// What one [`drain`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Chains taken from the available ring.
    pub consumed: usize,
    /// Chains that could not be put in the used ring (bad head index, unwritable ring).
    pub used_ring_errors: usize,
    /// Whether the driver wants an interrupt for what was used (event index / flags).
    pub notify: bool,
}

/// Pop every available chain, hand it to `complete` (which returns the used length) and put it
/// in the used ring. Guest notifications are suppressed while we work and re-enabled before we
/// stop, re-checking the ring so that a buffer added in between is not missed.
pub(crate) fn drain<F>(queue: &mut Queue, mem: &GuestMemory, mut complete: F) -> Drained
where
    F: FnMut(DescriptorChain<&GuestMemory>) -> u32,
{
    let mut out = Drained::default();
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            tracing::warn!(error = %e, "virtio: cannot disable queue notifications");
        }
        let mut popped = 0usize;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            popped += 1;
            let head = chain.head_index();
            let len = complete(chain);
            if let Err(e) = queue.add_used(mem, head, len) {
                out.used_ring_errors += 1;
                tracing::warn!(head, error = %e, "virtio: cannot update the used ring");
            }
        }
        out.consumed += popped;
        match queue.enable_notification(mem) {
            // More buffers arrived while notifications were off. If we popped nothing this
            // round the available index is bogus (pop refuses it): stop rather than spin.
            Ok(true) if popped > 0 => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "virtio: cannot enable queue notifications");
                break;
            }
        }
    }
    if out.consumed > 0 {
        out.notify = queue.needs_notification(mem).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "virtio: cannot read the used event index");
            true
        });
    }
    out
}
