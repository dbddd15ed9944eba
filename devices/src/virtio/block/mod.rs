//! virtio-blk (virtio 1.2, 5.2): a raw disk image behind one request queue.
//!
//! - [`device`]: the configuration space, the features offered and the
//!   [`VirtioDevice`](super::VirtioDevice) implementation ([`Block`]).
//! - [`request`]: parsing a descriptor chain into a typed [`Request`]; pure,
//!   and the entry point of the fuzz target.
//! - [`backend`]: the image file (open, lock, read, write, flush, discard,
//!   write zeroes) behind the small [`DiskBackend`] trait, with an in-memory
//!   backend for tests and the fuzzer.
//! - [`handler`]: one request end to end: parse, execute, status, used
//!   length.
//!
//! I/O is synchronous, on the VMM thread, through a bounce buffer: guest
//! memory is only reached through `vm-memory`'s checked accessors.

pub mod backend;
pub mod device;
pub mod handler;
pub mod request;
#[cfg(test)]
mod test_support;

pub use backend::{DiskBackend, ImageFile, MemoryDisk};
pub use device::{Block, BlockConfig, BlockError};
pub use handler::{process_request, Completion, HandlerError, RequestContext};
pub use request::{parse, Reason, Request, RequestError, RequestKind, Segment};

/// The sector size of the virtio-blk protocol: every offset and length in a
/// request counts in 512-byte sectors, whatever the image's block size.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes of the GET_ID string (virtio 1.2, 5.2.6).
pub const ID_BYTES: usize = virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES as usize;
/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most data descriptors in one request (config `seg_max`). Half the queue,
/// so two requests of the largest size fit in the ring at once.
pub const SEG_MAX: u32 = 128;
/// Largest data descriptor (config `size_max`).
pub const SIZE_MAX: u32 = 256 << 10;
/// Most data bytes in one read or write request: what bounds the work one
/// guest request costs the VMM thread (32 MiB).
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// Most sectors in one discard (config `max_discard_sectors`, 1 GiB): a
/// hole punch is cheap.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;
/// Most sectors in one write-zeroes request (config
/// `max_write_zeroes_sectors`, 32 MiB): where the file system cannot
/// zero a range, the zeroes are written, and that costs like a write.
pub const MAX_WRITE_ZEROES_SECTORS: u32 = (MAX_REQUEST_BYTES / SECTOR_SIZE) as u32;
