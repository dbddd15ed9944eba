//! The device end to end: requests through a mock queue against a real
//! temporary image file, whose bytes are read back from the file.

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::virtio::block::test_support::*;
use crate::virtio::block::{DiskBackend, MemoryDisk, RequestContext};
use crate::virtio::test_utils::CountingInterrupt;

const SECTORS: u64 = 64;
const UNTOUCHED: u8 = 0xee;

/// A device on `image`, all its features negotiated, active on a mock
/// queue.
struct Rig<'a> {
    block: Block,
    memory: &'a GuestMemoryMmap,
    mock: MockSplitQueue<'a, GuestMemoryMmap>,
    interrupt: Arc<CountingInterrupt>,
    submitted: u16,
}

impl<'a> Rig<'a> {
    fn new(memory: &'a GuestMemoryMmap, block: Block) -> Rig<'a> {
        let mut rig = Rig {
            block,
            memory,
            mock: MockSplitQueue::new(memory, 256),
            interrupt: Arc::new(CountingInterrupt::default()),
            submitted: 0,
        };
        let features = rig.block.features();
        rig.block.ack_features(features);
        rig.activate();
        rig
    }

    fn activate(&mut self) {
        self.block
            .activate(
                self.memory.clone(),
                vec![self.mock.create_queue().unwrap()],
                self.interrupt.clone(),
                &mut FdWatch::default(),
            )
            .unwrap();
    }

    /// Submits `descs` as one chain, notifies the device, and returns the
    /// chain's used length and the status byte. The status byte starts as
    /// [`UNTOUCHED`].
    fn run(&mut self, descs: &[RawDescriptor]) -> (u32, u8) {
        self.memory
            .write_slice(&[UNTOUCHED], GuestAddress(STATUS))
            .unwrap();
        let first = self.submitted * 8;
        let linked: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let d = Descriptor::from(*raw);
                let last = i + 1 == descs.len();
                let flags = if last {
                    d.flags()
                } else {
                    d.flags() | VRING_DESC_F_NEXT as u16
                };
                RawDescriptor::from(Descriptor::new(
                    d.addr().0,
                    d.len(),
                    flags,
                    first + i as u16 + 1,
                ))
            })
            .collect();
        self.mock.add_desc_chains(&linked, first).unwrap();
        self.block.queue_notified(0, &mut FdWatch::default());
        let used = self
            .mock
            .used()
            .ring()
            .ref_at(self.submitted.into())
            .unwrap()
            .load();
        assert_eq!(used.id(), u32::from(first), "completed the wrong chain");
        self.submitted += 1;
        assert_eq!(self.mock.used().idx().load(), self.submitted);
        let mut status = [0u8];
        self.memory
            .read_slice(&mut status, GuestAddress(STATUS))
            .unwrap();
        (used.len(), status[0])
    }
}

