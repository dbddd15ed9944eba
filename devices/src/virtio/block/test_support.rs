//! Helpers shared by the virtio-blk unit tests: guest memory, descriptors,
//! request headers and segments, and temporary image files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_queue::mock::MockSplitQueue;

use super::request::{parse, Reason, Request, RequestError};
use super::BlockConfig;

/// Where [`header`] puts the request header.
pub(crate) const HEADER: u64 = 0x10_0000;
/// Where tests put data buffers.
pub(crate) const DATA: u64 = 0x11_0000;
/// Where [`segment`] puts a discard / write-zeroes segment.
pub(crate) const SEGMENT: u64 = 0x1e_0000;
/// The status byte of [`status`].
pub(crate) const STATUS: u64 = 0x1f_0000;

/// The disk size [`parse_chain`] parses for.
pub(crate) const CAPACITY: u64 = 1024;
/// The features [`parse_chain`] parses with.
pub(crate) const FEATURES: u64 =
    1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;

/// 2 MiB of guest memory from address 0.
pub(crate) fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
}

pub(crate) fn readable(addr: u64, len: u32) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, 0, 0))
}

pub(crate) fn writable(addr: u64, len: u32) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, VRING_DESC_F_WRITE as u16, 0))
}

/// Writes a request header at `at`.
pub(crate) fn write_header(m: &GuestMemoryMmap, at: u64, request_type: u32, sector: u64) {
    let mut raw = [0u8; 16];
    raw[0..4].copy_from_slice(&request_type.to_le_bytes());
    raw[4..8].copy_from_slice(&7u32.to_le_bytes()); // ioprio, ignored
    raw[8..16].copy_from_slice(&sector.to_le_bytes());
    m.write_slice(&raw, GuestAddress(at)).unwrap();
}

/// The header of a request of `request_type` at `sector`, at [`HEADER`].
pub(crate) fn header(m: &GuestMemoryMmap, request_type: u32, sector: u64) -> RawDescriptor {
    write_header(m, HEADER, request_type, sector);
    readable(HEADER, 16)
}

/// A discard / write-zeroes segment at [`SEGMENT`], and its descriptor.
pub(crate) fn segment(m: &GuestMemoryMmap, sector: u64, sectors: u32, flags: u32) -> RawDescriptor {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&sector.to_le_bytes());
    raw[8..12].copy_from_slice(&sectors.to_le_bytes());
    raw[12..16].copy_from_slice(&flags.to_le_bytes());
    m.write_slice(&raw, GuestAddress(SEGMENT)).unwrap();
    readable(SEGMENT, 16)
}

/// A 1-byte device-writable status descriptor at [`STATUS`].
pub(crate) fn status() -> RawDescriptor {
    writable(STATUS, 1)
}

/// A file in the temporary directory, removed when dropped.
pub(crate) struct TempImage {
    pub(crate) path: PathBuf,
}

impl TempImage {
    /// A file of `size` bytes, byte `i` being `pattern(i)`.
    pub(crate) fn new(size: u64) -> TempImage {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "mercury-blk-test-{}-{}.img",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let bytes: Vec<u8> = (0..size).map(pattern).collect();
        std::fs::write(&path, bytes).unwrap();
        TempImage { path }
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    pub(crate) fn config(&self, read_only: bool) -> BlockConfig {
        BlockConfig {
            path: self.path.clone(),
            read_only,
            id: None,
        }
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) fn pattern(i: u64) -> u8 {
    (i % 251) as u8 ^ (i / 512) as u8
}

/// Parses `descs`, put in a queue as one chain, on a `capacity`-sector disk.
pub(crate) fn parse_on(
    memory: &GuestMemoryMmap,
    descs: &[RawDescriptor],
    capacity: u64,
    features: u64,
) -> Result<Request, RequestError> {
    let mock = MockSplitQueue::new(memory, 256);
    let chain = mock.build_desc_chain(descs).unwrap();
    parse(chain, memory, capacity, features)
}

pub(crate) fn parse_chain(
    memory: &GuestMemoryMmap,
    descs: &[RawDescriptor],
) -> Result<Request, RequestError> {
    parse_on(memory, descs, CAPACITY, FEATURES)
}

/// Asserts the chain is refused for `reason`, with the status byte at
/// [`STATUS`] and status code `code`.
#[track_caller]
pub(crate) fn assert_refused(result: Result<Request, RequestError>, reason: Reason, code: u32) {
    let error = result.unwrap_err();
    assert_eq!(error.reason, reason, "{error}");
    assert_eq!(error.status, Some(GuestAddress(STATUS)));
    assert_eq!(u32::from(error.status_code()), code);
}

/// Asserts the chain is refused for `reason` without a usable status.
#[track_caller]
pub(crate) fn assert_no_status(result: Result<Request, RequestError>, reason: Reason) {
    let error = result.unwrap_err();
    assert_eq!(error.reason, reason, "{error}");
    assert_eq!(error.status, None);
}
