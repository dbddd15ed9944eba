//! Receive: frames read from the TAP (virtio header first) into the
//! guest's RX buffers.
//!
//! A frame read from the TAP is held until it is placed: when the guest has
//! no buffer for it, it stays here, TAP reads stop (the device stops
//! watching `EPOLLIN`) and the RX queue's notifications are turned on; the
//! guest's next RX notification places it. No frame is read that has no
//! place to go but this one, so none is lost and none is given twice.
//!
//! Buffers (descriptor chains) are taken from the available ring only when
//! a frame needs them and kept until it fits: with `VIRTIO_NET_F_MRG_RXBUF`
//! a frame spreads over as many chains as it needs, `num_buffers` in its
//! header saying how many; without, it needs one chain big enough, and a
//! frame larger than that chain is dropped.

use std::collections::VecDeque;
use std::io::ErrorKind;

use log::warn;
use virtio_bindings::virtio_net::{VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM};
use virtio_queue::{Error, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::device::NetStats;
use super::{Backend, FRAMES_PER_WAKE, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::legacy::LogLimiter;

/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;
/// Size of one used-ring element (`id`, `len`) and of the ring's header
/// (`flags`, `idx`).
const USED_ELEM_SIZE: u64 = 8;
const USED_RING_HEADER: u64 = 4;

/// A chain taken from the RX queue, validated, not yet used.
struct RxBuffer {
    head: u16,
    /// Device-writable guest ranges, in chain order.
    segments: Vec<(GuestAddress, usize)>,
    capacity: usize,
}

/// How placing the held frame went.
enum Placed {
    Delivered { buffers: usize },
    Dropped,
    NoBuffers,
}

/// RX state of an active session.
pub(super) struct Rx {
    frame: Vec<u8>,
    /// Length of the frame held in `frame`; 0 when none is.
    frame_len: usize,
    buffers: VecDeque<RxBuffer>,
    waiting: bool,
    /// A used entry went into the ring during this `process`.
    published: bool,
    read_errors: LogLimiter,
}

impl Rx {
    pub(super) fn new() -> Self {
        Rx {
            // One byte more than the largest frame taken: a TAP truncates
            // a frame to the buffer, so a read that fills it was too large.
            frame: vec![0; VNET_HDR_LEN + MAX_FRAME_LEN + 1],
            frame_len: 0,
            buffers: VecDeque::new(),
            waiting: false,
            published: false,
            read_errors: LogLimiter::default(),
        }
    }

    /// A frame is held for want of guest buffers: do not read the TAP.
    pub(super) fn waiting_for_buffers(&self) -> bool {
        self.waiting
    }

    /// Moves up to [`FRAMES_PER_WAKE`] frames from `backend` to `queue`.
    /// Returns whether the guest must be interrupted; an error means the
    /// queue is broken.
    pub(super) fn process(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        backend: &mut dyn Backend,
        mergeable: bool,
        guest_csum: bool,
        stats: &mut NetStats,
    ) -> Result<bool, Error> {
        self.waiting = false;
        self.published = false;
        let mut split_frames = false;
        queue.disable_notification(memory)?;
        let mut frames = 0;
        while frames < FRAMES_PER_WAKE {
            frames += 1;
            if self.frame_len == 0 && !self.read(backend, stats) {
                break;
            }
            match self.place(queue, memory, mergeable, guest_csum, stats)? {
                Placed::Delivered { buffers } => split_frames |= buffers > 1,
                Placed::Dropped => {}
                Placed::NoBuffers => {
                    // Ask to be notified of new buffers; some may have come
                    // in before notifications were back on.
                    if queue.enable_notification(memory)? {
                        queue.disable_notification(memory)?;
                        continue;
                    }
                    self.waiting = true;
                    break;
                }
            }
        }
        if !self.published {
            return Ok(false);
        }
        // A frame over several buffers is published with one index update
        // (see `publish`), which `needs_notification`'s EVENT_IDX count
        // does not see in full: interrupt then rather than risk a missed
        // one.
        Ok(queue.needs_notification(memory)? || split_frames)
    }

    /// Reads the next frame from the TAP; false when there is none.
    fn read(&mut self, backend: &mut dyn Backend, stats: &mut NetStats) -> bool {
        loop {
            match backend.read_frame(&mut self.frame) {
                Ok(n) if !(VNET_HDR_LEN..=VNET_HDR_LEN + MAX_FRAME_LEN).contains(&n) => {
                    stats.rx_dropped += 1;
                    return true;
                }
                Ok(n) => {
                    self.frame_len = n;
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    stats.rx_errors += 1;
                    if let Some(count) = self.read_errors.hit() {
                        warn!("virtio-net: reading the TAP: {e} ({count} so far)");
                    }
                    return false;
                }
            }
        }
    }

    /// Places the held frame (if any) in guest buffers.
    fn place(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        mergeable: bool,
        guest_csum: bool,
        stats: &mut NetStats,
    ) -> Result<Placed, Error> {
        if self.frame_len == 0 {
            return Ok(Placed::Dropped);
        }
        let needed = loop {
            if let Some(needed) = self.buffers_needed(mergeable) {
                break needed;
            }
            // Without mergeable buffers the held chain is too small; with
            // them, the guest's whole ring is too small. Either way the
            // frame can never fit.
            let all_taken = if mergeable {
                self.buffers.len() >= usize::from(queue.size())
            } else {
                !self.buffers.is_empty()
            };
            if all_taken {
                stats.rx_dropped += 1;
                self.frame_len = 0;
                return Ok(Placed::Dropped);
            }
            match self.take_buffer(queue, memory, stats)? {
                Some(buffer) => self.buffers.push_back(buffer),
                None => return Ok(Placed::NoBuffers),
            }
        };

        let len = self.frame_len;
        let header = &mut self.frame[..VNET_HDR_LEN];
        // Checksum flags mean nothing to a guest without GUEST_CSUM.
        header[0] &= if guest_csum {
            (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) as u8
        } else {
            0
        };
        // `needed` is at most the queue size, 32768.
        header[NUM_BUFFERS_OFFSET..].copy_from_slice(&(needed as u16).to_le_bytes());

        let mut offset = 0;
        let mut used = Vec::with_capacity(needed);
        for buffer in self.buffers.drain(..needed) {
            let start = offset;
            for &(addr, seg_len) in &buffer.segments {
                let n = seg_len.min(len - offset);
                if n == 0 {
                    break;
                }
                memory
                    .write_slice(&self.frame[offset..offset + n], addr)
                    .map_err(Error::GuestMemory)?;
                offset += n;
            }
            used.push((buffer.head, (offset - start) as u32));
        }
        publish(queue, memory, &used)?;
        self.published = true;
        self.frame_len = 0;
        stats.rx_frames += 1;
        stats.rx_bytes += len as u64;
        Ok(Placed::Delivered { buffers: needed })
    }

    /// How many of the held buffers the frame needs, if they are enough.
    fn buffers_needed(&self, mergeable: bool) -> Option<usize> {
        let mut capacity = 0;
        let usable = if mergeable { self.buffers.len() } else { 1 };
        for (i, buffer) in self.buffers.iter().take(usable).enumerate() {
            capacity += buffer.capacity;
            if capacity >= self.frame_len {
                return Some(i + 1);
            }
        }
        None
    }

    /// Takes the next usable chain from the available ring. Chains with a
    /// device-readable descriptor, a buffer outside guest memory or room
    /// for less than a virtio header are returned to the guest unused.
    fn take_buffer(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        stats: &mut NetStats,
    ) -> Result<Option<RxBuffer>, Error> {
        while let Some(chain) = queue.iter(memory)?.next() {
            let head = chain.head_index();
            let mut segments = Vec::new();
            let mut capacity = 0usize;
            let mut valid = true;
            for desc in chain {
                let len = desc.len() as usize;
                if !desc.is_write_only()
                    || !GuestMemoryBackend::check_range(memory, desc.addr(), len)
                {
                    valid = false;
                    break;
                }
                if len > 0 {
                    segments.push((desc.addr(), len));
                    capacity += len;
                }
            }
            if valid && capacity >= VNET_HDR_LEN {
                return Ok(Some(RxBuffer {
                    head,
                    segments,
                    capacity,
                }));
            }
            stats.rx_bad_buffers += 1;
            queue.add_used(memory, head, 0)?;
            self.published = true;
        }
        Ok(None)
    }
}

/// Puts `used` (head, length) in the used ring and makes them visible to
/// the guest with a single index update: a driver polling the ring must
/// not see the first buffer of a frame (whose `num_buffers` announces the
/// rest) before the others, or it drops the frame as incomplete.
fn publish(queue: &mut Queue, memory: &GuestMemoryMmap, used: &[(u16, u32)]) -> Result<(), Error> {
    let Some((&(last_head, last_len), earlier)) = used.split_last() else {
        return Ok(());
    };
    let start = queue.next_used();
    let ring = GuestAddress(queue.used_ring());
    for (i, &(head, len)) in earlier.iter().enumerate() {
        let slot = start
            .wrapping_add(i as u16)
            .checked_rem(queue.size())
            .ok_or(Error::InvalidSize)?;
        let elem = ring
            .checked_add(USED_RING_HEADER + u64::from(slot) * USED_ELEM_SIZE)
            .ok_or(Error::AddressOverflow)?;
        memory
            .write_obj(u32::from(head).to_le(), elem)
            .map_err(Error::GuestMemory)?;
        memory
            .write_obj(len.to_le(), elem.unchecked_add(4))
            .map_err(Error::GuestMemory)?;
    }
    // The last entry goes in through the queue, whose index store (a
    // release) publishes the earlier ones with it.
    queue.set_next_used(start.wrapping_add(earlier.len() as u16));
    queue.add_used(memory, last_head, last_len)
}
