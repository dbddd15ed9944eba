//! Parsing one virtio-blk request (virtio 1.2, 5.2.6) out of a descriptor
//! chain, checking everything the guest controls before any I/O is done.
//!
//! The framing accepted is the one every driver uses: a 16-byte
//! device-readable header, then the data descriptors, then a 1-byte
//! device-writable status descriptor, last. [`parse`] is pure (it reads
//! guest memory, writes nothing) and never panics, whatever the chain: it
//! is what the fuzz target drives.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_WRITE_ZEROES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::{
    MAX_DISCARD_SECTORS, MAX_REQUEST_BYTES, MAX_WRITE_ZEROES_SECTORS, SECTOR_SIZE, SEG_MAX,
};

/// Size of the request header (`struct virtio_blk_outhdr`).
pub const HEADER_LEN: u32 = 16;
/// Size of one discard / write-zeroes segment
/// (`struct virtio_blk_discard_write_zeroes`).
pub const SEGMENT_LEN: u32 = 16;
/// Most discard / write-zeroes segments in one request (config
/// `max_discard_seg`, `max_write_zeroes_seg`).
pub const MAX_RANGE_SEGMENTS: u32 = 1;
/// Most descriptors looked at in one chain: a split-queue chain is at most
/// the size of its (indirect) table, 2^16 entries. Anything longer is not a
/// chain a queue can yield, and is refused without reading further.
pub const MAX_CHAIN_LEN: usize = 1 << 16;

/// A guest buffer: `len` bytes at `addr`, all in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// What a valid request asks for. Sector ranges are within the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read from `sector` into the device-writable `buffers`.
    Read {
        /// First sector.
        sector: u64,
        /// Where the data goes, in order; the total is a multiple of 512.
        buffers: Vec<Segment>,
    },
    /// Write the device-readable `buffers` from `sector` on.
    Write {
        /// First sector.
        sector: u64,
        /// Where the data comes from, in order; the total is a multiple of
        /// 512.
        buffers: Vec<Segment>,
    },
    /// Make every completed write durable.
    Flush,
    /// Write the device's id string into the device-writable `buffers`.
    GetId {
        /// Where the id goes.
        buffers: Vec<Segment>,
    },
    /// The guest no longer needs `sectors` sectors from `sector` on.
    Discard {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        sectors: u32,
    },
    /// Make `sectors` sectors from `sector` on read as zeroes; `unmap`
    /// allows deallocating them.
    WriteZeroes {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        sectors: u32,
        /// The driver allows deallocating the range.
        unmap: bool,
    },
}

