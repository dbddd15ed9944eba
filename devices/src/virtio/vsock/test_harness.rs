//! The harness of the end-to-end tests: real Unix sockets in a temporary
//! directory, a guest driver simulated on `MockSplitQueue`s, and a small
//! epoll loop that applies the device's [`FdWatch`] changes as the VMM's
//! event handler would.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent};

use super::packet::{op, Header, Packet, HOST_CID, TYPE_STREAM};
use super::*;
use crate::virtio::test_utils::CountingInterrupt;
use crate::virtio::{FdChange, FdWatch, VirtioDevice};

pub(super) const CID: u64 = 3;
pub(super) const RX_BUF: u32 = 4096;

/// A unique, self-removing temporary directory.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "mercury-vsock-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One virtqueue as the guest driver sees it.
pub(super) struct GuestQueue {
    pub(super) mock: MockSplitQueue<'static, GuestMemoryMmap>,
    pub(super) buffers: u64,
    pub(super) buf_size: u64,
    pub(super) next_slot: u16,
    pub(super) next_used: u16,
}

impl GuestQueue {
    pub(super) fn new(
        memory: &'static GuestMemoryMmap,
        ring: u64,
        buffers: u64,
        buf_size: u64,
    ) -> Self {
        GuestQueue {
            mock: MockSplitQueue::create(memory, GuestAddress(ring), QUEUE_SIZE),
            buffers,
            buf_size,
            next_slot: 0,
            next_used: 0,
        }
    }

    pub(super) fn slot_addr(&self, slot: u16) -> u64 {
        self.buffers + u64::from(slot) * self.buf_size
    }

    /// Makes one chain of one descriptor available; returns its address.
    pub(super) fn add(&mut self, len: u32, writable: bool) -> u64 {
        let slot = self.next_slot;
        self.next_slot = (slot + 1) % QUEUE_SIZE;
        let addr = self.slot_addr(slot);
        let flags = if writable {
            VRING_DESC_F_WRITE as u16
        } else {
            0
        };
        let desc = RawDescriptor::from(Descriptor::new(addr, len, flags, 0));
        self.mock.add_desc_chains(&[desc], slot).unwrap();
        addr
    }

    /// Used entries since the last call: (descriptor slot, length).
    pub(super) fn take_used(&mut self) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        let idx = self.mock.used().idx().load();
        while self.next_used != idx {
            let elem = self
                .mock
                .used()
                .ring()
                .ref_at(usize::from(self.next_used % QUEUE_SIZE))
                .unwrap()
                .load();
            out.push((elem.id() as u16, elem.len()));
            self.next_used = self.next_used.wrapping_add(1);
        }
        out
    }
}

pub(super) struct Harness {
    pub(super) memory: &'static GuestMemoryMmap,
    pub(super) rx: GuestQueue,
    pub(super) tx: GuestQueue,
    pub(super) dev: Vsock,
    pub(super) irq: Arc<CountingInterrupt>,
    pub(super) epoll: Epoll,
    pub(super) path: PathBuf,
    /// Guest-side credit: bytes of RX payload the guest has "read".
    pub(super) guest_fwd_cnt: u32,
    pub(super) guest_buf_alloc: u32,
    pub(super) _dir: TempDir,
}

