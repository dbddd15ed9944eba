//! The virtio-net device: configuration space, feature bits, the
//! [`VirtioDevice`] implementation, and which readiness of the TAP the
//! VMM thread watches.
//!
//! Watching the TAP (`EPOLLIN` for RX, `EPOLLOUT` for TX) follows the
//! queues' state, recomputed after every event by [`Net::sync_watch`]:
//!
//! ```text
//!   EPOLLIN  while active and RX is not waiting for guest buffers
//!            (a frame read with nowhere to go stops TAP reads until the
//!            guest adds buffers and notifies the RX queue)
//!   EPOLLOUT while TX holds a chain the TAP refused (EAGAIN), or stopped
//!            at its per-wake budget with chains left (the TAP is almost
//!            always writable, so this resumes TX on the next loop turn)
//! ```

use std::os::fd::RawFd;
use std::sync::Arc;

use log::{info, warn};
use virtio_bindings::virtio_net::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use super::rx::Rx;
use super::tap::{Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_UFO};
use super::tx::Tx;
use super::{Backend, NetConfig, NetError, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use crate::legacy::LogLimiter;
use crate::virtio::{
    device_type, read_config_bytes, ActivateError, FdWatch, VirtioDevice, VirtioInterrupt,
    VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

const fn bit(feature: u32) -> u64 {
    1 << feature
}

/// Counters of what the device moved and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames given to the guest.
    pub rx_frames: u64,
    /// Bytes given to the guest, virtio headers included.
    pub rx_bytes: u64,
    /// Frames from the TAP dropped: larger than every buffer the guest
    /// could offer, or shorter than a virtio header.
    pub rx_dropped: u64,
    /// RX chains returned unused: a device-readable descriptor, or a
    /// buffer outside guest memory.
    pub rx_bad_buffers: u64,
    /// Reads from the TAP that failed (other than EAGAIN).
    pub rx_errors: u64,
    /// Frames written to the TAP.
    pub tx_frames: u64,
    /// Bytes written to the TAP, virtio headers included.
    pub tx_bytes: u64,
    /// TX chains dropped as malformed: a device-writable descriptor, a
    /// buffer outside guest memory, or shorter than header + Ethernet
    /// header.
    pub tx_bad_chains: u64,
    /// TX chains dropped for holding more than header + [`MAX_FRAME_LEN`].
    ///
    /// [`MAX_FRAME_LEN`]: super::MAX_FRAME_LEN
    pub tx_oversize: u64,
    /// Frames the TAP refused (other than EAGAIN) or took only in part.
    pub tx_errors: u64,
    /// Times the TAP was full (EAGAIN) and a chain was kept for later.
    pub tx_blocked: u64,
}

/// What an active session holds.
struct Active {
    memory: GuestMemoryMmap,
    rx_queue: Queue,
    tx_queue: Queue,
    interrupt: Arc<dyn VirtioInterrupt>,
}

/// A virtio-net device on a host TAP.
///
/// It owns the TAP's only descriptor: dropping the device closes it, and
/// a TAP that [`Net::new`] created goes with it. The TAP is watched from
/// activation to reset (added through the [`FdWatch`] of `activate`), not
/// from VM start ([`VirtioDevice::host_fds`] is empty): a TAP that fills
/// before the driver is up must not wake the VMM thread for nothing.
pub struct Net {
    backend: Box<dyn Backend>,
    tap_name: String,
    config: [u8; 10],
    features: u64,
    acked: u64,
    active: Option<Active>,
    rx: Rx,
    tx: Tx,
    /// What the VMM thread watches on the backend fd, as last requested.
    watched: Option<EventSet>,
    stats: NetStats,
    offload_errors: LogLimiter,
}

impl Net {
    /// Opens (or creates) the TAP `config.tap` for a NIC with address
    /// `config.mac`.
    pub fn new(config: &NetConfig) -> Result<Net, NetError> {
        let tap = Tap::open(&config.tap)?;
        info!(
            "virtio-net: TAP {} ({}), offloads {:#x}",
            tap.name(),
            if tap.persistent() {
                "persistent, left in place on exit"
            } else {
                "removed when the device is dropped"
            },
            tap.offloads()
        );
        let offloads = tap.offloads();
        let name = tap.name().to_string();
        Ok(Net::with_backend(Box::new(tap), name, config.mac, offloads))
    }

    /// A device on any backend (a fake one in tests and the fuzzer);
    /// `offloads` are the `TUN_F_*` flags it accepts.
    pub fn with_backend(
        backend: Box<dyn Backend>,
        tap_name: String,
        mac: [u8; 6],
        offloads: u32,
    ) -> Net {
        let mut config = [0u8; 10];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        // max_virtqueue_pairs: one (only meaningful with VIRTIO_NET_F_MQ).
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        Net {
            backend,
            tap_name,
            config,
            features: offered_features(offloads),
            acked: 0,
            active: None,
            rx: Rx::new(),
            tx: Tx::new(),
            watched: None,
            stats: NetStats::default(),
            offload_errors: LogLimiter::default(),
        }
    }

    /// What the device moved and dropped so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The TAP's name.
    pub fn tap_name(&self) -> &str {
        &self.tap_name
    }

    fn has(&self, feature: u32) -> bool {
        self.acked & bit(feature) != 0
    }

    fn process_rx(&mut self) {
        let mergeable = self.has(VIRTIO_NET_F_MRG_RXBUF);
        let guest_csum = self.has(VIRTIO_NET_F_GUEST_CSUM);
        let Some(active) = &mut self.active else {
            return;
        };
        let result = self.rx.process(
            &mut active.rx_queue,
            &active.memory,
            self.backend.as_mut(),
            mergeable,
            guest_csum,
            &mut self.stats,
        );
        self.finish("RX", result);
    }

    fn process_tx(&mut self) {
        let Some(active) = &mut self.active else {
            return;
        };
        let result = self.tx.process(
            &mut active.tx_queue,
            &active.memory,
            self.backend.as_mut(),
            &mut self.stats,
        );
        self.finish("TX", result);
    }

    /// Interrupts the guest if a queue asked for it; a broken ring breaks
    /// the device.
    fn finish(&mut self, queue: &str, result: Result<bool, virtio_queue::Error>) {
        let Some(active) = &self.active else {
            return;
        };
        match result {
            Ok(true) => active.interrupt.signal_used_queue(),
            Ok(false) => {}
            Err(e) => {
                active
                    .interrupt
                    .device_broken(&format!("virtio-net {}: {queue} queue: {e}", self.tap_name));
                self.end_session();
            }
        }
    }

    fn end_session(&mut self) {
        self.active = None;
        self.rx = Rx::new();
        self.tx = Tx::new();
    }

    /// Asks the VMM thread to watch the TAP for what the queues need now.
    fn sync_watch(&mut self, fds: &mut FdWatch) {
        let mut want = EventSet::empty();
        if self.active.is_some() {
            if !self.rx.waiting_for_buffers() {
                want |= EventSet::IN;
            }
            if self.tx.wants_writable() {
                want |= EventSet::OUT;
            }
        }
        let want = (!want.is_empty()).then_some(want);
        let fd = self.backend.raw_fd();
        match (self.watched, want) {
            (None, Some(events)) => fds.add(fd, events),
            (Some(_), None) => fds.remove(fd),
            (Some(old), Some(new)) if old != new => fds.modify(fd, new),
            _ => {}
        }
        self.watched = want;
    }
}

/// The features offered on a backend accepting `offloads` (`TUN_F_*`).
/// Host (TX) checksum and TSO are always offered: the TAP takes GSO
/// headers on write. Guest (RX) offloads are offered as the TAP accepted
/// them; UFO both ways only when the TAP accepts `TUN_F_UFO`.
fn offered_features(offloads: u32) -> u64 {
    let mut features = VERSION_1
        | bit(VIRTIO_RING_F_EVENT_IDX)
        | bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_STATUS)
        | bit(VIRTIO_NET_F_MRG_RXBUF)
        | bit(VIRTIO_NET_F_CSUM)
        | bit(VIRTIO_NET_F_HOST_TSO4)
        | bit(VIRTIO_NET_F_HOST_TSO6);
    if offloads & TUN_F_CSUM != 0 {
        features |= bit(VIRTIO_NET_F_GUEST_CSUM);
    }
    if offloads & TUN_F_TSO4 != 0 {
        features |= bit(VIRTIO_NET_F_GUEST_TSO4);
    }
    if offloads & TUN_F_TSO6 != 0 {
        features |= bit(VIRTIO_NET_F_GUEST_TSO6);
    }
    if offloads & TUN_F_UFO != 0 {
        features |= bit(VIRTIO_NET_F_GUEST_UFO) | bit(VIRTIO_NET_F_HOST_UFO);
    }
    features
}

