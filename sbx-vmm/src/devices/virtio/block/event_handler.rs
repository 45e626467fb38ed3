//! Running the block device on the VMM's event-manager thread.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::Block;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps<'_>) {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                tracing::error!(queue = i, error = ?e, "virtio-blk: cannot watch the queue eventfd");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps<'_>) {
        let queue = events.data() as usize;
        let Some(evt) = self.queue_evts.get(queue) else {
            tracing::warn!(queue, "virtio-blk: event for an unknown queue");
            return;
        };
        // Drain the counter first so that a kick racing with processing is not lost.
        let _ = evt.read();
        self.metrics.queue_events.inc();
        if !self.is_activated() {
            self.metrics.events_before_activation.inc();
            tracing::debug!("virtio-blk: queue notification before activation ignored");
            return;
        }
        self.process_queue();
    }
}
