//! Virtio devices and their MMIO transport (virtio 1.x, virtio-mmio
//! version 2).
//!
//! The transport ([`mmio::MmioTransport`]) owns the register file, feature
//! negotiation, the driver-status state machine and the queue
//! configuration; it knows nothing of block or net. A device implements
//! [`VirtioDevice`]. Queue memory is reached only through `vm-memory` and
//! `virtio-queue`; interrupts go out through a [`VirtioInterrupt`] (an irqfd
//! in a VM, a mock in unit tests).
//!
//! Threads: the guest's register accesses arrive on a vCPU thread (MMIO
//! exits to the transport, a bus device); queue notifications arrive on the
//! VMM thread as ioeventfds, through [`handler::DeviceEventHandler`], the
//! event-manager subscriber that also watches a device's host file
//! descriptors (a TAP, a socket). Both reach the device through one mutex.

pub mod block;
pub mod handler;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod vsock;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

pub use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
pub use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Virtio device type numbers (virtio 1.2, 5).
pub mod device_type {
    /// virtio-net.
    pub const NET: u32 = 1;
    /// virtio-blk.
    pub const BLOCK: u32 = 2;
    /// virtio-rng (entropy).
    pub const RNG: u32 = 4;
    /// virtio-vsock.
    pub const VSOCK: u32 = 19;
}

/// The one feature every mercury device offers and requires of the driver:
/// modern virtio (1.x) only, no legacy interface.
pub const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;

/// How a device tells the guest something happened.
///
/// In a VM this sets the transport's interrupt status and signals the
/// device's irqfd; unit tests use a mock that counts.
pub trait VirtioInterrupt: Send + Sync {
    /// The device put buffers in a used ring.
    fn signal_used_queue(&self);
    /// The device's configuration space changed.
    fn signal_config_changed(&self);
    /// The device met an error it cannot continue from (a malformed queue,
    /// a failed backend): the transport sets `DEVICE_NEEDS_RESET` and
    /// raises a configuration interrupt; the guest must reset the device.
    fn device_broken(&self, why: &str);
}