/// The `TUN_F_*` offloads matching the guest's negotiated receive
/// features.
pub(super) fn guest_offloads(features: u64) -> u32 {
    let mut flags = 0;
    if features & bit(VIRTIO_NET_F_GUEST_CSUM) != 0 {
        flags |= TUN_F_CSUM;
        // The TAP ignores segmentation offloads without checksum offload,
        // as the spec makes them depend on it.
        if features & bit(VIRTIO_NET_F_GUEST_TSO4) != 0 {
            flags |= TUN_F_TSO4;
        }
        if features & bit(VIRTIO_NET_F_GUEST_TSO6) != 0 {
            flags |= TUN_F_TSO6;
        }
        if features & bit(VIRTIO_NET_F_GUEST_UFO) != 0 {
            flags |= TUN_F_UFO;
        }
    }
    flags
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.features;
        let flags = guest_offloads(self.acked);
        // On failure the TAP keeps the offloads it had (none, from
        // `Tap::open`, or a previous session's): it then sends checksummed,
        // unsegmented frames, which every guest accepts.
        if let Err(e) = self.backend.set_offload(flags) {
            if let Some(count) = self.offload_errors.hit() {
                warn!(
                    "virtio-net {}: TUNSETOFFLOAD {flags:#x}: {e} ({count} so far)",
                    self.tap_name
                );
            }
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        memory: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
        fds: &mut FdWatch,
    ) -> Result<(), ActivateError> {
        let mut queues = queues.into_iter();
        let (Some(rx_queue), Some(tx_queue)) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueNotReady { index: 0 });
        };
        for (index, queue) in [(RX_QUEUE, &rx_queue), (TX_QUEUE, &tx_queue)] {
            if !queue.ready() {
                return Err(ActivateError::QueueNotReady { index });
            }
        }
        self.end_session();
        self.active = Some(Active {
            memory,
            rx_queue,
            tx_queue,
            interrupt,
        });
        self.sync_watch(fds);
        Ok(())
    }

    fn queue_notified(&mut self, index: usize, fds: &mut FdWatch) {
        match index {
            // The guest added receive buffers: a waiting frame can go in.
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => self.process_tx(),
            _ => {}
        }
        self.sync_watch(fds);
    }

    fn host_event(&mut self, fd: RawFd, events: EventSet, fds: &mut FdWatch) {
        if fd != self.backend.raw_fd() {
            return;
        }
        if events.intersects(EventSet::ERROR | EventSet::HANG_UP) {
            // The TAP went away under us (deleted by an administrator):
            // nothing more can be sent or received.
            if let Some(active) = &self.active {
                active.interrupt.device_broken(&format!(
                    "virtio-net: TAP {} reported an error or hang-up ({events:?})",
                    self.tap_name
                ));
            }
            self.end_session();
        } else {
            if events.contains(EventSet::OUT) {
                self.process_tx();
            }
            if events.contains(EventSet::IN) {
                self.process_rx();
            }
        }
        self.sync_watch(fds);
    }

    fn reset(&mut self, fds: &mut FdWatch) {
        self.end_session();
        self.acked = 0;
        self.sync_watch(fds);
    }
}