fn guest_bytes(m: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    m.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

#[test]
fn a_read_returns_the_files_bytes() {
    let image = TempImage::new(SECTORS * 512);
    let m = memory();
    let mut rig = Rig::new(&m, Block::new(&image.config(false)).unwrap());
    let descs = [
        header(&m, VIRTIO_BLK_T_IN, 3),
        writable(DATA, 1024),
        writable(DATA + 0x1_0000, 512),
        status(),
    ];
    assert_eq!(rig.run(&descs), (1024 + 512 + 1, OK));
    let file = image.bytes();
    assert_eq!(guest_bytes(&m, DATA, 1024), file[3 * 512..5 * 512]);
    assert_eq!(
        guest_bytes(&m, DATA + 0x1_0000, 512),
        file[5 * 512..6 * 512]
    );
    assert_eq!(rig.interrupt.used(), 1);
    assert!(rig.interrupt.broken().is_empty());
}

#[test]
fn a_write_lands_in_its_sectors_and_nowhere_else() {
    let image = TempImage::new(SECTORS * 512);
    let before = image.bytes();
    let m = memory();
    let mut rig = Rig::new(&m, Block::new(&image.config(false)).unwrap());
    let data: Vec<u8> = (0..1536u32).map(|i| (i * 7) as u8).collect();
    m.write_slice(&data[..1024], GuestAddress(DATA)).unwrap();
    m.write_slice(&data[1024..], GuestAddress(DATA + 0x2_0000))
        .unwrap();
    let descs = [
        header(&m, VIRTIO_BLK_T_OUT, 10),
        readable(DATA, 1024),
        readable(DATA + 0x2_0000, 512),
        status(),
    ];
    assert_eq!(rig.run(&descs), (1, OK));
    let after = image.bytes();
    assert_eq!(after.len(), before.len());
    assert_eq!(after[10 * 512..13 * 512], data[..]);
    assert_eq!(after[..10 * 512], before[..10 * 512]);
    assert_eq!(after[13 * 512..], before[13 * 512..]);
}

#[test]
fn flush_and_get_id_complete() {
    let image = TempImage::new(SECTORS * 512);
    let m = memory();
    let config = BlockConfig {
        id: Some("node-7-root".to_string()),
        ..image.config(false)
    };
    let mut rig = Rig::new(&m, Block::new(&config).unwrap());
    assert_eq!(
        rig.run(&[header(&m, VIRTIO_BLK_T_FLUSH, 0), status()]),
        (1, OK)
    );

    m.write_slice(&[UNTOUCHED; 64], GuestAddress(DATA)).unwrap();
    let descs = [
        header(&m, VIRTIO_BLK_T_GET_ID, 0),
        writable(DATA, 32),
        status(),
    ];
    assert_eq!(rig.run(&descs), (20 + 1, OK));
    let mut expected = b"node-7-root".to_vec();
    expected.resize(20, 0);
    assert_eq!(guest_bytes(&m, DATA, 20), expected);
    assert_eq!(guest_bytes(&m, DATA + 20, 12), [UNTOUCHED; 12]);

    // A short buffer gets what fits, across descriptors.
    m.write_slice(&[UNTOUCHED; 64], GuestAddress(DATA)).unwrap();
    let descs = [
        header(&m, VIRTIO_BLK_T_GET_ID, 0),
        writable(DATA, 4),
        writable(DATA + 32, 3),
        status(),
    ];
    assert_eq!(rig.run(&descs), (7 + 1, OK));
    assert_eq!(guest_bytes(&m, DATA, 5), b"node\xee");
    assert_eq!(guest_bytes(&m, DATA + 32, 4), b"-7-\xee");
}

#[test]
fn discard_and_write_zeroes_clear_their_sectors_only() {
    let image = TempImage::new(SECTORS * 512);
    let before = image.bytes();
    let m = memory();
    let mut rig = Rig::new(&m, Block::new(&image.config(false)).unwrap());
    let cases = [
        (VIRTIO_BLK_T_DISCARD, 8, 8, 0),
        (VIRTIO_BLK_T_WRITE_ZEROES, 20, 3, 0),
        (
            VIRTIO_BLK_T_WRITE_ZEROES,
            32,
            9,
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
        ),
    ];
    for (request_type, sector, sectors, flags) in cases {
        let descs = [
            header(&m, request_type, 0),
            segment(&m, sector, sectors, flags),
            status(),
        ];
        assert_eq!(rig.run(&descs), (1, OK), "type {request_type}");
    }
    let after = image.bytes();
    assert_eq!(after.len(), before.len(), "the file's size changed");
    let cleared = [(8..16), (20..23), (32..41)];
    for sector in 0..SECTORS as usize {
        let range = sector * 512..(sector + 1) * 512;
        // A discarded range may read as anything; on a file system that
        // punches holes (every one we run on) it reads as zeroes.
        if cleared.iter().any(|r| r.contains(&sector)) {
            assert!(after[range].iter().all(|&b| b == 0), "sector {sector}");
        } else {
            assert_eq!(after[range.clone()], before[range], "sector {sector}");
        }
    }
}

#[test]
fn a_read_only_disk_refuses_writes_and_serves_reads() {
    let image = TempImage::new(SECTORS * 512);
    let before = image.bytes();
    let m = memory();
    let block = Block::new(&image.config(true)).unwrap();
    let features = block.features();
    assert_ne!(features & 1 << VIRTIO_BLK_F_RO, 0);
    assert_eq!(features & 1 << VIRTIO_BLK_F_DISCARD, 0);
    assert_eq!(features & 1 << VIRTIO_BLK_F_WRITE_ZEROES, 0);
    let mut rig = Rig::new(&m, block);
    // The driver ignoring RO changes nothing.
    rig.block.ack_features(features & !(1 << VIRTIO_BLK_F_RO));
    m.write_slice(&[1; 512], GuestAddress(DATA)).unwrap();
    let write = [
        header(&m, VIRTIO_BLK_T_OUT, 0),
        readable(DATA, 512),
        status(),
    ];
    assert_eq!(rig.run(&write), (1, IOERR));
    let discard = [
        header(&m, VIRTIO_BLK_T_DISCARD, 0),
        segment(&m, 0, 1, 0),
        status(),
    ];
    assert_eq!(rig.run(&discard), (1, IOERR));
    assert_eq!(image.bytes(), before);
    let read = [
        header(&m, VIRTIO_BLK_T_IN, 1),
        writable(DATA, 512),
        status(),
    ];
    assert_eq!(rig.run(&read), (513, OK));
    assert_eq!(guest_bytes(&m, DATA, 512), before[512..1024]);
}

#[test]
fn bad_requests_get_an_error_status_or_nothing() {
    let image = TempImage::new(SECTORS * 512);
    let before = image.bytes();
    let m = memory();
    let mut rig = Rig::new(&m, Block::new(&image.config(false)).unwrap());
    m.write_slice(&[UNTOUCHED; 1024], GuestAddress(DATA))
        .unwrap();
    let past_the_end = [
        header(&m, VIRTIO_BLK_T_OUT, SECTORS - 1),
        readable(DATA, 1024),
        status(),
    ];
    assert_eq!(rig.run(&past_the_end), (1, IOERR));
    let unknown = [header(&m, 0x77, 0), status()];
    assert_eq!(rig.run(&unknown), (1, UNSUPP));
    // A read-only status: nothing written, used length 0.
    let no_status = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(DATA, 512),
        readable(STATUS, 1),
    ];
    assert_eq!(rig.run(&no_status), (0, UNTOUCHED));
    assert_eq!(guest_bytes(&m, DATA, 512), [UNTOUCHED; 512]);
    assert_eq!(image.bytes(), before);
    assert!(rig.interrupt.broken().is_empty());
}

