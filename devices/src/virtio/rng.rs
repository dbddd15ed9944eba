//! virtio-rng (virtio 1.2, 5.4): one request queue whose device-writable
//! buffers the device fills with random bytes from the host's `getrandom`.

use std::sync::Arc;

use log::warn;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestMemoryMmap};

use super::queue::{drain_queue, Chain};
use super::{device_type, ActivateError, FdWatch, VirtioDevice, VirtioInterrupt, VERSION_1};
use crate::legacy::LogLimiter;

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes given for one request: the spec lets the device fill less
/// than the buffers hold, and this bounds the work one guest request costs.
pub const MAX_BYTES_PER_REQUEST: usize = 64 << 10;

struct Active {
    memory: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<dyn VirtioInterrupt>,
}

/// The entropy device.
pub struct Rng {
    active: Option<Active>,
    bad_requests: LogLimiter,
}

impl Rng {
    /// A new, inactive device.
    pub fn new() -> Self {
        Rng {
            active: None,
            bad_requests: LogLimiter::default(),
        }
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

/// Fills `buf` from the host's entropy pool.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`,
        // which we own exclusively.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Fills the chain's device-writable buffers, up to
/// [`MAX_BYTES_PER_REQUEST`]; returns how many bytes were written.
/// Device-readable buffers are skipped; a buffer outside guest memory ends
/// the request with what was written before it.
fn fill_request(chain: Chain<'_>, memory: &GuestMemoryMmap) -> Result<u32, String> {
    let mut written = 0usize;
    let mut chunk = [0u8; 4096];
    for desc in chain {
        if !desc.is_write_only() {
            return Err(format!(
                "descriptor at {:#x} is device-readable",
                desc.addr().0
            ));
        }
        let mut addr = desc.addr();
        let mut left = (desc.len() as usize).min(MAX_BYTES_PER_REQUEST - written);
        while left > 0 {
            let n = left.min(chunk.len());
            getrandom(&mut chunk[..n]).map_err(|e| format!("getrandom: {e}"))?;
            memory
                .write_slice(&chunk[..n], addr)
                .map_err(|e| format!("buffer at {:#x}: {e}", addr.0))?;
            written += n;
            left -= n;
            addr = addr
                .checked_add(n as u64)
                .ok_or_else(|| "buffer wraps around the address space".to_string())?;
        }
        if written == MAX_BYTES_PER_REQUEST {
            break;
        }
    }
    Ok(written as u32)
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VERSION_1 | (1 << super::VIRTIO_RING_F_EVENT_IDX)
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        data.fill(0);
    }

    fn activate(
        &mut self,
        memory: GuestMemoryMmap,
        mut queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
        _fds: &mut FdWatch,
    ) -> Result<(), ActivateError> {
        let queue = queues.swap_remove(0);
        if !virtio_queue::QueueT::ready(&queue) {
            return Err(ActivateError::QueueNotReady { index: 0 });
        }
        self.active = Some(Active {
            memory,
            queue,
            interrupt,
        });
        Ok(())
    }

    fn queue_notified(&mut self, _index: usize, _fds: &mut FdWatch) {
        let Some(active) = &mut self.active else {
            return;
        };
        let memory = active.memory.clone();
        let limiter = &self.bad_requests;
        let result = drain_queue(
            &mut active.queue,
            &memory,
            active.interrupt.as_ref(),
            |chain| match fill_request(chain, &memory) {
                Ok(written) => written,
                Err(why) => {
                    if let Some(count) = limiter.hit() {
                        warn!("virtio-rng: bad request: {why} ({count} so far)");
                    }
                    0
                }
            },
        );
        if let Err(e) = result {
            active
                .interrupt
                .device_broken(&format!("virtio-rng request queue: {e}"));
            self.active = None;
        }
    }

    fn reset(&mut self, _fds: &mut FdWatch) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::virtio::test_utils::CountingInterrupt;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
    }

    fn active_rng(
        memory: &GuestMemoryMmap,
        mock: &MockSplitQueue<GuestMemoryMmap>,
    ) -> (Rng, Arc<CountingInterrupt>) {
        let interrupt = Arc::new(CountingInterrupt::default());
        let mut rng = Rng::new();
        rng.activate(
            memory.clone(),
            vec![mock.create_queue().unwrap()],
            interrupt.clone(),
            &mut FdWatch::default(),
        )
        .unwrap();
        (rng, interrupt)
    }

