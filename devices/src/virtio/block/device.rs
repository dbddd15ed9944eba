//! The virtio-blk device: its configuration space (virtio 1.2, 5.2.4), the
//! features it offers, and its life as a [`VirtioDevice`].
//!
//! Features: `VERSION_1`, `RING_EVENT_IDX`, `SEG_MAX`, `SIZE_MAX`, `FLUSH`,
//! and either `RO` (a read-only image) or `DISCARD` and `WRITE_ZEROES` (a
//! writable one). GET_ID needs no feature and is always answered.

use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::warn;
use virtio_bindings::virtio_blk::{
    virtio_blk_config, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::backend::ImageFile;
use super::handler::{process_request, HandlerError, RequestContext, BOUNCE_LEN};
use super::request::MAX_RANGE_SEGMENTS;
use super::{
    ID_BYTES, MAX_DISCARD_SECTORS, MAX_WRITE_ZEROES_SECTORS, QUEUE_SIZE, SECTOR_SIZE, SEG_MAX,
    SIZE_MAX,
};
use crate::legacy::LogLimiter;
use crate::virtio::queue::drain_queue;
use crate::virtio::{
    device_type, read_config_bytes, ActivateError, FdWatch, VirtioDevice, VirtioInterrupt,
    VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};

/// The configuration space up to `write_zeroes_may_unmap` and its padding:
/// the secure-erase and zoned fields after it belong to features this
/// device does not offer.
const CONFIG_LEN: usize = offset_of!(virtio_blk_config, max_secure_erase_sectors);

/// What the VMM asks for: one raw image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// The image file.
    pub path: PathBuf,
    /// Open it read-only and offer `VIRTIO_BLK_F_RO`.
    pub read_only: bool,
    /// The GET_ID string (at most 20 bytes); by default derived from the
    /// file's device and inode numbers (see [`default_id`]).
    pub id: Option<String>,
}