/// A request that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub kind: RequestKind,
    /// Where the status byte goes (device-writable, in guest memory).
    pub status: GuestAddress,
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The chain has more descriptors than any queue can hold.
    #[error("the chain has more than {max} descriptors")]
    ChainTooLong {
        /// [`MAX_CHAIN_LEN`].
        max: usize,
    },
    /// The chain has no room for a header and a status.
    #[error("the chain has {count} descriptor(s); a request needs a header and a status")]
    ChainTooShort {
        /// Descriptors in the chain.
        count: usize,
    },
    /// The data of a read or write is not made of whole sectors.
    #[error("{len} data bytes are not a multiple of 512")]
    DataNotSectors {
        /// Total data bytes.
        len: u64,
    },
    /// The data of one request is larger than the device handles at once.
    #[error("{len} data bytes exceed the limit of {max} per request")]
    DataTooLong {
        /// Total data bytes (at least).
        len: u64,
        /// [`MAX_REQUEST_BYTES`].
        max: u64,
    },
    /// A discard or write-zeroes range is longer than the configuration
    /// space allows.
    #[error("{sectors} sectors exceed the limit of {max} per {request}")]
    RangeTooLong {
        /// Sectors asked for.
        sectors: u32,
        /// The limit.
        max: u32,
        /// The request type.
        request: &'static str,
    },
    /// A discard or write-zeroes segment has flags the device does not
    /// know, or UNMAP on a discard.
    #[error("{request} segment flags {flags:#x} are not supported")]
    FlagsUnsupported {
        /// The segment's flags.
        flags: u32,
        /// The request type.
        request: &'static str,
    },
    /// The header descriptor is not 16 bytes.
    #[error("the header descriptor is {len} bytes; it must be {HEADER_LEN}")]
    HeaderLength {
        /// Its length.
        len: u32,
    },
    /// The header descriptor is device-writable.
    #[error("the header descriptor at {addr:#x} is device-writable")]
    HeaderWritable {
        /// Its address.
        addr: u64,
    },
    /// A request that needs data has none.
    #[error("the {request} request has no data descriptor")]
    NoData {
        /// The request type.
        request: &'static str,
    },
    /// A buffer is not (entirely) in guest memory.
    #[error("the {len}-byte buffer at {addr:#x} is not in guest memory")]
    OutsideMemory {
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The byte offset of a sector range does not fit in 64 bits.
    #[error("sector {sector} plus {len} bytes overflows a 64-bit byte offset")]
    Overflow {
        /// First sector.
        sector: u64,
        /// Bytes from there.
        len: u64,
    },
    /// A write, discard or write zeroes on a read-only disk.
    #[error("{request} on a read-only disk")]
    ReadOnly {
        /// The request type.
        request: &'static str,
    },
    /// A sector range ends past the end of the disk.
    #[error("sectors {sector}..+{sectors} end past the disk's {capacity} sectors")]
    SectorRange {
        /// First sector.
        sector: u64,
        /// Sectors asked for.
        sectors: u64,
        /// The disk's capacity in sectors.
        capacity: u64,
    },
    /// A discard or write-zeroes request carries a number of segments other
    /// than one.
    #[error(
        "{request} carries {len} segment bytes; exactly {SEGMENT_LEN} (one segment) are accepted"
    )]
    SegmentCount {
        /// The data bytes.
        len: u64,
        /// The request type.
        request: &'static str,
    },
    /// The status descriptor is longer than the one status byte.
    #[error("the status descriptor is {len} bytes; it must be 1")]
    StatusLength {
        /// Its length.
        len: u32,
    },
    /// The status descriptor has no byte, or not one in guest memory.
    #[error("the {len}-byte status descriptor at {addr:#x} holds no byte of guest memory")]
    StatusUnusable {
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The last descriptor, the status, is device-readable.
    #[error("the status descriptor at {addr:#x} is device-readable")]
    StatusReadOnly {
        /// Its address.
        addr: u64,
    },
    /// More data descriptors than the configuration space's `seg_max`.
    #[error("{count} data descriptors exceed seg_max {max}")]
    TooManySegments {
        /// Data descriptors (at least).
        count: usize,
        /// [`SEG_MAX`].
        max: u32,
    },
    /// A flush carries data.
    #[error("the flush request carries {count} data descriptor(s)")]
    UnexpectedData {
        /// Data descriptors.
        count: usize,
    },
    /// An unknown request type, or one whose feature was not negotiated.
    #[error("request type {request_type} is not supported")]
    Unsupported {
        /// The header's type field.
        request_type: u32,
    },
    /// A data descriptor goes the wrong way for the request.
    #[error("the {request} data descriptor at {addr:#x} is not {expected}")]
    WrongDirection {
        /// Its address.
        addr: u64,
        /// The request type.
        request: &'static str,
        /// "device-writable" or "device-readable".
        expected: &'static str,
    },
}

/// A refused request, and where to say so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RequestError {
    /// The status byte, when the chain has a usable one; when it is `None`
    /// the chain is completed with nothing written.
    pub status: Option<GuestAddress>,
    /// Why.
    pub reason: Reason,
}

