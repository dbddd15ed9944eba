//! An interrupt or reset line backed by an `EventFd`.

use std::io;
use std::ops::Deref;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A `vm-superio` [`Trigger`] that signals an `EventFd` (writes 1).
///
/// `vmm-core` registers the inner `EventFd` (reached through `Deref`) as a KVM
/// irqfd for interrupt lines, or watches it in its event loop for reset
/// lines. The `EventFd` is non-blocking, so a consumer that reads it when it
/// was not signalled gets `WouldBlock` instead of hanging.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Creates a trigger on a new non-blocking `EventFd`.
    pub fn new() -> io::Result<Self> {
        EventFd::new(EFD_NONBLOCK).map(Self)
    }

    /// Returns a trigger on a duplicate of the same `EventFd`: signalling
    /// either is seen by readers of both.
    pub fn try_clone(&self) -> io::Result<Self> {
        self.0.try_clone().map(Self)
    }

    /// The underlying `EventFd`.
    pub fn event_fd(&self) -> &EventFd {
        &self.0
    }
}

impl Deref for EventFdTrigger {
    type Target = EventFd;

    fn deref(&self) -> &EventFd {
        &self.0
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_signals_the_eventfd_and_its_clones() {
        let trigger = EventFdTrigger::new().unwrap();
        let clone = trigger.try_clone().unwrap();
        // Non-blocking: nothing signalled yet.
        assert_eq!(
            trigger.read().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        trigger.trigger().unwrap();
        clone.trigger().unwrap();
        assert_eq!(trigger.event_fd().read().unwrap(), 2);
    }
}