/// Why a block device could not be created. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The path is a directory.
    #[error("disk image {path}: is a directory")]
    Directory {
        /// The image path.
        path: PathBuf,
    },
    /// The configured id does not fit the 20 bytes of GET_ID.
    #[error("disk image {path}: id {id:?} is {len} bytes; at most {ID_BYTES} fit")]
    IdTooLong {
        /// The image path.
        path: PathBuf,
        /// The id.
        id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Taking the lock failed for a reason other than a conflict.
    #[error("disk image {path}: cannot lock it: {source}")]
    Lock {
        /// The image path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another open of the image (another VM) holds a conflicting lock.
    #[error("disk image {path} is in use: locked by {holder}")]
    Locked {
        /// The image path.
        path: PathBuf,
        /// "pid N", or "another process" when it cannot be found.
        holder: String,
    },
    /// The opened file cannot be inspected.
    #[error("disk image {path}: cannot stat it: {source}")]
    Metadata {
        /// The image path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path is a device, a socket, a FIFO: not a raw image file.
    #[error("disk image {path}: not a regular file")]
    NotRegularFile {
        /// The image path.
        path: PathBuf,
    },
    /// The file cannot be opened: it does not exist, or lacks permission.
    #[error("disk image {path}: cannot open it for {access}: {source}")]
    Open {
        /// The image path.
        path: PathBuf,
        /// "reading" or "reading and writing".
        access: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's size is not a whole number of 512-byte sectors.
    #[error("disk image {path}: size {size} bytes is not a multiple of 512")]
    SizeNotSectors {
        /// The image path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// The default GET_ID string: the image file's device and inode numbers in
/// hexadecimal, `"<dev>-<ino>"`. It names the file, not the path: two paths
/// to one file give one id, a new file at the same path gets a new one.
/// When that is longer than 20 bytes (huge device numbers), it is the
/// 64-bit FNV-1a hash of the two numbers in hexadecimal instead.
pub fn default_id(device: u64, inode: u64) -> String {
    let readable = format!("{device:x}-{inode:x}");
    if readable.len() <= ID_BYTES {
        return readable;
    }
    let hash = crate::fnv1a64(device.to_le_bytes().into_iter().chain(inode.to_le_bytes()));
    format!("{hash:016x}")
}

struct Active {
    memory: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<dyn VirtioInterrupt>,
}

/// A virtio-blk device on a raw image file.
pub struct Block {
    image: ImageFile,
    id: [u8; ID_BYTES],
    config: [u8; CONFIG_LEN],
    features: u64,
    acked_features: u64,
    active: Option<Active>,
    bounce: Vec<u8>,
    bad_requests: LogLimiter,
    io_errors: LogLimiter,
}

fn put(config: &mut [u8], offset: usize, bytes: &[u8]) {
    config[offset..offset + bytes.len()].copy_from_slice(bytes);
}

impl Block {
    /// Opens and locks the image `config.path`. Fails, naming the file, when
    /// it is missing, a directory, not a regular file, cannot be opened as
    /// asked (read-only or read-write), is not a whole number of sectors,
    /// or is locked by another open (another VM); or when the id is over 20
    /// bytes.
    pub fn new(config: &BlockConfig) -> Result<Block, BlockError> {
        let image = ImageFile::open(&config.path, config.read_only)?;
        let id = match &config.id {
            Some(id) => id.clone(),
            None => {
                let (device, inode) = image.device_inode();
                default_id(device, inode)
            }
        };
        if id.len() > ID_BYTES {
            return Err(BlockError::IdTooLong {
                path: config.path.clone(),
                len: id.len(),
                id,
            });
        }
        let mut id_bytes = [0u8; ID_BYTES];
        id_bytes[..id.len()].copy_from_slice(id.as_bytes());

        let mut features = VERSION_1
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_SIZE_MAX
            | 1 << VIRTIO_BLK_F_FLUSH;
        if config.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            features |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }

        Ok(Block {
            config: config_space(&image),
            image,
            id: id_bytes,
            features,
            acked_features: 0,
            active: None,
            bounce: Vec::with_capacity(BOUNCE_LEN),
            bad_requests: LogLimiter::default(),
            io_errors: LogLimiter::default(),
        })
    }

    /// The image file.
    pub fn image(&self) -> &ImageFile {
        &self.image
    }

    /// The GET_ID string, zero-padded to 20 bytes.
    pub fn id(&self) -> &[u8; ID_BYTES] {
        &self.id
    }

    /// The features the device acts on: those negotiated, and RO whenever
    /// the image is read-only, whatever the driver acknowledged.
    fn effective_features(&self) -> u64 {
        self.acked_features | (self.features & (1 << VIRTIO_BLK_F_RO))
    }
}

/// Logs a failed request, rate-limited: bad requests and I/O errors each
/// on their own [`LogLimiter`].
fn log_error(path: &Path, limiters: [&LogLimiter; 2], error: &HandlerError) {
    let (limiter, what) = match error {
        HandlerError::Request(_) => (limiters[0], "bad request"),
        _ => (limiters[1], "I/O error"),
    };
    if let Some(count) = limiter.hit() {
        warn!(
            "virtio-blk {}: {what}: {error} ({count} so far)",
            path.display()
        );
    }
}

/// The configuration space, little-endian, at the offsets of
/// `struct virtio_blk_config`.
fn config_space(image: &ImageFile) -> [u8; CONFIG_LEN] {
    let mut config = [0u8; CONFIG_LEN];
    let alignment = (image.block_size() / SECTOR_SIZE).clamp(1, u64::from(u32::MAX)) as u32;
    put(
        &mut config,
        offset_of!(virtio_blk_config, capacity),
        &image.capacity_sectors().to_le_bytes(),
    );
    let fields: [(usize, u32); 7] = [
        (offset_of!(virtio_blk_config, size_max), SIZE_MAX),
        (offset_of!(virtio_blk_config, seg_max), SEG_MAX),
        (
            offset_of!(virtio_blk_config, max_discard_sectors),
            MAX_DISCARD_SECTORS,
        ),
        (
            offset_of!(virtio_blk_config, max_discard_seg),
            MAX_RANGE_SEGMENTS,
        ),
        (
            offset_of!(virtio_blk_config, discard_sector_alignment),
            alignment,
        ),
        (
            offset_of!(virtio_blk_config, max_write_zeroes_sectors),
            MAX_WRITE_ZEROES_SECTORS,
        ),
        (
            offset_of!(virtio_blk_config, max_write_zeroes_seg),
            MAX_RANGE_SEGMENTS,
        ),
    ];
    for (offset, value) in fields {
        put(&mut config, offset, &value.to_le_bytes());
    }
    // A write zeroes with UNMAP punches a hole.
    config[offset_of!(virtio_blk_config, write_zeroes_may_unmap)] = 1;
    config
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        memory: GuestMemoryMmap,
        mut queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
        _fds: &mut FdWatch,
    ) -> Result<(), ActivateError> {
        if queues.is_empty() || !queues[0].ready() {
            return Err(ActivateError::QueueNotReady { index: 0 });
        }
        let queue = queues.swap_remove(0);
        self.active = Some(Active {
            memory,
            queue,
            interrupt,
        });
        Ok(())
    }

    fn queue_notified(&mut self, _index: usize, _fds: &mut FdWatch) {
        let features = self.effective_features();
        let Block {
            image,
            id,
            active,
            bounce,
            bad_requests,
            io_errors,
            ..
        } = self;
        let Some(session) = active.as_mut() else {
            return;
        };
        let path = image.path().to_owned();
        let capacity_sectors = image.capacity_sectors();
        let memory = session.memory.clone();
        let mut ctx = RequestContext {
            backend: image,
            capacity_sectors,
            features,
            id,
            bounce,
        };
        let result = drain_queue(
            &mut session.queue,
            &memory,
            session.interrupt.as_ref(),
            |chain| {
                let completion = process_request(chain, &memory, &mut ctx);
                if let Some(error) = &completion.error {
                    log_error(&path, [bad_requests, io_errors], error);
                }
                completion.used_len
            },
        );
        if let Err(e) = result {
            session
                .interrupt
                .device_broken(&format!("virtio-blk request queue: {e}"));
            *active = None;
        }
    }

    fn reset(&mut self, _fds: &mut FdWatch) {
        // The image stays open and locked: a reset is not a detach.
        self.active = None;
        self.acked_features = 0;
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "open_tests.rs"]
mod open_tests;