/// Why a device could not be activated (the transport then sets
/// `DEVICE_NEEDS_RESET`).
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver made fewer queues ready than the device needs.
    #[error("queue {index} is not ready")]
    QueueNotReady {
        /// The first queue that is not ready.
        index: usize,
    },
    /// A host resource the device needs failed.
    #[error("{what}: {source}")]
    Backend {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a device hands back to its event handler: file descriptors to
/// start or stop watching on the VMM thread (a device's TAP while it
/// waits for RX buffers, a vsock connection that opened or closed).
#[derive(Debug, Default)]
pub struct FdWatch {
    pub(crate) changes: Vec<FdChange>,
    /// Closed by the handler once the changes above are applied, so an fd
    /// is never closed (and its number reused) while still watched.
    pub(crate) closing: Vec<OwnedFd>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdChange {
    Add(RawFd, EventSet),
    Modify(RawFd, EventSet),
    Remove(RawFd),
}

impl FdWatch {
    /// Start watching `fd` for `events`.
    pub fn add(&mut self, fd: RawFd, events: EventSet) {
        self.changes.push(FdChange::Add(fd, events));
    }

    /// Watch `fd`, already watched, for `events` instead.
    pub fn modify(&mut self, fd: RawFd, events: EventSet) {
        self.changes.push(FdChange::Modify(fd, events));
    }

    /// Stop watching `fd` (before closing it).
    pub fn remove(&mut self, fd: RawFd) {
        self.changes.push(FdChange::Remove(fd));
    }

    /// Close `fd` once the changes already in this watch (its removal among
    /// them) are applied.
    pub fn close_after(&mut self, fd: impl Into<OwnedFd>) {
        self.closing.push(fd.into());
    }

    /// Stop watching `fd`, then close it: the handler closes it after
    /// applying the removal, on the VMM thread, however late that is (a
    /// reset on a vCPU thread hands its changes over asynchronously).
    pub fn remove_and_close(&mut self, fd: impl Into<OwnedFd>) {
        let fd = fd.into();
        self.changes.push(FdChange::Remove(fd.as_raw_fd()));
        self.closing.push(fd);
    }
}

/// A virtio device behind a transport.
///
/// ```text
///            new()                 driver: ACKNOWLEDGE, DRIVER,
///   ┌─────────────────┐            features (ack_features), FEATURES_OK,
///   │ inactive        │◀─────┐     queue set-up, DRIVER_OK
///   │ config readable │      │               │
///   └────────┬────────┘      │               ▼
///            │ activate(memory, queues, interrupt)
///            ▼               │
///   ┌─────────────────┐      │ reset(): driver wrote status 0, or the
///   │ active:         │──────┘ device broke and the driver reset it;
///   │ queue_notified, │        queues, in-flight state and host
///   │ host_event      │        resources of the session are dropped
///   └─────────────────┘
/// ```
///
/// Every method is called with the device's mutex held, from a vCPU thread
/// (config accesses, activate, reset) or the VMM thread (events). Nothing
/// here may panic on guest input: a bad request gets an error status in
/// its used buffer, a broken queue calls [`VirtioInterrupt::device_broken`].
pub trait VirtioDevice: Send {
    /// The virtio device type ([`device_type`]).
    fn device_type(&self) -> u32;

    /// The largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Feature bits the device offers ([`VERSION_1`] included).
    fn features(&self) -> u64;

    /// The driver accepted `features` (a subset of [`Self::features`]),
    /// before activation.
    fn ack_features(&mut self, features: u64) {
        let _ = features;
    }

    /// Reads the device-specific configuration space at `offset`. Bytes
    /// past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device-specific configuration space. Most devices have
    /// nothing writable there and ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }

    /// The driver set DRIVER_OK: start using `queues` (one per
    /// [`Self::queue_max_sizes`] entry, validated by the transport).
    fn activate(
        &mut self,
        memory: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
        fds: &mut FdWatch,
    ) -> Result<(), ActivateError>;

    /// The guest notified queue `index` (an ioeventfd fired). Ignored when
    /// the device is not active.
    fn queue_notified(&mut self, index: usize, fds: &mut FdWatch);

    /// Host file descriptors to watch from the moment the VM starts.
    fn host_fds(&self) -> Vec<(RawFd, EventSet)> {
        Vec::new()
    }

    /// A watched host file descriptor is ready.
    fn host_event(&mut self, fd: RawFd, events: EventSet, fds: &mut FdWatch) {
        let _ = (fd, events, fds);
    }

    /// Back to the state after `new()`: drop the queues and everything the
    /// active session held (connections, pending frames); stop watching
    /// the fds that were added for it.
    fn reset(&mut self, fds: &mut FdWatch);
}

/// Reads `data.len()` bytes of `config` at `offset`; bytes beyond its end
/// read as zero. For [`VirtioDevice::read_config`] implementations.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(available) = config.get(start..) {
        let n = available.len().min(data.len());
        data[..n].copy_from_slice(&available[..n]);
    }
}

#[cfg(test)]
pub(crate) mod test_utils {
    //! A counting interrupt for device unit tests.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::VirtioInterrupt;

    /// Counts what a device signalled.
    #[derive(Default)]
    pub(crate) struct CountingInterrupt {
        pub(crate) used: AtomicUsize,
        pub(crate) config: AtomicUsize,
        pub(crate) broken: Mutex<Vec<String>>,
    }

    impl CountingInterrupt {
        pub(crate) fn used(&self) -> usize {
            self.used.load(Ordering::SeqCst)
        }

        pub(crate) fn broken(&self) -> Vec<String> {
            self.broken.lock().unwrap().clone()
        }
    }

    impl VirtioInterrupt for CountingInterrupt {
        fn signal_used_queue(&self) {
            self.used.fetch_add(1, Ordering::SeqCst);
        }
        fn signal_config_changed(&self) {
            self.config.fetch_add(1, Ordering::SeqCst);
        }
        fn device_broken(&self, why: &str) {
            self.broken.lock().unwrap().push(why.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_past_the_end_are_zero() {
        let config = [1u8, 2, 3, 4];
        let mut data = [0xaa; 4];
        read_config_bytes(&config, 2, &mut data);
        assert_eq!(data, [3, 4, 0, 0]);
        read_config_bytes(&config, 9, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_bytes(&config, u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
    }
}