#[test]
fn reset_keeps_the_image_open_and_locked() {
    let image = TempImage::new(SECTORS * 512);
    let m = memory();
    let mut rig = Rig::new(&m, Block::new(&image.config(false)).unwrap());
    rig.block.reset(&mut FdWatch::default());
    // Inactive: a notification completes nothing.
    rig.block.queue_notified(0, &mut FdWatch::default());
    assert_eq!(rig.mock.used().idx().load(), 0);
    assert!(matches!(
        Block::new(&image.config(false)),
        Err(BlockError::Locked { .. })
    ));
    rig.activate();
    let read = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(DATA, 512),
        status(),
    ];
    assert_eq!(rig.run(&read), (513, OK));
}

#[test]
fn a_runaway_available_index_breaks_the_device() {
    let image = TempImage::new(SECTORS * 512);
    let m = memory();
    let mut rig = Rig::new(&m, Block::new(&image.config(false)).unwrap());
    rig.mock.avail().idx().store(1000);
    rig.block.queue_notified(0, &mut FdWatch::default());
    assert_eq!(rig.interrupt.broken().len(), 1);
    rig.block.queue_notified(0, &mut FdWatch::default());
    assert_eq!(rig.interrupt.broken().len(), 1);
}

#[test]
fn the_config_space_is_at_the_spec_offsets() {
    let image = TempImage::new(SECTORS * 512);
    let block = Block::new(&image.config(false)).unwrap();
    let u32_at = |offset| {
        let mut b = [0u8; 4];
        block.read_config(offset, &mut b);
        u32::from_le_bytes(b)
    };
    let mut capacity = [0u8; 8];
    block.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), SECTORS);
    // virtio 1.2, 5.2.4.
    assert_eq!(u32_at(8), SIZE_MAX);
    assert_eq!(u32_at(12), SEG_MAX);
    assert_eq!(u32_at(36), MAX_DISCARD_SECTORS);
    assert_eq!(u32_at(40), 1);
    assert!(u32_at(44) >= 1);
    assert_eq!(u32_at(48), MAX_WRITE_ZEROES_SECTORS);
    assert_eq!(u32_at(52), 1);
    let mut unmap = [0u8; 1];
    block.read_config(56, &mut unmap);
    assert_eq!(unmap, [1]);
    assert_eq!(u32_at(60), 0, "past the end reads as zero");
    let features = block.features();
    for bit in [
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_SIZE_MAX,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
        VIRTIO_RING_F_EVENT_IDX,
    ] {
        assert_ne!(features & 1 << bit, 0, "feature bit {bit}");
    }
    assert_eq!(features & 1 << VIRTIO_BLK_F_RO, 0);
    assert_ne!(features & VERSION_1, 0);
    assert_eq!(block.device_type(), 2);
}