impl RequestError {
    /// The status code the guest gets: `VIRTIO_BLK_S_UNSUPP` for a request
    /// the device does not offer, `VIRTIO_BLK_S_IOERR` otherwise.
    pub fn status_code(&self) -> u8 {
        match self.reason {
            Reason::Unsupported { .. } | Reason::FlagsUnsupported { .. } => {
                VIRTIO_BLK_S_UNSUPP as u8
            }
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

fn has(features: u64, bit: u32) -> bool {
    features & (1u64 << bit) != 0
}

/// The descriptors of one chain, sorted by role, data capped at
/// [`SEG_MAX`] (the count is kept).
struct Framing {
    header: Descriptor,
    data: Vec<Descriptor>,
    data_count: usize,
    status: Descriptor,
}

fn frame(descriptors: impl IntoIterator<Item = Descriptor>) -> Result<Framing, Reason> {
    let mut iter = descriptors.into_iter();
    let header = iter.next().ok_or(Reason::ChainTooShort { count: 0 })?;
    let mut data = Vec::new();
    let mut data_count = 0usize;
    let mut last = None;
    // The header is the first; `MAX_CHAIN_LEN - 1` more at most.
    for desc in iter.by_ref().take(MAX_CHAIN_LEN - 1) {
        if let Some(previous) = last.replace(desc) {
            data_count += 1;
            if data.len() < SEG_MAX as usize {
                data.push(previous);
            }
        }
    }
    if iter.next().is_some() {
        return Err(Reason::ChainTooLong { max: MAX_CHAIN_LEN });
    }
    let status = last.ok_or(Reason::ChainTooShort { count: 1 })?;
    Ok(Framing {
        header,
        data,
        data_count,
        status,
    })
}

/// The status byte's address, if the guest gave a usable one: the last
/// byte of a device-writable descriptor in guest memory.
fn status_byte<M: GuestMemory>(desc: &Descriptor, memory: &M) -> Result<GuestAddress, Reason> {
    if !desc.is_write_only() {
        return Err(Reason::StatusReadOnly {
            addr: desc.addr().0,
        });
    }
    let unusable = Reason::StatusUnusable {
        addr: desc.addr().0,
        len: desc.len(),
    };
    let last = desc.len().checked_sub(1).ok_or(unusable.clone())?;
    let addr = desc
        .addr()
        .checked_add(u64::from(last))
        .ok_or(unusable.clone())?;
    if !memory.check_range(addr, 1, Permissions::Write) {
        return Err(unusable);
    }
    Ok(addr)
}

fn check_in_memory<M: GuestMemory>(desc: &Descriptor, memory: &M) -> Result<Segment, Reason> {
    // `check_range` walks the regions, so a buffer across a hole fails.
    let len = usize::try_from(desc.len()).unwrap_or(usize::MAX);
    let access = if desc.is_write_only() {
        Permissions::Write
    } else {
        Permissions::Read
    };
    if !memory.check_range(desc.addr(), len, access) {
        return Err(Reason::OutsideMemory {
            addr: desc.addr().0,
            len: desc.len(),
        });
    }
    Ok(Segment {
        addr: desc.addr(),
        len: desc.len(),
    })
}

/// Checks the data descriptors of a request whose data goes one way;
/// returns them and their total length.
fn data_buffers<M: GuestMemory>(
    framing: &Framing,
    memory: &M,
    request: &'static str,
    device_writes: bool,
) -> Result<(Vec<Segment>, u64), Reason> {
    if framing.data_count > SEG_MAX as usize {
        return Err(Reason::TooManySegments {
            count: framing.data_count,
            max: SEG_MAX,
        });
    }
    if framing.data.is_empty() {
        return Err(Reason::NoData { request });
    }
    // Directions and the total first, so a huge request is refused
    // whatever its addresses; then guest memory.
    let mut total = 0u64;
    for desc in &framing.data {
        if desc.is_write_only() != device_writes {
            return Err(Reason::WrongDirection {
                addr: desc.addr().0,
                request,
                expected: if device_writes {
                    "device-writable"
                } else {
                    "device-readable"
                },
            });
        }
        total += u64::from(desc.len());
    }
    if total > MAX_REQUEST_BYTES {
        return Err(Reason::DataTooLong {
            len: total,
            max: MAX_REQUEST_BYTES,
        });
    }
    let buffers = framing
        .data
        .iter()
        .map(|desc| check_in_memory(desc, memory))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((buffers, total))
}

/// Checks that `sectors` sectors from `sector` on lie within the disk and
/// that their byte range fits in a `u64`.
fn check_range(sector: u64, sectors: u64, capacity: u64) -> Result<(), Reason> {
    let overflow = Reason::Overflow {
        sector,
        len: sectors.saturating_mul(SECTOR_SIZE),
    };
    let end = sector.checked_add(sectors).ok_or(overflow.clone())?;
    end.checked_mul(SECTOR_SIZE).ok_or(overflow)?;
    if end > capacity {
        return Err(Reason::SectorRange {
            sector,
            sectors,
            capacity,
        });
    }
    Ok(())
}

/// A read or write: whole sectors, within the disk.
fn read_write<M: GuestMemory>(
    framing: &Framing,
    memory: &M,
    sector: u64,
    capacity: u64,
    write: bool,
) -> Result<RequestKind, Reason> {
    let request = if write { "write" } else { "read" };
    let (buffers, len) = data_buffers(framing, memory, request, !write)?;
    if len % SECTOR_SIZE != 0 {
        return Err(Reason::DataNotSectors { len });
    }
    check_range(sector, len / SECTOR_SIZE, capacity)?;
    Ok(if write {
        RequestKind::Write { sector, buffers }
    } else {
        RequestKind::Read { sector, buffers }
    })
}

/// A discard or write zeroes: one device-readable segment naming a range.
fn range_request<M: GuestMemory>(
    framing: &Framing,
    memory: &M,
    capacity: u64,
    zeroes: bool,
) -> Result<RequestKind, Reason> {
    let request = if zeroes { "write zeroes" } else { "discard" };
    let (buffers, len) = data_buffers(framing, memory, request, false)?;
    if len != u64::from(SEGMENT_LEN * MAX_RANGE_SEGMENTS) || buffers.len() != 1 {
        return Err(Reason::SegmentCount { len, request });
    }
    let mut raw = [0u8; SEGMENT_LEN as usize];
    memory
        .read_slice(&mut raw, buffers[0].addr)
        .map_err(|_| Reason::OutsideMemory {
            addr: buffers[0].addr.0,
            len: SEGMENT_LEN,
        })?;
    let sector = u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default());
    let sectors = u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
    let flags = u32::from_le_bytes(raw[12..16].try_into().unwrap_or_default());
    // virtio 1.2, 5.2.6.2: unknown flags are UNSUPP, and so is UNMAP on a
    // discard.
    let known = if zeroes {
        VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
    } else {
        0
    };
    if flags & !known != 0 {
        return Err(Reason::FlagsUnsupported { flags, request });
    }
    let max = if zeroes {
        MAX_WRITE_ZEROES_SECTORS
    } else {
        MAX_DISCARD_SECTORS
    };
    if sectors > max {
        return Err(Reason::RangeTooLong {
            sectors,
            max,
            request,
        });
    }
    check_range(sector, u64::from(sectors), capacity)?;
    Ok(if zeroes {
        RequestKind::WriteZeroes {
            sector,
            sectors,
            unmap: flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
        }
    } else {
        RequestKind::Discard { sector, sectors }
    })
}

fn parse_kind<M: GuestMemory>(
    framing: &Framing,
    memory: &M,
    capacity_sectors: u64,
    features: u64,
) -> Result<RequestKind, Reason> {
    let header = &framing.header;
    if header.is_write_only() {
        return Err(Reason::HeaderWritable {
            addr: header.addr().0,
        });
    }
    if header.len() != HEADER_LEN {
        return Err(Reason::HeaderLength { len: header.len() });
    }
    let mut raw = [0u8; HEADER_LEN as usize];
    memory
        .read_slice(&mut raw, header.addr())
        .map_err(|_| Reason::OutsideMemory {
            addr: header.addr().0,
            len: HEADER_LEN,
        })?;
    let request_type = u32::from_le_bytes(raw[0..4].try_into().unwrap_or_default());
    // raw[4..8] is the I/O priority, which this device ignores.
    let sector = u64::from_le_bytes(raw[8..16].try_into().unwrap_or_default());

    let read_only = has(features, VIRTIO_BLK_F_RO);
    let refuse_on_read_only = |request| {
        if read_only {
            Err(Reason::ReadOnly { request })
        } else {
            Ok(())
        }
    };
    let unsupported = Reason::Unsupported { request_type };
    match request_type {
        VIRTIO_BLK_T_IN => read_write(framing, memory, sector, capacity_sectors, false),
        VIRTIO_BLK_T_OUT => {
            refuse_on_read_only("write")?;
            read_write(framing, memory, sector, capacity_sectors, true)
        }
        VIRTIO_BLK_T_FLUSH => {
            if !has(features, VIRTIO_BLK_F_FLUSH) {
                return Err(unsupported);
            }
            if framing.data_count != 0 {
                return Err(Reason::UnexpectedData {
                    count: framing.data_count,
                });
            }
            Ok(RequestKind::Flush)
        }
        VIRTIO_BLK_T_GET_ID => {
            let (buffers, _) = data_buffers(framing, memory, "get id", true)?;
            Ok(RequestKind::GetId { buffers })
        }
        VIRTIO_BLK_T_DISCARD => {
            refuse_on_read_only("discard")?;
            if !has(features, VIRTIO_BLK_F_DISCARD) {
                return Err(unsupported);
            }
            range_request(framing, memory, capacity_sectors, false)
        }
        VIRTIO_BLK_T_WRITE_ZEROES => {
            refuse_on_read_only("write zeroes")?;
            if !has(features, VIRTIO_BLK_F_WRITE_ZEROES) {
                return Err(unsupported);
            }
            range_request(framing, memory, capacity_sectors, true)
        }
        _ => Err(unsupported),
    }
}

/// Parses the chain `descriptors` (guest buffers in `memory`) into a
/// request on a disk of `capacity_sectors` sectors, with the negotiated
/// `features` (`VIRTIO_BLK_F_RO` set when the disk is read-only, whatever
/// the driver acknowledged).
///
/// Checked, in order: the framing (header first, status last, at most
/// [`MAX_CHAIN_LEN`] descriptors), the status descriptor (device-writable,
/// in guest memory), the header (device-readable, 16 bytes, in guest
/// memory), the type (known, its feature negotiated, not a write on a
/// read-only disk), the data descriptors (count, direction, in guest
/// memory, total length), and the sector range (within the disk, no
/// overflow). Nothing is written anywhere.
pub fn parse<M: GuestMemory>(
    descriptors: impl IntoIterator<Item = Descriptor>,
    memory: &M,
    capacity_sectors: u64,
    features: u64,
) -> Result<Request, RequestError> {
    let no_status = |reason| RequestError {
        status: None,
        reason,
    };
    let framing = frame(descriptors).map_err(no_status)?;
    let status = status_byte(&framing.status, memory).map_err(no_status)?;
    let refused = |reason| RequestError {
        status: Some(status),
        reason,
    };
    if framing.status.len() != 1 {
        return Err(refused(Reason::StatusLength {
            len: framing.status.len(),
        }));
    }
    let kind = parse_kind(&framing, memory, capacity_sectors, features).map_err(refused)?;
    Ok(Request { kind, status })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