impl Harness {
    pub(super) fn new() -> Self {
        let dir = TempDir::new();
        let path = dir.0.join("v.sock");
        let memory: &'static GuestMemoryMmap = Box::leak(Box::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x200_0000)]).unwrap(),
        ));
        let rx = GuestQueue::new(memory, 0, 0x10_0000, 0x2000);
        let tx = GuestQueue::new(memory, 0x1_0000, 0x40_0000, 0x1_1000);
        let event = MockSplitQueue::create(memory, GuestAddress(0x2_0000), QUEUE_SIZE);
        let mut dev = Vsock::new(&VsockConfig {
            guest_cid: CID,
            uds_path: path.clone(),
        })
        .unwrap();
        let epoll = Epoll::new().unwrap();
        for (fd, events) in dev.host_fds() {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(events, fd as u64),
                )
                .unwrap();
        }
        let irq = Arc::new(CountingInterrupt::default());
        let queues = vec![
            rx.mock.create_queue().unwrap(),
            tx.mock.create_queue().unwrap(),
            event.create_queue().unwrap(),
        ];
        let mut fds = FdWatch::default();
        dev.activate(memory.clone(), queues, irq.clone(), &mut fds)
            .unwrap();
        let mut h = Harness {
            memory,
            rx,
            tx,
            dev,
            irq,
            epoll,
            path,
            guest_fwd_cnt: 0,
            guest_buf_alloc: 64 << 10,
            _dir: dir,
        };
        h.apply(fds);
        h
    }

    pub(super) fn apply(&mut self, fds: FdWatch) {
        for change in fds.changes {
            // As the event handler does, failures (an fd already gone)
            // are ignored.
            let _ = match change {
                FdChange::Add(fd, ev) => {
                    self.epoll
                        .ctl(ControlOperation::Add, fd, EpollEvent::new(ev, fd as u64))
                }
                FdChange::Modify(fd, ev) => {
                    self.epoll
                        .ctl(ControlOperation::Modify, fd, EpollEvent::new(ev, fd as u64))
                }
                FdChange::Remove(fd) => {
                    self.epoll
                        .ctl(ControlOperation::Delete, fd, EpollEvent::default())
                }
            };
        }
    }

    /// One round of the event loop; returns whether any fd was ready.
    pub(super) fn pump(&mut self, timeout_ms: i32) -> bool {
        let mut events = [EpollEvent::default(); 16];
        let n = self.epoll.wait(timeout_ms, &mut events).unwrap();
        for ev in &events[..n] {
            let mut fds = FdWatch::default();
            self.dev.host_event(ev.fd(), ev.event_set(), &mut fds);
            self.apply(fds);
        }
        n > 0
    }

    /// Runs the event loop until `done` or a 5 s deadline.
    pub(super) fn pump_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.pump(20);
        }
    }

    pub(super) fn header(&self, op: u16, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: self.guest_buf_alloc,
            fwd_cnt: self.guest_fwd_cnt,
        }
    }

    pub(super) fn send(&mut self, mut header: Header, data: &[u8]) {
        header.len = data.len() as u32;
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(data);
        let addr = self.tx.add(bytes.len() as u32, false);
        self.memory.write_slice(&bytes, GuestAddress(addr)).unwrap();
        let mut fds = FdWatch::default();
        self.dev.queue_notified(TX_QUEUE, &mut fds);
        self.apply(fds);
        assert!(self.irq.broken().is_empty(), "{:?}", self.irq.broken());
    }

    pub(super) fn give_rx(&mut self, n: usize) {
        for _ in 0..n {
            self.rx.add(RX_BUF, true);
        }
        let mut fds = FdWatch::default();
        self.dev.queue_notified(RX_QUEUE, &mut fds);
        self.apply(fds);
    }

    /// Packets the device put in RX buffers since the last call; their
    /// payload counts as read by the guest (`guest_fwd_cnt`).
    pub(super) fn recv(&mut self) -> Vec<Packet> {
        let used = self.rx.take_used();
        used.into_iter()
            .map(|(slot, len)| {
                let mut bytes = vec![0u8; len as usize];
                let addr = self.rx.slot_addr(slot);
                self.memory
                    .read_slice(&mut bytes, GuestAddress(addr))
                    .unwrap();
                let header = Header::from_bytes(bytes[..44].try_into().unwrap());
                assert_eq!((header.src_cid, header.dst_cid), (HOST_CID, CID));
                assert_eq!(header.len as usize, bytes.len() - 44);
                self.guest_fwd_cnt += header.len;
                Packet {
                    header,
                    data: bytes[44..].to_vec(),
                }
            })
            .collect()
    }

    pub(super) fn recv_until(
        &mut self,
        what: &str,
        mut want: impl FnMut(&Packet) -> bool,
    ) -> Vec<Packet> {
        let mut got = Vec::new();
        self.pump_until(what, |h| {
            got.extend(h.recv());
            got.iter().any(&mut want)
        });
        got
    }

    pub(super) fn host_connect(&mut self, port: u32) -> UnixStream {
        let mut s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        writeln!(s, "CONNECT {port}").unwrap();
        s
    }
}

pub(super) fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

pub(super) fn data_of(pkts: &[Packet]) -> Vec<u8> {
    pkts.iter()
        .filter(|p| p.header.op == op::RW)
        .flat_map(|p| p.data.clone())
        .collect()
}
