//! The VMM thread: runs the event loop for host-side device I/O (serial
//! input now, virtio queues later) and turns device exit events (i8042 and
//! ACPI reset, ACPI power-off, pvpanic) into VM exits. vCPU threads never
//! reach into this loop; devices signal it through `EventFd`s.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use event_manager::{EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::device_manager::VmmEventManager;
use crate::lifecycle::{Lifecycle, VmExit};

/// Watches the devices' exit events (reset, power-off, panic) and ends the VM
/// with the matching [`VmExit`] when one fires.
pub(crate) struct ExitEvents {
    watched: Vec<(EventFd, VmExit)>,
    lifecycle: Arc<Lifecycle>,
}

impl ExitEvents {
    pub(crate) fn new(lifecycle: Arc<Lifecycle>) -> Self {
        ExitEvents {
            watched: Vec::new(),
            lifecycle,
        }
    }

    /// Ends the VM with `exit` when `evt` is signalled. Call before the
    /// subscriber is added to the event loop.
    pub(crate) fn watch(&mut self, evt: EventFd, exit: VmExit) {
        self.watched.push((evt, exit));
    }
}

impl MutEventSubscriber for ExitEvents {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let Some((evt, exit)) = self
            .watched
            .iter()
            .find(|(evt, _)| evt.as_raw_fd() == events.fd())
        else {
            return;
        };
        let _ = evt.read();
        self.lifecycle.request_exit(exit.clone());
        // One exit event ends the VM; stop watching this one.
        let _ = ops.remove(Events::new(evt, EventSet::IN));
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (evt, exit) in &self.watched {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                log::error!("cannot watch the event for \"{exit}\": {e}");
            }
        }
    }
}

/// Ends the event loop when signalled.
struct StopEvent {
    evt: EventFd,
    stopped: Arc<AtomicBool>,
}

impl MutEventSubscriber for StopEvent {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.evt.read();
        self.stopped.store(true, Ordering::Release);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            log::error!("cannot watch the VMM stop event: {e}");
        }
    }
}

/// The running VMM thread.
pub(crate) struct VmmThread {
    stop_evt: EventFd,
    handle: JoinHandle<()>,
}

impl VmmThread {
    /// Starts the event loop on its own thread.
    pub(crate) fn spawn(mut event_manager: VmmEventManager) -> std::io::Result<Self> {
        let stop_evt = EventFd::new(libc::EFD_NONBLOCK)?;
        let stopped = Arc::new(AtomicBool::new(false));
        event_manager.add_subscriber(Arc::new(std::sync::Mutex::new(StopEvent {
            evt: stop_evt.try_clone()?,
            stopped: stopped.clone(),
        })));
        let handle = std::thread::Builder::new()
            .name("vmm".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    if let Err(e) = event_manager.run() {
                        log::error!("VMM event loop failed: {e}");
                        break;
                    }
                }
            })?;
        Ok(VmmThread { stop_evt, handle })
    }

    /// Ends the event loop and joins the thread.
    pub(crate) fn stop(self) {
        if let Err(e) = self.stop_evt.write(1) {
            log::error!("cannot signal the VMM thread to stop: {e}");
            return;
        }
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Runs an event loop watching reset, power-off and panic events, fires
    /// `fire` of them in turn, and returns the recorded outcome.
    fn outcome_after(fire: &[usize]) -> Option<VmExit> {
        let lifecycle = Arc::new(Lifecycle::new(1, 0));
        let exits = [VmExit::Reset, VmExit::PowerOff, VmExit::GuestPanic];
        let evts: Vec<EventFd> = exits
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        let mut watcher = ExitEvents::new(lifecycle.clone());
        for (evt, exit) in evts.iter().zip(&exits) {
            watcher.watch(evt.try_clone().unwrap(), exit.clone());
        }
        let mut manager = VmmEventManager::new().unwrap();
        manager.add_subscriber(Arc::new(Mutex::new(watcher)));
        for &i in fire {
            evts[i].write(1).unwrap();
            manager
                .run_with_timeout(Duration::from_secs(5).as_millis() as i32)
                .unwrap();
        }
        lifecycle.outcome()
    }

    #[test]
    fn each_event_ends_the_vm_with_its_exit() {
        assert_eq!(outcome_after(&[0]), Some(VmExit::Reset));
        assert_eq!(outcome_after(&[1]), Some(VmExit::PowerOff));
        assert_eq!(outcome_after(&[2]), Some(VmExit::GuestPanic));
    }

    #[test]
    fn first_event_wins() {
        assert_eq!(outcome_after(&[2, 1]), Some(VmExit::GuestPanic));
        assert_eq!(outcome_after(&[1, 0]), Some(VmExit::PowerOff));
    }
}