    fn used_len(mock: &MockSplitQueue<GuestMemoryMmap>, index: u16) -> u32 {
        mock.used()
            .ring()
            .ref_at(index.into())
            .unwrap()
            .load()
            .len()
    }

    #[test]
    fn fills_writable_buffers_with_random_bytes() {
        let memory = memory();
        let mock = MockSplitQueue::new(&memory, 16);
        let chain = [
            RawDescriptor::from(Descriptor::new(
                0x10_0000,
                512,
                VRING_DESC_F_WRITE as u16,
                0,
            )),
            RawDescriptor::from(Descriptor::new(
                0x10_1000,
                512,
                VRING_DESC_F_WRITE as u16,
                0,
            )),
        ];
        mock.build_desc_chain(&chain).unwrap();
        let (mut rng, interrupt) = active_rng(&memory, &mock);
        rng.queue_notified(0, &mut FdWatch::default());
        assert_eq!(used_len(&mock, 0), 1024);
        assert_eq!(interrupt.used(), 1);
        let mut bytes = [0u8; 512];
        memory
            .read_slice(&mut bytes, GuestAddress(0x10_1000))
            .unwrap();
        assert!(bytes.iter().any(|&b| b != 0), "no random bytes written");
        assert!(interrupt.broken().is_empty());
    }

    #[test]
    fn a_read_only_or_unmapped_buffer_completes_with_what_was_written() {
        let memory = memory();
        let mock = MockSplitQueue::new(&memory, 16);
        // Device-readable: nothing written.
        let chain = [RawDescriptor::from(Descriptor::new(0x10_0000, 64, 0, 0))];
        mock.build_desc_chain(&chain).unwrap();
        let (mut rng, interrupt) = active_rng(&memory, &mock);
        rng.queue_notified(0, &mut FdWatch::default());
        assert_eq!(used_len(&mock, 0), 0);
        // Past the end of guest memory: nothing written, no panic.
        let chain = [RawDescriptor::from(Descriptor::new(
            0x1f_ff00,
            0x1000,
            VRING_DESC_F_WRITE as u16,
            0,
        ))];
        mock.add_desc_chains(&chain, 1).unwrap();
        rng.queue_notified(0, &mut FdWatch::default());
        assert_eq!(used_len(&mock, 1), 0);
        assert!(interrupt.broken().is_empty());
    }

    #[test]
    fn a_huge_buffer_gets_at_most_the_request_limit() {
        let memory = memory();
        let mock = MockSplitQueue::new(&memory, 16);
        let chain = [RawDescriptor::from(Descriptor::new(
            0x10_0000,
            0x10_0000,
            VRING_DESC_F_WRITE as u16,
            0,
        ))];
        mock.build_desc_chain(&chain).unwrap();
        let (mut rng, _) = active_rng(&memory, &mock);
        rng.queue_notified(0, &mut FdWatch::default());
        assert_eq!(used_len(&mock, 0) as usize, MAX_BYTES_PER_REQUEST);
    }

    #[test]
    fn a_runaway_available_index_breaks_the_device() {
        let memory = memory();
        let mock = MockSplitQueue::new(&memory, 16);
        let (mut rng, interrupt) = active_rng(&memory, &mock);
        // 100 chains available in a 16-entry queue.
        mock.avail().idx().store(100);
        rng.queue_notified(0, &mut FdWatch::default());
        assert_eq!(interrupt.broken().len(), 1, "{:?}", interrupt.broken());
        // Inactive now: later notifications do nothing.
        rng.queue_notified(0, &mut FdWatch::default());
        assert_eq!(interrupt.broken().len(), 1);
        let _ = mock.create_queue::<Queue>().unwrap().iter(&memory);
    }

    #[test]
    fn notifications_before_activation_are_ignored() {
        let mut rng = Rng::new();
        rng.queue_notified(0, &mut FdWatch::default());
        assert_eq!(rng.device_type(), 4);
    }
}
