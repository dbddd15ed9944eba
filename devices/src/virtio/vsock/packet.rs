//! The virtio-vsock packet (virtio 1.2, 5.10.6): a 44-byte little-endian
//! header followed by `len` payload bytes.
//!
//! [`parse_packet`] validates the bytes of one TX packet and is pure (the
//! fuzz target's entry point); [`read_tx`] gathers those bytes from a TX
//! descriptor chain, and [`RxBuffers`] checks an RX chain before the device
//! writes a packet into it.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::virtio::queue::Chain;

/// Size of the packet header.
pub const HDR_LEN: usize = 44;
/// Largest payload of one packet, either way: bounds what one guest
/// request costs the device.
pub const MAX_PAYLOAD: usize = 64 << 10;
/// The host's context id.
pub const HOST_CID: u64 = 2;
/// `type` of a stream socket, the only type this device supports.
pub const TYPE_STREAM: u16 = 1;

/// Operations (`op`).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused or reset.
    pub const RST: u16 = 3;
    /// No more data in one or both directions (see `flags`).
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Here is my current credit.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Please send your credit.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet header, fields in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub type_: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever.
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes the wire layout.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the wire layout.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The RST that answers this packet (ports and cids swapped).
    pub fn rst_reply(&self) -> Header {
        Header {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Header::default()
        }
    }
}

/// A packet: header and payload (`header.len == data.len()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The header.
    pub header: Header,
    /// The payload.
    pub data: Vec<u8>,
}

/// Why a packet or a chain was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// A buffer of the chain is not in guest memory.
    #[error("buffer at {addr:#x} ({len} bytes) is outside guest memory")]
    BufferOutsideMemory {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The header's `len` is not the number of payload bytes.
    #[error("header says {header} payload bytes, the chain holds {actual}")]
    LenMismatch {
        /// `len` of the header.
        header: u32,
        /// Payload bytes present.
        actual: usize,
    },
    /// An RX chain has a device-readable descriptor.
    #[error("RX descriptor at {addr:#x} is device-readable")]
    ReadableRxDescriptor {
        /// Guest address of the descriptor's buffer.
        addr: u64,
    },
    /// The packet is shorter than its header.
    #[error("{0} bytes is shorter than the {HDR_LEN}-byte header")]
    ShortHeader(usize),
    /// An RX chain cannot hold even a header.
    #[error("RX chain of {0} bytes cannot hold the {HDR_LEN}-byte header")]
    ShortRxChain(usize),
    /// The packet or its payload is larger than the device accepts.
    #[error("{0} bytes is more than a header and {MAX_PAYLOAD} payload bytes")]
    TooLong(u64),
    /// The operation is not one of [`op`].
    #[error("unknown operation {} (ports {}->{})", .0.op, .0.src_port, .0.dst_port)]
    UnknownOp(Header),
    /// The destination is not the host.
    #[error("destination cid {0} is not the host's ({HOST_CID})")]
    WrongDstCid(u64),
    /// The source is not this guest.
    #[error("source cid {0} is not the guest's")]
    WrongSrcCid(u64),
    /// The socket type is not stream.
    #[error("socket type {} is not stream (ports {}->{})", .0.type_, .0.src_port, .0.dst_port)]
    WrongType(Header),
    /// A TX chain has a device-writable descriptor.
    #[error("TX descriptor at {addr:#x} is device-writable")]
    WritableTxDescriptor {
        /// Guest address of the descriptor's buffer.
        addr: u64,
    },
}

impl PacketError {
    /// The RST to send back, for a well-addressed packet the device does
    /// not support (a wrong type, an unknown operation); none for packets
    /// that are garbage or not addressed to the host.
    pub fn rst_reply(&self) -> Option<Header> {
        match self {
            PacketError::UnknownOp(h) | PacketError::WrongType(h) if h.op != op::RST => {
                Some(h.rst_reply())
            }
            _ => None,
        }
    }
}

