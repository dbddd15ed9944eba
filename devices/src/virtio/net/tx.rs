//! Transmit: guest chains gathered into a bounce buffer and written to the
//! TAP as one frame (one `writev`).
//!
//! Any chain shape the spec allows works: the header alone in its first
//! descriptor or with the frame, many small descriptors, indirect tables.
//! A chain with a device-writable descriptor, a buffer outside guest
//! memory or less than a header and an Ethernet header is dropped and
//! counted; so is one longer than the header and [`MAX_FRAME_LEN`]. When
//! the TAP is full (EAGAIN), the chain is kept, unused, with its frame
//! already copied, and TX stops until the TAP is writable again: the guest
//! sees back-pressure, not loss.

use std::io::{ErrorKind, IoSlice};

use log::warn;
use virtio_queue::{Error, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::device::NetStats;
use super::{Backend, ETH_HLEN, FRAMES_PER_WAKE, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::legacy::LogLimiter;
use crate::virtio::queue::Chain;

/// Why a chain is dropped.
#[derive(Debug, PartialEq, Eq)]
enum BadChain {
    Writable,
    OutsideMemory,
    TooShort,
    TooLarge,
}

enum Sent {
    Done,
    Blocked,
}

/// TX state of an active session.
pub(super) struct Tx {
    frame: Vec<u8>,
    /// A chain (head, frame length in `frame`) the TAP refused with EAGAIN.
    pending: Option<(u16, usize)>,
    /// Stopped at the budget; chains may be left.
    more: bool,
    write_errors: LogLimiter,
}

impl Tx {
    pub(super) fn new() -> Self {
        Tx {
            frame: vec![0; VNET_HDR_LEN + MAX_FRAME_LEN],
            pending: None,
            more: false,
            write_errors: LogLimiter::default(),
        }
    }

    /// TX must be resumed when the TAP is writable.
    pub(super) fn wants_writable(&self) -> bool {
        self.pending.is_some() || self.more
    }

    /// Sends the kept chain, then up to [`FRAMES_PER_WAKE`] chains in all.
    /// Returns whether the guest must be interrupted; an error means the
    /// queue is broken.
    pub(super) fn process(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        backend: &mut dyn Backend,
        stats: &mut NetStats,
    ) -> Result<bool, Error> {
        self.more = false;
        let mut used_any = false;
        if let Some((head, len)) = self.pending.take() {
            if let Sent::Blocked = self.send(backend, len, stats) {
                self.pending = Some((head, len));
                return Ok(false);
            }
            queue.add_used(memory, head, 0)?;
            used_any = true;
        }
        queue.disable_notification(memory)?;
        let mut frames = 1;
        loop {
            let Some(chain) = queue.iter(memory)?.next() else {
                // Chains may have come in before notifications were on.
                if queue.enable_notification(memory)? {
                    queue.disable_notification(memory)?;
                    continue;
                }
                break;
            };
            let head = chain.head_index();
            match self.gather(chain, memory) {
                Ok(len) => {
                    if let Sent::Blocked = self.send(backend, len, stats) {
                        self.pending = Some((head, len));
                        break;
                    }
                }
                Err(BadChain::TooLarge) => stats.tx_oversize += 1,
                Err(_) => stats.tx_bad_chains += 1,
            }
            queue.add_used(memory, head, 0)?;
            used_any = true;
            if frames == FRAMES_PER_WAKE {
                // Notifications stay off: the TAP's EPOLLOUT resumes TX.
                self.more = true;
                break;
            }
            frames += 1;
        }
        Ok(used_any && queue.needs_notification(memory)?)
    }

    /// Copies the chain's device-readable buffers into `frame`; returns the
    /// length of header + frame.
    fn gather(&mut self, chain: Chain<'_>, memory: &GuestMemoryMmap) -> Result<usize, BadChain> {
        let mut len = 0usize;
        for desc in chain {
            if desc.is_write_only() {
                return Err(BadChain::Writable);
            }
            let n = desc.len() as usize;
            let dst = self.frame.get_mut(len..len + n).ok_or(BadChain::TooLarge)?;
            memory
                .read_slice(dst, desc.addr())
                .map_err(|_| BadChain::OutsideMemory)?;
            len += n;
        }
        if len < VNET_HDR_LEN + ETH_HLEN {
            return Err(BadChain::TooShort);
        }
        Ok(len)
    }

    /// Writes `frame[..len]` to the TAP.
    fn send(&mut self, backend: &mut dyn Backend, len: usize, stats: &mut NetStats) -> Sent {
        loop {
            match backend.write_frame(&[IoSlice::new(&self.frame[..len])]) {
                Ok(n) if n == len => {
                    stats.tx_frames += 1;
                    stats.tx_bytes += len as u64;
                }
                Ok(n) => {
                    stats.tx_errors += 1;
                    self.warn(&format!("the TAP took {n} of {len} bytes"));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    stats.tx_blocked += 1;
                    return Sent::Blocked;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // EINVAL for a header the host kernel rejects, EIO while
                // the TAP is down: the frame is lost, as on a wire.
                Err(e) => {
                    stats.tx_errors += 1;
                    self.warn(&format!("writing a {len}-byte frame to the TAP: {e}"));
                }
            }
            return Sent::Done;
        }
    }

    fn warn(&self, what: &str) {
        if let Some(count) = self.write_errors.hit() {
            warn!("virtio-net: {what} ({count} so far)");
        }
    }
}