#[test]
fn without_a_negotiated_flush_writes_are_written_through() {
    let m = memory();
    let mock = MockSplitQueue::new(&m, 16);
    let id = [0u8; 20];
    for (features, flushes) in [(0, 1), (1 << VIRTIO_BLK_F_FLUSH, 0)] {
        let mut disk = MemoryDisk::new(8);
        let mut bounce = Vec::new();
        let mut ctx = RequestContext {
            backend: &mut disk,
            capacity_sectors: 8,
            features,
            id: &id,
            bounce: &mut bounce,
        };
        m.write_slice(&[9; 512], GuestAddress(DATA)).unwrap();
        let chain = mock
            .build_desc_chain(&[
                header(&m, VIRTIO_BLK_T_OUT, 2),
                readable(DATA, 512),
                status(),
            ])
            .unwrap();
        let completion = process_request(chain, &m, &mut ctx);
        assert!(completion.error.is_none(), "{:?}", completion.error);
        assert_eq!(disk.flushes, flushes, "features {features:#x}");
        assert_eq!(disk.bytes[1024..1536], [9; 512]);
    }
}

#[test]
fn a_read_failing_part_way_reports_what_was_written() {
    let m = memory();
    let mock = MockSplitQueue::new(&m, 16);
    let id = [0u8; 20];
    // The backend holds 2 sectors though the disk claims 4.
    let mut disk = MemoryDisk::new(2);
    disk.write_at(&[5; 1024], 0).unwrap();
    let mut bounce = Vec::new();
    let mut ctx = RequestContext {
        backend: &mut disk,
        capacity_sectors: 4,
        features: 0,
        id: &id,
        bounce: &mut bounce,
    };
    let chain = mock
        .build_desc_chain(&[
            header(&m, VIRTIO_BLK_T_IN, 0),
            writable(DATA, 1024),
            writable(DATA + 0x1000, 1024),
            status(),
        ])
        .unwrap();
    let completion = process_request(chain, &m, &mut ctx);
    assert_eq!(completion.used_len, 1024 + 1);
    assert!(matches!(
        completion.error,
        Some(HandlerError::Backend { op: "read", .. })
    ));
    assert_eq!(guest_bytes(&m, STATUS, 1), [IOERR]);
    assert_eq!(guest_bytes(&m, DATA, 1024), [5; 1024]);
}