/// Validates one TX packet, `bytes` being the header then the payload.
pub fn parse_packet(bytes: &[u8], guest_cid: u64) -> Result<Packet, PacketError> {
    let Some((head, data)) = bytes.split_first_chunk::<HDR_LEN>() else {
        return Err(PacketError::ShortHeader(bytes.len()));
    };
    let header = Header::from_bytes(head);
    if header.len as usize > MAX_PAYLOAD {
        return Err(PacketError::TooLong(HDR_LEN as u64 + u64::from(header.len)));
    }
    if header.len as usize != data.len() {
        return Err(PacketError::LenMismatch {
            header: header.len,
            actual: data.len(),
        });
    }
    if header.src_cid != guest_cid {
        return Err(PacketError::WrongSrcCid(header.src_cid));
    }
    if header.dst_cid != HOST_CID {
        return Err(PacketError::WrongDstCid(header.dst_cid));
    }
    if header.type_ != TYPE_STREAM {
        return Err(PacketError::WrongType(header));
    }
    if !(op::REQUEST..=op::CREDIT_REQUEST).contains(&header.op) {
        return Err(PacketError::UnknownOp(header));
    }
    Ok(Packet {
        header,
        data: data.to_vec(),
    })
}

/// Gathers a TX chain's bytes (all descriptors must be device-readable,
/// at most a header and [`MAX_PAYLOAD`] in all) and parses them.
pub fn read_tx(
    chain: Chain<'_>,
    memory: &GuestMemoryMmap,
    guest_cid: u64,
) -> Result<Packet, PacketError> {
    let mut bytes = Vec::new();
    let mut total = 0u64;
    for desc in chain {
        if desc.is_write_only() {
            return Err(PacketError::WritableTxDescriptor {
                addr: desc.addr().0,
            });
        }
        total += u64::from(desc.len());
        if total > (HDR_LEN + MAX_PAYLOAD) as u64 {
            return Err(PacketError::TooLong(total));
        }
        let start = bytes.len();
        bytes.resize(start + desc.len() as usize, 0);
        memory
            .read_slice(&mut bytes[start..], desc.addr())
            .map_err(|_| PacketError::BufferOutsideMemory {
                addr: desc.addr().0,
                len: desc.len(),
            })?;
    }
    parse_packet(&bytes, guest_cid)
}

/// The device-writable buffers of one RX chain, checked to be in guest
/// memory, so that writing a packet into them cannot fail half-way.
#[derive(Debug)]
pub struct RxBuffers {
    regions: Vec<(GuestAddress, usize)>,
    capacity: usize,
}

impl RxBuffers {
    /// Checks `chain`: every descriptor device-writable and in guest
    /// memory, room for at least a header. Space beyond a header and
    /// [`MAX_PAYLOAD`] is not used.
    pub fn from_chain(chain: Chain<'_>, memory: &GuestMemoryMmap) -> Result<Self, PacketError> {
        let mut regions = Vec::new();
        let mut capacity = 0usize;
        for desc in chain {
            if !desc.is_write_only() {
                return Err(PacketError::ReadableRxDescriptor {
                    addr: desc.addr().0,
                });
            }
            let len = (desc.len() as usize).min(HDR_LEN + MAX_PAYLOAD - capacity);
            if !GuestMemoryBackend::check_range(memory, desc.addr(), len) {
                return Err(PacketError::BufferOutsideMemory {
                    addr: desc.addr().0,
                    len: desc.len(),
                });
            }
            if len > 0 {
                regions.push((desc.addr(), len));
            }
            capacity += len;
            if capacity == HDR_LEN + MAX_PAYLOAD {
                break;
            }
        }
        if capacity < HDR_LEN {
            return Err(PacketError::ShortRxChain(capacity));
        }
        Ok(RxBuffers { regions, capacity })
    }

    /// The largest payload that fits after the header.
    pub fn max_payload(&self) -> usize {
        self.capacity - HDR_LEN
    }

