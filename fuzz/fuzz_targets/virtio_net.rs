//! Guest-controlled virtio-net traffic: a TX chain of any shape (addresses
//! around two RAM regions and a hole, any lengths and directions) over any
//! guest memory contents, and a host frame of any bytes delivered into RX
//! buffers of any shape. The device must not panic or hang, and hands the
//! backend at most one frame per TX chain.
#![no_main]

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use devices::virtio::net::{Backend, Net};
use devices::virtio::{FdWatch, VirtioDevice, VirtioInterrupt};
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// RX frames come from the fuzzer; TX frames are counted.
struct FakeTap {
    rx: Option<Vec<u8>>,
    tx_frames: Arc<Mutex<usize>>,
}

impl Backend for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.rx.take() {
            Some(frame) => {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        *self.tx_frames.lock().unwrap() += 1;
        Ok(bufs.iter().map(|b| b.len()).sum())
    }
    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
    fn raw_fd(&self) -> RawFd {
        -1
    }
}

struct NoInterrupt;
impl VirtioInterrupt for NoInterrupt {
    fn signal_used_queue(&self) {}
    fn signal_config_changed(&self) {}
    fn device_broken(&self, _why: &str) {}
}

/// Descriptors from 8-byte records: addr (u32, scaled into the layout),
/// len (u16), flags (u8: bit 0 write), spare.
fn descriptors(bytes: &[u8]) -> Vec<RawDescriptor> {
    bytes
        .chunks_exact(8)
        .take(8)
        .map(|r| {
            let addr = u64::from(u32::from_le_bytes([r[0], r[1], r[2], r[3]])) % 0x30_0000;
            let len = u32::from(u16::from_le_bytes([r[4], r[5]]));
            let flags = if r[6] & 1 == 1 { 2 } else { 0 };
            RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    // 1 MiB at 0 (rings) and 1 MiB at 2 MiB: a hole between.
    let memory = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x10_0000),
        (GuestAddress(0x20_0000), 0x10_0000),
    ])
    .unwrap();
    let tx_len = usize::from(data[0] % 9) * 8;
    let rx_len = usize::from(data[1] % 9) * 8;
    let features = u64::from(data[2]) | (1 << 32);
    let rest = &data[4..];
    let (tx_part, rest) = rest.split_at(tx_len.min(rest.len()));
    let (rx_part, frame) = rest.split_at(rx_len.min(rest.len()));
    // Guest memory gets some of the fuzzer's bytes where buffers may be.
    let _ = memory.write_slice(frame, GuestAddress(0x20_0000));
    let rx = MockSplitQueue::create(&memory, GuestAddress(0x1_0000), 16);
    let tx = MockSplitQueue::create(&memory, GuestAddress(0x2_0000), 16);
    let tx_chain = descriptors(tx_part);
    if !tx_chain.is_empty() {
        let _ = tx.build_desc_chain(&tx_chain);
    }
    let rx_chain = descriptors(rx_part);
    if !rx_chain.is_empty() {
        let _ = rx.build_desc_chain(&rx_chain);
    }
    let tx_frames = Arc::new(Mutex::new(0));
    let tap = FakeTap {
        rx: Some(frame.to_vec()),
        tx_frames: tx_frames.clone(),
    };
    let mut net = Net::with_backend(Box::new(tap), "fuzz0".into(), [2, 0, 0, 0, 0, 1], 0);
    net.ack_features(features & net.features());
    let queues = vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()];
    let mut fds = FdWatch::default();
    if net.activate(memory.clone(), queues, Arc::new(NoInterrupt), &mut fds).is_err() {
        return;
    }
    net.queue_notified(1, &mut fds);
    net.host_event(-1, vmm_sys_util::epoll::EventSet::IN, &mut fds);
    net.queue_notified(0, &mut fds);
    assert!(*tx_frames.lock().unwrap() <= 1, "one TX chain became several frames");
});
