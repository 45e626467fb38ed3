//! Running the vsock device on the VMM's event-manager thread: its queue eventfds, a control
//! eventfd, the host listener and every host connection are watched by the same subscriber.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::{Vsock, CTL_TOKEN, LISTENER_TOKEN, TIMER_TOKEN, VSOCK_EVENT_QUEUE};
use super::muxer::FIRST_CONN_TOKEN;

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps<'_>) {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                tracing::error!(queue = i, error = ?e, "virtio-vsock: cannot watch the queue eventfd");
            }
        }
        if let Err(e) = ops.add(Events::with_data(&self.ctl_evt, CTL_TOKEN, EventSet::IN)) {
            tracing::error!(error = ?e, "virtio-vsock: cannot watch the control eventfd");
        }
        let listener = Events::with_data(&self.muxer.listener, LISTENER_TOKEN, EventSet::IN);
        if let Err(e) = ops.add(listener) {
            tracing::error!(error = ?e, "virtio-vsock: cannot watch the host socket");
        }
        let timer = Events::with_data(&self.muxer.timer, TIMER_TOKEN, EventSet::IN);
        if let Err(e) = ops.add(timer) {
            tracing::error!(error = ?e, "virtio-vsock: cannot watch the connection timer");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps<'_>) {
        let token = events.data();
        match token {
            t if (t as usize) < self.queue_evts.len() => {
                let queue = t as usize;
                // Drain the counter first so that a kick racing with processing is not lost.
                let _ = self.queue_evts[queue].read();
                self.metrics.queue_events.inc();
                if !self.is_activated() {
                    self.metrics.events_before_activation.inc();
                    tracing::debug!(queue, "virtio-vsock: queue notification before activation");
                }
                if queue == VSOCK_EVENT_QUEUE {
                    // Buffers for events we never send: nothing to do.
                    return;
                }
            }
            CTL_TOKEN => {
                let _ = self.ctl_evt.read();
            }
            LISTENER_TOKEN => self.muxer.accept(),
            TIMER_TOKEN => self.muxer.on_timer(),
            t if t >= FIRST_CONN_TOKEN => self.muxer.host_event(t, events.event_set()),
            t => {
                tracing::warn!(token = t, "virtio-vsock: event for an unknown source");
                return;
            }
        }
        self.run();
        self.muxer.sync(ops);
    }
}