    /// Writes `header` (with `len` set to the payload's) and `data`, at most
    /// [`Self::max_payload`] bytes of it; returns the bytes written.
    pub fn write(&self, memory: &GuestMemoryMmap, header: &Header, data: &[u8]) -> u32 {
        let data = &data[..data.len().min(self.max_payload())];
        let header = Header {
            len: data.len() as u32,
            ..*header
        };
        let head = header.to_bytes();
        let mut sources = [&head[..], data].into_iter().filter(|s| !s.is_empty());
        let mut src = sources.next().unwrap_or(&[]);
        let mut written = 0usize;
        for &(addr, len) in &self.regions {
            let mut done = 0usize;
            while done < len && !src.is_empty() {
                let n = src.len().min(len - done);
                // The range was checked in from_chain; a failure here would
                // mean guest memory shrank, and only loses this packet.
                let _ = memory.write_slice(&src[..n], addr.unchecked_add(done as u64));
                done += n;
                written += n;
                src = &src[n..];
                if src.is_empty() {
                    src = sources.next().unwrap_or(&[]);
                }
            }
        }
        written as u32
    }
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    use super::*;

    const CID: u64 = 3;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
    }

    fn header(len: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 52,
            len,
            type_: TYPE_STREAM,
            op: op::RW,
            buf_alloc: 4096,
            fwd_cnt: 7,
            flags: 0,
        }
    }

    fn bytes(h: &Header, data: &[u8]) -> Vec<u8> {
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    fn desc(addr: u64, len: u32, writable: bool) -> RawDescriptor {
        let flags = if writable {
            VRING_DESC_F_WRITE as u16
        } else {
            0
        };
        RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
    }

    #[test]
    fn header_round_trips_through_the_wire_layout() {
        let h = header(5);
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &CID.to_le_bytes());
        assert_eq!(&b[24..28], &5u32.to_le_bytes());
        assert_eq!(&b[30..32], &op::RW.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn a_good_packet_parses() {
        let pkt = parse_packet(&bytes(&header(3), b"abc"), CID).unwrap();
        assert_eq!(pkt.header, header(3));
        assert_eq!(pkt.data, b"abc");
    }

    #[test]
    fn every_malformed_shape_is_refused() {
        let short = bytes(&header(0), b"");
        assert_eq!(
            parse_packet(&short[..43], CID),
            Err(PacketError::ShortHeader(43))
        );
        assert_eq!(parse_packet(&[], CID), Err(PacketError::ShortHeader(0)));
        assert_eq!(
            parse_packet(&bytes(&header(4), b"abc"), CID),
            Err(PacketError::LenMismatch {
                header: 4,
                actual: 3
            })
        );
        assert_eq!(
            parse_packet(&bytes(&header(2), b"abc"), CID),
            Err(PacketError::LenMismatch {
                header: 2,
                actual: 3
            })
        );
        assert_eq!(
            parse_packet(&bytes(&header(u32::MAX), b""), CID),
            Err(PacketError::TooLong(44 + u64::from(u32::MAX)))
        );
        let h = Header {
            type_: 2,
            ..header(0)
        };
        assert_eq!(
            parse_packet(&bytes(&h, b""), CID),
            Err(PacketError::WrongType(h))
        );
        let h = Header {
            dst_cid: 7,
            ..header(0)
        };
        assert_eq!(
            parse_packet(&bytes(&h, b""), CID),
            Err(PacketError::WrongDstCid(7))
        );
        assert_eq!(
            parse_packet(&bytes(&header(0), b""), 4),
            Err(PacketError::WrongSrcCid(CID))
        );
        for bad_op in [0, 8, u16::MAX] {
            let h = Header {
                op: bad_op,
                ..header(0)
            };
            assert_eq!(
                parse_packet(&bytes(&h, b""), CID),
                Err(PacketError::UnknownOp(h))
            );
        }
    }

    #[test]
    fn only_unsupported_but_addressed_packets_get_an_rst() {
        let h = Header {
            type_: 2,
            ..header(0)
        };
        let rst = PacketError::WrongType(h).rst_reply().unwrap();
        assert_eq!((rst.src_port, rst.dst_port, rst.op), (52, 1000, op::RST));
        assert_eq!((rst.src_cid, rst.dst_cid), (HOST_CID, CID));
        let h = Header {
            op: op::RST,
            type_: 2,
            ..header(0)
        };
        assert_eq!(PacketError::WrongType(h).rst_reply(), None);
        assert_eq!(PacketError::WrongDstCid(9).rst_reply(), None);
    }

    #[test]
    fn a_tx_chain_is_gathered_across_descriptors() {
        let memory = memory();
        let mock = MockSplitQueue::new(&memory, 16);
        let b = bytes(&header(5), b"hello");
        memory
            .write_slice(&b[..20], GuestAddress(0x10_0000))
            .unwrap();
        memory
            .write_slice(&b[20..], GuestAddress(0x20_0000))
            .unwrap();
        let chain = mock
            .build_desc_chain(&[desc(0x10_0000, 20, false), desc(0x20_0000, 29, false)])
            .unwrap();
        let pkt = read_tx(chain, &memory, CID).unwrap();
        assert_eq!(pkt.data, b"hello");
    }

    #[test]
    fn a_tx_chain_with_a_writable_huge_or_unmapped_descriptor_is_refused() {
        let memory = memory();
        let mock = MockSplitQueue::new(&memory, 16);
        let chain = mock
            .build_desc_chain(&[desc(0x10_0000, 44, false), desc(0x20_0000, 4, true)])
            .unwrap();
        assert_eq!(
            read_tx(chain, &memory, CID),
            Err(PacketError::WritableTxDescriptor { addr: 0x20_0000 })
        );
        let chain = mock
            .build_desc_chain(&[
                desc(0x10_0000, 44, false),
                desc(0x20_0000, 0x10_0000, false),
            ])
            .unwrap();
        assert_eq!(
            read_tx(chain, &memory, CID),
            Err(PacketError::TooLong(44 + 0x10_0000))
        );
        let chain = mock
            .build_desc_chain(&[desc(0x3f_fff0, 44, false)])
            .unwrap();
        assert_eq!(
            read_tx(chain, &memory, CID),
            Err(PacketError::BufferOutsideMemory {
                addr: 0x3f_fff0,
                len: 44
            })
        );
    }

    #[test]
    fn rx_buffers_are_checked_and_filled_across_descriptors() {
        let memory = memory();
        let mock = MockSplitQueue::new(&memory, 16);
        let chain = mock
            .build_desc_chain(&[desc(0x10_0000, 30, true), desc(0x20_0000, 20, true)])
            .unwrap();
        let rx = RxBuffers::from_chain(chain, &memory).unwrap();
        assert_eq!(rx.max_payload(), 6);
        let written = rx.write(&memory, &header(0), b"0123456789");
        assert_eq!(written, 50);
        let mut b = [0u8; 50];
        memory
            .read_slice(&mut b[..30], GuestAddress(0x10_0000))
            .unwrap();
        memory
            .read_slice(&mut b[30..], GuestAddress(0x20_0000))
            .unwrap();
        let pkt = parse_packet(&b, CID).unwrap();
        assert_eq!(pkt.data, b"012345");
        assert_eq!(pkt.header.len, 6);
    }

    #[test]
    fn bad_rx_chains_are_refused() {
        let memory = memory();
        let mock = MockSplitQueue::new(&memory, 16);
        let chain = mock
            .build_desc_chain(&[desc(0x10_0000, 64, false)])
            .unwrap();
        assert_eq!(
            RxBuffers::from_chain(chain, &memory).unwrap_err(),
            PacketError::ReadableRxDescriptor { addr: 0x10_0000 }
        );
        let chain = mock.build_desc_chain(&[desc(0x10_0000, 43, true)]).unwrap();
        assert_eq!(
            RxBuffers::from_chain(chain, &memory).unwrap_err(),
            PacketError::ShortRxChain(43)
        );
        let chain = mock.build_desc_chain(&[desc(0x3f_fff0, 64, true)]).unwrap();
        assert!(matches!(
            RxBuffers::from_chain(chain, &memory),
            Err(PacketError::BufferOutsideMemory { .. })
        ));
        // A huge buffer is used only up to one maximal packet.
        let chain = mock
            .build_desc_chain(&[desc(0x10_0000, 0x20_0000, true)])
            .unwrap();
        let rx = RxBuffers::from_chain(chain, &memory).unwrap();
        assert_eq!(rx.max_payload(), MAX_PAYLOAD);
    }
}
