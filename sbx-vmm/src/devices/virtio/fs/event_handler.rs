//! Running the virtio-fs frontend on the VMM's event-manager thread: forward the backend's
//! call eventfds to the guest interrupt and notice when the backend goes away.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::{Fs, NUM_QUEUES};

/// Event data of the vhost-user socket (queue call eventfds use their index).
const SOCKET_TOKEN: u32 = 0x100;

impl MutEventSubscriber for Fs {
    fn init(&mut self, ops: &mut EventOps<'_>) {
        for (i, evt) in self.call_evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                tracing::error!(queue = i, error = ?e, "virtio-fs: cannot watch a call eventfd");
            }
        }
        // Only hang-ups: replies to our requests are read synchronously by whoever sent them,
        // and the backend sends nothing unprompted on this socket.
        let socket = Events::with_data(&self.frontend, SOCKET_TOKEN, EventSet::READ_HANG_UP);
        match ops.add(socket) {
            Ok(()) => self.socket_watched = true,
            Err(e) => {
                tracing::error!(error = ?e, "virtio-fs: cannot watch the vhost-user socket");
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps<'_>) {
        let data = events.data();
        if data == SOCKET_TOKEN {
            if self.socket_watched {
                let socket =
                    Events::with_data(&self.frontend, SOCKET_TOKEN, EventSet::READ_HANG_UP);
                if let Err(e) = ops.remove(socket) {
                    tracing::warn!(error = ?e, "virtio-fs: cannot stop watching the socket");
                }
                self.socket_watched = false;
            }
            self.backend_gone();
            return;
        }
        let queue = data as usize;
        if queue >= NUM_QUEUES {
            tracing::warn!(queue, "virtio-fs: event for an unknown queue");
            return;
        }
        // Drain first so that a signal racing with the interrupt is not lost.
        let _ = self.call_evts[queue].read();
        self.backend_used(queue);
    }
}
