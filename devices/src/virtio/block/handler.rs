//! One virtio-blk request end to end: parse the chain, do the I/O on the
//! backend, write the status byte, and say how many bytes of the chain's
//! device-writable buffers were written (the used length).

use std::io;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use super::backend::DiskBackend;
use super::request::{parse, RequestError, RequestKind, Segment};
use super::{ID_BYTES, SECTOR_SIZE};

/// Size of the bounce buffer data goes through between guest memory and
/// the backend.
pub const BOUNCE_LEN: usize = 128 << 10;

/// Why a request did not complete with `VIRTIO_BLK_S_OK`.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The backend failed.
    #[error("{op} of {len} bytes at byte {offset} of the disk: {source}")]
    Backend {
        /// "read", "write", "flush", "discard" or "write zeroes".
        op: &'static str,
        /// Byte offset on the disk.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Guest memory that the parser found valid could not be accessed.
    #[error("guest memory at {addr:#x}: {source}")]
    Memory {
        /// The address.
        addr: u64,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The request was refused.
    #[error("bad request: {0}")]
    Request(#[from] RequestError),
}

/// What processing one chain came to.
#[derive(Debug)]
pub struct Completion {
    /// Bytes written into the chain's device-writable buffers, the status
    /// byte included: the chain's used length.
    pub used_len: u32,
    /// Why the status is not OK, if it is not.
    pub error: Option<HandlerError>,
}

/// Everything a request is executed against.
pub struct RequestContext<'a> {
    /// The disk.
    pub backend: &'a mut dyn DiskBackend,
    /// Its size in sectors.
    pub capacity_sectors: u64,
    /// Negotiated features, `VIRTIO_BLK_F_RO` included when read-only.
    pub features: u64,
    /// The GET_ID string, zero-padded.
    pub id: &'a [u8; ID_BYTES],
    /// Scratch space between guest memory and the backend.
    pub bounce: &'a mut Vec<u8>,
}

/// Processes the chain `descriptors` whose buffers are in `memory`.
///
/// A refused request gets `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP`
/// in its status byte; without a usable status descriptor nothing is
/// written and the used length is 0.
pub fn process_request<M: GuestMemory>(
    descriptors: impl IntoIterator<Item = Descriptor>,
    memory: &M,
    ctx: &mut RequestContext<'_>,
) -> Completion {
    let request = match parse(descriptors, memory, ctx.capacity_sectors, ctx.features) {
        Ok(request) => request,
        Err(e) => {
            let used_len = match e.status {
                Some(status) if write_status(memory, status, e.status_code()) => 1,
                _ => 0,
            };
            return Completion {
                used_len,
                error: Some(HandlerError::Request(e)),
            };
        }
    };
    let (written, result) = execute(&request.kind, memory, ctx);
    let code = match result {
        Ok(()) => VIRTIO_BLK_S_OK,
        Err(_) => VIRTIO_BLK_S_IOERR,
    } as u8;
    let status_len = u32::from(write_status(memory, request.status, code));
    Completion {
        used_len: written.saturating_add(status_len),
        error: result.err(),
    }
}

fn write_status<M: GuestMemory>(memory: &M, status: GuestAddress, code: u8) -> bool {
    memory.write_slice(&[code], status).is_ok()
}

fn backend_error(
    op: &'static str,
    offset: u64,
    len: u64,
) -> impl FnOnce(io::Error) -> HandlerError {
    move |source| HandlerError::Backend {
        op,
        offset,
        len,
        source,
    }
}

fn memory_error(addr: GuestAddress) -> impl FnOnce(vm_memory::GuestMemoryError) -> HandlerError {
    move |source| HandlerError::Memory {
        addr: addr.raw_value(),
        source,
    }
}

/// Does the request; returns the bytes written into guest memory (also when
/// it failed part way) and the outcome.
fn execute<M: GuestMemory>(
    kind: &RequestKind,
    memory: &M,
    ctx: &mut RequestContext<'_>,
) -> (u32, Result<(), HandlerError>) {
    match kind {
        RequestKind::Read { sector, buffers } => {
            let mut written = 0;
            let result = read(*sector, buffers, memory, ctx, &mut written);
            (written, result)
        }
        RequestKind::Write { sector, buffers } => (0, write(*sector, buffers, memory, ctx)),
        RequestKind::Flush => (0, ctx.backend.flush().map_err(backend_error("flush", 0, 0))),
        RequestKind::GetId { buffers } => {
            let mut written = 0;
            let result = get_id(ctx.id, buffers, memory, &mut written);
            (written, result)
        }
        RequestKind::Discard { sector, sectors } => {
            let (offset, len) = byte_range(*sector, *sectors);
            let result = ctx
                .backend
                .discard(offset, len)
                .map_err(backend_error("discard", offset, len));
            (0, result)
        }
        RequestKind::WriteZeroes {
            sector,
            sectors,
            unmap,
        } => {
            let (offset, len) = byte_range(*sector, *sectors);
            let result = ctx
                .backend
                .write_zeroes(offset, len, *unmap)
                .map_err(backend_error("write zeroes", offset, len));
            (0, result)
        }
    }
}

/// The parser checked that this does not overflow.
fn byte_range(sector: u64, sectors: u32) -> (u64, u64) {
    (
        sector.saturating_mul(SECTOR_SIZE),
        u64::from(sectors) * SECTOR_SIZE,
    )
}

/// Calls `f(guest address, file offset, length)` for each bounce-sized
/// piece of `buffers`, in order, from byte `offset` of the disk.
fn for_each_piece(
    buffers: &[Segment],
    mut offset: u64,
    mut f: impl FnMut(GuestAddress, u64, usize) -> Result<(), HandlerError>,
) -> Result<(), HandlerError> {
    for segment in buffers {
        let mut done = 0u32;
        while done < segment.len {
            let n = (segment.len - done).min(BOUNCE_LEN as u32);
            // In guest memory: the parser checked the whole segment.
            let addr = segment.addr.unchecked_add(u64::from(done));
            f(addr, offset, n as usize)?;
            done += n;
            offset += u64::from(n);
        }
    }
    Ok(())
}

fn read<M: GuestMemory>(
    sector: u64,
    buffers: &[Segment],
    memory: &M,
    ctx: &mut RequestContext<'_>,
    written: &mut u32,
) -> Result<(), HandlerError> {
    ctx.bounce.resize(BOUNCE_LEN, 0);
    let bounce = &mut ctx.bounce[..];
    let backend = &mut *ctx.backend;
    for_each_piece(buffers, sector * SECTOR_SIZE, |addr, offset, n| {
        let buf = &mut bounce[..n];
        backend
            .read_at(buf, offset)
            .map_err(backend_error("read", offset, n as u64))?;
        memory.write_slice(buf, addr).map_err(memory_error(addr))?;
        *written += n as u32;
        Ok(())
    })
}

fn write<M: GuestMemory>(
    sector: u64,
    buffers: &[Segment],
    memory: &M,
    ctx: &mut RequestContext<'_>,
) -> Result<(), HandlerError> {
    ctx.bounce.resize(BOUNCE_LEN, 0);
    let bounce = &mut ctx.bounce[..];
    let backend = &mut *ctx.backend;
    for_each_piece(buffers, sector * SECTOR_SIZE, |addr, offset, n| {
        let buf = &mut bounce[..n];
        memory.read_slice(buf, addr).map_err(memory_error(addr))?;
        backend
            .write_at(buf, offset)
            .map_err(backend_error("write", offset, n as u64))
    })?;
    if ctx.features & (1 << VIRTIO_BLK_F_FLUSH) == 0 {
        // A driver that cannot flush gets a write-through disk.
        backend.flush().map_err(backend_error("flush", 0, 0))?;
    }
    Ok(())
}

fn get_id<M: GuestMemory>(
    id: &[u8; ID_BYTES],
    buffers: &[Segment],
    memory: &M,
    written: &mut u32,
) -> Result<(), HandlerError> {
    let mut rest = &id[..];
    for segment in buffers {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(segment.len as usize);
        memory
            .write_slice(&rest[..n], segment.addr)
            .map_err(memory_error(segment.addr))?;
        *written += n as u32;
        rest = &rest[n..];
    }
    Ok(())
}
