//! The event-manager glue of every virtio device: a subscriber on the VMM
//! thread that watches the device's queue ioeventfds and host file
//! descriptors and calls into the device when one fires.
//!
//! Activation and reset happen on a vCPU thread (a register write), which
//! must not reach into the event loop: the watch changes they produce go
//! through [`PendingFdChanges`], whose `EventFd` wakes this handler to
//! apply them.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use log::{debug, error};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{FdChange, FdWatch, VirtioDevice};

/// Watch changes made on a vCPU thread, waiting for the VMM thread.
pub(crate) struct PendingFdChanges {
    changes: Mutex<FdWatch>,
    evt: EventFd,
}

impl PendingFdChanges {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(PendingFdChanges {
            changes: Mutex::new(FdWatch::default()),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Queues `watch`'s changes and wakes the handler, if there are any.
    pub(crate) fn push(&self, watch: FdWatch) {
        if watch.changes.is_empty() && watch.closing.is_empty() {
            return;
        }
        {
            let mut pending = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            pending.changes.extend(watch.changes);
            pending.closing.extend(watch.closing);
        }
        if let Err(e) = self.evt.write(1) {
            error!("virtio: cannot wake the device's event handler: {e}");
        }
    }

    fn take(&self) -> FdWatch {
        let _ = self.evt.read();
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Runs one virtio device's I/O on the VMM thread.
pub struct DeviceEventHandler {
    device: Arc<Mutex<dyn VirtioDevice>>,
    queue_evts: Vec<EventFd>,
    fd_changes: Arc<PendingFdChanges>,
}

impl DeviceEventHandler {
    pub(crate) fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        queue_evts: Vec<EventFd>,
        fd_changes: Arc<PendingFdChanges>,
    ) -> Self {
        DeviceEventHandler {
            device,
            queue_evts,
            fd_changes,
        }
    }

    /// Applies `watch`'s changes, then closes the fds it hands over.
    fn apply(watch: FdWatch, ops: &mut EventOps) {
        for change in watch.changes {
            let result = match change {
                FdChange::Add(fd, events) => ops.add(Events::new_raw(fd, events)),
                FdChange::Modify(fd, events) => ops.modify(Events::new_raw(fd, events)),
                FdChange::Remove(fd) => ops.remove(Events::empty_raw(fd)),
            };
            if let Err(e) = result {
                // Removing an fd that was never added (a reset before the
                // first activation) is harmless.
                debug!("virtio: watch change {change:?}: {e}");
            }
        }
        drop(watch.closing);
    }

    fn queue_index(&self, fd: RawFd) -> Option<usize> {
        self.queue_evts.iter().position(|evt| evt.as_raw_fd() == fd)
    }
}

impl MutEventSubscriber for DeviceEventHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.fd_changes.evt.as_raw_fd() {
            Self::apply(self.fd_changes.take(), ops);
            return;
        }
        let mut watch = FdWatch::default();
        {
            let mut device = self.device.lock().unwrap_or_else(|e| e.into_inner());
            match self.queue_index(fd) {
                Some(index) => {
                    let _ = self.queue_evts[index].read();
                    device.queue_notified(index, &mut watch);
                }
                None => device.host_event(fd, events.event_set(), &mut watch),
            }
        }
        Self::apply(watch, ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        let mut fds: Vec<(RawFd, EventSet)> = self
            .queue_evts
            .iter()
            .map(|evt| (evt.as_raw_fd(), EventSet::IN))
            .collect();
        fds.push((self.fd_changes.evt.as_raw_fd(), EventSet::IN));
        fds.extend(
            self.device
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .host_fds(),
        );
        for (fd, events) in fds {
            if let Err(e) = ops.add(Events::new_raw(fd, events)) {
                error!("virtio: cannot watch fd {fd}: {e}");
            }
        }
    }
}
