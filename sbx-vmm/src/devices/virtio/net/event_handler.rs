//! Running the network device on the VMM's event-manager thread: its queue eventfds, a
//! control eventfd and (while the guest has receive buffers) the backend fd.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::{Net, BACKEND_TOKEN, CTL_TOKEN, NET_RX_QUEUE, NET_TX_QUEUE};

impl Net {
    /// Add the backend fd to the epoll set or take it out, as [`Net::wants_backend`] says.
    fn sync_backend(&mut self, ops: &mut EventOps<'_>) {
        let want = self.wants_backend();
        if want == self.backend_watched {
            return;
        }
        let fd = self.backend.as_raw_fd();
        let res = if want {
            ops.add(Events::with_data_raw(fd, BACKEND_TOKEN, EventSet::IN))
        } else {
            ops.remove(Events::empty_raw(fd))
        };
        match res {
            Ok(()) => self.backend_watched = want,
            Err(e) => {
                tracing::error!(watch = want, error = ?e, "virtio-net: cannot change the backend fd's epoll registration");
            }
        }
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps<'_>) {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                tracing::error!(queue = i, error = ?e, "virtio-net: cannot watch the queue eventfd");
            }
        }
        if let Err(e) = ops.add(Events::with_data(&self.ctl_evt, CTL_TOKEN, EventSet::IN)) {
            tracing::error!(error = ?e, "virtio-net: cannot watch the control eventfd");
        }
        self.sync_backend(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps<'_>) {
        match events.data() {
            t if t as usize == NET_RX_QUEUE || t as usize == NET_TX_QUEUE => {
                let queue = t as usize;
                // Drain the counter first so that a kick racing with processing is not lost.
                let _ = self.queue_evts[queue].read();
                self.metrics.queue_events.inc();
                if !self.is_activated() {
                    self.metrics.events_before_activation.inc();
                    tracing::debug!(queue, "virtio-net: queue notification before activation");
                } else if queue == NET_TX_QUEUE {
                    self.process_tx();
                } else {
                    self.process_rx();
                }
            }
            BACKEND_TOKEN => {
                self.process_rx();
            }
            CTL_TOKEN => {
                let _ = self.ctl_evt.read();
                self.process_tx();
                self.process_rx();
            }
            t => {
                tracing::warn!(token = t, "virtio-net: event for an unknown source");
                return;
            }
        }
        self.sync_backend(ops);
    }
}
