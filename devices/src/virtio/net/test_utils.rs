//! For the net unit tests: an in-memory backend and a guest with RX and TX
//! queues built by `virtio-queue`'s mock.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Backend, Net, VNET_HDR_LEN};
use crate::virtio::test_utils::CountingInterrupt;
use crate::virtio::{FdChange, FdWatch, VirtioDevice};

/// The fd the fake backend claims to be.
pub(super) const FAKE_FD: RawFd = 1000;
pub(super) const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// What the fake TAP holds and saw.
#[derive(Default)]
pub(super) struct FakeState {
    /// Frames the host will hand the device, header first.
    pub(super) to_guest: VecDeque<Vec<u8>>,
    /// Frames the device wrote.
    pub(super) from_guest: Vec<Vec<u8>>,
    /// Successful reads.
    pub(super) reads: usize,
    /// Writes to refuse with EAGAIN before accepting again.
    pub(super) refuse_writes: usize,
    /// The last TUNSETOFFLOAD.
    pub(super) offload: Option<u32>,
}

pub(super) struct FakeTap(pub(super) Arc<Mutex<FakeState>>);

impl Backend for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.0.lock().unwrap();
        let frame = state
            .to_guest
            .pop_front()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        state.reads += 1;
        // A TAP truncates what does not fit.
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut state = self.0.lock().unwrap();
        if state.refuse_writes > 0 {
            state.refuse_writes -= 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let frame: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let n = frame.len();
        state.from_guest.push(frame);
        Ok(n)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        self.0.lock().unwrap().offload = Some(flags);
        Ok(())
    }

    fn raw_fd(&self) -> RawFd {
        FAKE_FD
    }
}

pub(super) fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

/// A frame as the TAP gives it: a zeroed virtio header, then `len` bytes
/// of a pattern that starts at `seed`.
pub(super) fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut frame = vec![0u8; VNET_HDR_LEN];
    frame.extend((0..len).map(|i| seed.wrapping_add(i as u8)));
    frame
}

/// One descriptor: guest address, length, device-writable.
pub(super) type Desc = (u64, u32, bool);

/// A queue in guest memory and the next free descriptor index.
pub(super) struct GuestQueue<'a> {
    pub(super) mock: MockSplitQueue<'a, GuestMemoryMmap>,
    next_desc: u16,
    size: u16,
}

impl<'a> GuestQueue<'a> {
    pub(super) fn new(memory: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        GuestQueue {
            mock: MockSplitQueue::create(memory, GuestAddress(base), size),
            next_desc: 0,
            size,
        }
    }

    /// Makes one chain of `descs` available.
    pub(super) fn add_chain(&mut self, descs: &[Desc]) {
        let first = self.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, writable))| {
                let index = first + i as u16;
                let mut flags = if writable {
                    VRING_DESC_F_WRITE as u16
                } else {
                    0
                };
                if i + 1 < descs.len() {
                    flags |= virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
                }
                RawDescriptor::from(Descriptor::new(addr, len, flags, index + 1))
            })
            .collect();
        self.mock.add_desc_chains(&raw, first).unwrap();
        self.next_desc += descs.len() as u16;
    }

    /// Sets `used_event`: the driver asks for an interrupt once the used
    /// index passes it (EVENT_IDX).
    pub(super) fn set_used_event(&self, memory: &GuestMemoryMmap, value: u16) {
        let addr = self.mock.avail_addr().0 + 4 + 2 * u64::from(self.size);
        memory.write_obj(value.to_le(), GuestAddress(addr)).unwrap();
    }

    /// Used entries so far: (head, length).
    pub(super) fn used(&self) -> Vec<(u16, u32)> {
        let idx = self.mock.used().idx().load();
        (0..idx)
            .map(|i| {
                let elem = self.mock.used().ring().ref_at(i.into()).unwrap().load();
                (elem.id() as u16, elem.len())
            })
            .collect()
    }
}

/// A device on a fake TAP, activated with `features` on the two queues.
pub(super) struct Harness {
    pub(super) net: Net,
    pub(super) tap: Arc<Mutex<FakeState>>,
    pub(super) interrupt: Arc<CountingInterrupt>,
    /// Every watch change the device asked for.
    pub(super) watch: Vec<FdChange>,
}

impl Harness {
    pub(super) fn new(
        memory: &GuestMemoryMmap,
        rx: &GuestQueue<'_>,
        tx: &GuestQueue<'_>,
        features: u64,
    ) -> Self {
        let tap = Arc::new(Mutex::new(FakeState::default()));
        let mut net = Net::with_backend(
            Box::new(FakeTap(tap.clone())),
            "fake0".to_string(),
            MAC,
            super::tap::TUN_F_CSUM | super::tap::TUN_F_TSO4 | super::tap::TUN_F_TSO6,
        );
        net.ack_features(features);
        let interrupt = Arc::new(CountingInterrupt::default());
        let mut fds = FdWatch::default();
        // As the transport does: EVENT_IDX is a property of the queues.
        let event_idx = features & (1 << crate::virtio::VIRTIO_RING_F_EVENT_IDX) != 0;
        let queues = [rx, tx].map(|q| {
            let mut queue: Queue = q.mock.create_queue().unwrap();
            queue.set_event_idx(event_idx);
            queue
        });
        net.activate(memory.clone(), queues.into(), interrupt.clone(), &mut fds)
            .unwrap();
        Harness {
            net,
            tap,
            interrupt,
            watch: fds.changes,
        }
    }

    pub(super) fn tap(&self) -> MutexGuard<'_, FakeState> {
        self.tap.lock().unwrap()
    }

    pub(super) fn notify(&mut self, queue: usize) {
        let mut fds = FdWatch::default();
        self.net.queue_notified(queue, &mut fds);
        self.watch.extend(fds.changes);
    }

    pub(super) fn tap_event(&mut self, events: vmm_sys_util::epoll::EventSet) {
        let mut fds = FdWatch::default();
        self.net.host_event(FAKE_FD, events, &mut fds);
        self.watch.extend(fds.changes);
    }

    /// The last watch change asked for.
    pub(super) fn last_watch(&self) -> Option<FdChange> {
        self.watch.last().copied()
    }
}
