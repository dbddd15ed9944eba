use vm_memory::GuestMemoryMmap;

use super::*;
use crate::virtio::block::test_support::*;
use crate::virtio::block::SIZE_MAX;

const RO: u64 = 1 << VIRTIO_BLK_F_RO;

fn seg(addr: u64, len: u32) -> Segment {
    Segment {
        addr: GuestAddress(addr),
        len,
    }
}

#[test]
fn parses_a_read_into_several_buffers() {
    let m = memory();
    let descs = [
        header(&m, VIRTIO_BLK_T_IN, 8),
        writable(DATA, 1024),
        writable(DATA + 0x1000, 512),
        status(),
    ];
    let request = parse_chain(&m, &descs).unwrap();
    assert_eq!(request.status, GuestAddress(STATUS));
    assert_eq!(
        request.kind,
        RequestKind::Read {
            sector: 8,
            buffers: vec![seg(DATA, 1024), seg(DATA + 0x1000, 512)],
        }
    );
}

#[test]
fn parses_a_write_up_to_the_last_sector() {
    let m = memory();
    let descs = [
        header(&m, VIRTIO_BLK_T_OUT, CAPACITY - 2),
        readable(DATA, 1024),
        status(),
    ];
    assert_eq!(
        parse_chain(&m, &descs).unwrap().kind,
        RequestKind::Write {
            sector: CAPACITY - 2,
            buffers: vec![seg(DATA, 1024)],
        }
    );
}

#[test]
fn parses_flush_get_id_discard_and_write_zeroes() {
    let m = memory();
    let flush = [header(&m, VIRTIO_BLK_T_FLUSH, 0), status()];
    assert_eq!(parse_chain(&m, &flush).unwrap().kind, RequestKind::Flush);

    let get_id = [
        header(&m, VIRTIO_BLK_T_GET_ID, 0),
        writable(DATA, 20),
        status(),
    ];
    assert_eq!(
        parse_chain(&m, &get_id).unwrap().kind,
        RequestKind::GetId {
            buffers: vec![seg(DATA, 20)]
        }
    );

    let discard = [
        header(&m, VIRTIO_BLK_T_DISCARD, 0),
        segment(&m, 16, 8, 0),
        status(),
    ];
    assert_eq!(
        parse_chain(&m, &discard).unwrap().kind,
        RequestKind::Discard {
            sector: 16,
            sectors: 8
        }
    );

    for (flags, unmap) in [(0, false), (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, true)] {
        let zeroes = [
            header(&m, VIRTIO_BLK_T_WRITE_ZEROES, 0),
            segment(&m, CAPACITY - 4, 4, flags),
            status(),
        ];
        assert_eq!(
            parse_chain(&m, &zeroes).unwrap().kind,
            RequestKind::WriteZeroes {
                sector: CAPACITY - 4,
                sectors: 4,
                unmap
            }
        );
    }
}

#[test]
fn unknown_or_unnegotiated_types_are_unsupported() {
    let m = memory();
    let descs = [header(&m, 0xdead, 0), status()];
    assert_refused(
        parse_chain(&m, &descs),
        Reason::Unsupported {
            request_type: 0xdead,
        },
        VIRTIO_BLK_S_UNSUPP,
    );
    for request_type in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        let descs = [header(&m, request_type, 0), segment(&m, 0, 1, 0), status()];
        assert_refused(
            parse_on(&m, &descs, CAPACITY, 0),
            Reason::Unsupported { request_type },
            VIRTIO_BLK_S_UNSUPP,
        );
    }
    let flush = [header(&m, VIRTIO_BLK_T_FLUSH, 0), status()];
    assert_refused(
        parse_on(&m, &flush, CAPACITY, 0),
        Reason::Unsupported {
            request_type: VIRTIO_BLK_T_FLUSH,
        },
        VIRTIO_BLK_S_UNSUPP,
    );
}

#[test]
fn data_going_the_wrong_way_is_refused() {
    let m = memory();
    let read = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(DATA, 512),
        readable(DATA + 512, 512),
        status(),
    ];
    assert_refused(
        parse_chain(&m, &read),
        Reason::WrongDirection {
            addr: DATA + 512,
            request: "read",
            expected: "device-writable",
        },
        VIRTIO_BLK_S_IOERR,
    );
    let write = [
        header(&m, VIRTIO_BLK_T_OUT, 0),
        writable(DATA, 512),
        status(),
    ];
    assert_refused(
        parse_chain(&m, &write),
        Reason::WrongDirection {
            addr: DATA,
            request: "write",
            expected: "device-readable",
        },
        VIRTIO_BLK_S_IOERR,
    );
    let get_id = [
        header(&m, VIRTIO_BLK_T_GET_ID, 0),
        readable(DATA, 20),
        status(),
    ];
    assert!(matches!(
        parse_chain(&m, &get_id).unwrap_err().reason,
        Reason::WrongDirection { .. }
    ));
}

#[test]
fn a_chain_without_a_usable_status_has_no_status() {
    let m = memory();
    assert_no_status(
        parse(std::iter::empty(), &m, CAPACITY, FEATURES),
        Reason::ChainTooShort { count: 0 },
    );
    let header_only = [header(&m, VIRTIO_BLK_T_IN, 0)];
    assert_no_status(
        parse_chain(&m, &header_only),
        Reason::ChainTooShort { count: 1 },
    );
    // The write's data is last: no status descriptor.
    let no_status = [header(&m, VIRTIO_BLK_T_OUT, 0), readable(DATA, 512)];
    assert_no_status(
        parse_chain(&m, &no_status),
        Reason::StatusReadOnly { addr: DATA },
    );
    let read_only_status = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(DATA, 512),
        readable(STATUS, 1),
    ];
    assert_no_status(
        parse_chain(&m, &read_only_status),
        Reason::StatusReadOnly { addr: STATUS },
    );
    let empty_status = [header(&m, VIRTIO_BLK_T_FLUSH, 0), writable(STATUS, 0)];
    assert_no_status(
        parse_chain(&m, &empty_status),
        Reason::StatusUnusable {
            addr: STATUS,
            len: 0,
        },
    );
    let status_outside = [header(&m, VIRTIO_BLK_T_FLUSH, 0), writable(0x20_0000, 1)];
    assert_no_status(
        parse_chain(&m, &status_outside),
        Reason::StatusUnusable {
            addr: 0x20_0000,
            len: 1,
        },
    );
    let status_wraps = [header(&m, VIRTIO_BLK_T_FLUSH, 0), writable(u64::MAX, 2)];
    assert!(parse_chain(&m, &status_wraps).unwrap_err().status.is_none());
}

#[test]
fn a_long_status_descriptor_gets_the_status_in_its_last_byte() {
    let m = memory();
    let descs = [header(&m, VIRTIO_BLK_T_FLUSH, 0), writable(STATUS - 1, 2)];
    assert_refused(
        parse_chain(&m, &descs),
        Reason::StatusLength { len: 2 },
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn a_bad_header_is_refused() {
    let m = memory();
    write_header(&m, HEADER, VIRTIO_BLK_T_IN, 0);
    for len in [0, 8, 15, 17, 32] {
        let descs = [readable(HEADER, len), writable(DATA, 512), status()];
        assert_refused(
            parse_chain(&m, &descs),
            Reason::HeaderLength { len },
            VIRTIO_BLK_S_IOERR,
        );
    }
    let descs = [writable(HEADER, 16), writable(DATA, 512), status()];
    assert_refused(
        parse_chain(&m, &descs),
        Reason::HeaderWritable { addr: HEADER },
        VIRTIO_BLK_S_IOERR,
    );
    let descs = [readable(0x1f_fff8, 16), status()];
    assert_refused(
        parse_chain(&m, &descs),
        Reason::OutsideMemory {
            addr: 0x1f_fff8,
            len: 16,
        },
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn data_that_is_not_whole_sectors_is_refused() {
    let m = memory();
    for len in [1, 511, 513, 1000] {
        let descs = [
            header(&m, VIRTIO_BLK_T_IN, 0),
            writable(DATA, len),
            status(),
        ];
        assert_refused(
            parse_chain(&m, &descs),
            Reason::DataNotSectors { len: len.into() },
            VIRTIO_BLK_S_IOERR,
        );
    }
    // Pieces that add up to whole sectors are fine.
    let descs = [
        header(&m, VIRTIO_BLK_T_OUT, 0),
        readable(DATA, 100),
        readable(DATA + 0x1000, 412),
        status(),
    ];
    assert!(parse_chain(&m, &descs).is_ok());
    let no_data = [header(&m, VIRTIO_BLK_T_IN, 0), status()];
    assert_refused(
        parse_chain(&m, &no_data),
        Reason::NoData { request: "read" },
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn sectors_past_the_end_are_refused() {
    let m = memory();
    let descs = [
        header(&m, VIRTIO_BLK_T_IN, CAPACITY - 1),
        writable(DATA, 1024),
        status(),
    ];
    assert_refused(
        parse_chain(&m, &descs),
        Reason::SectorRange {
            sector: CAPACITY - 1,
            sectors: 2,
            capacity: CAPACITY,
        },
        VIRTIO_BLK_S_IOERR,
    );
    let descs = [
        header(&m, VIRTIO_BLK_T_OUT, CAPACITY),
        readable(DATA, 512),
        status(),
    ];
    assert!(matches!(
        parse_chain(&m, &descs).unwrap_err().reason,
        Reason::SectorRange { .. }
    ));
}

#[test]
fn byte_offsets_that_overflow_are_refused() {
    let m = memory();
    // On a disk as large as can be, so that only the arithmetic fails.
    for sector in [u64::MAX, u64::MAX / 512] {
        let descs = [
            header(&m, VIRTIO_BLK_T_IN, sector),
            writable(DATA, 512),
            status(),
        ];
        assert_refused(
            parse_on(&m, &descs, u64::MAX, FEATURES),
            Reason::Overflow { sector, len: 512 },
            VIRTIO_BLK_S_IOERR,
        );
    }
    let descs = [
        header(&m, VIRTIO_BLK_T_WRITE_ZEROES, 0),
        segment(&m, u64::MAX - 1, 4, 0),
        status(),
    ];
    assert!(matches!(
        parse_on(&m, &descs, u64::MAX, FEATURES).unwrap_err().reason,
        Reason::Overflow { .. }
    ));
}

#[test]
fn buffers_outside_guest_memory_are_refused() {
    let m = memory();
    let descs = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(0x1f_fe00, 0x400),
        status(),
    ];
    assert_refused(
        parse_chain(&m, &descs),
        Reason::OutsideMemory {
            addr: 0x1f_fe00,
            len: 0x400,
        },
        VIRTIO_BLK_S_IOERR,
    );
    let descs = [
        header(&m, VIRTIO_BLK_T_OUT, 0),
        readable(u64::MAX - 511, 512),
        status(),
    ];
    assert!(matches!(
        parse_chain(&m, &descs).unwrap_err().reason,
        Reason::OutsideMemory { .. }
    ));
}

#[test]
fn a_buffer_across_a_memory_hole_is_refused_but_buffers_on_both_sides_are_not() {
    // RAM below and above a hole, like the MMIO gap.
    let m = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x20_0000),
        (GuestAddress(0x30_0000), 0x10_0000),
    ])
    .unwrap();
    let across = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(0x1f_fe00, 0x400),
        status(),
    ];
    assert!(matches!(
        parse_chain(&m, &across).unwrap_err().reason,
        Reason::OutsideMemory {
            addr: 0x1f_fe00,
            ..
        }
    ));
    let in_the_hole = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(0x28_0000, 512),
        status(),
    ];
    assert!(parse_chain(&m, &in_the_hole).is_err());
    let both_sides = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(0x1f_fe00, 0x200),
        writable(0x30_0000, 0x200),
        writable(STATUS, 1),
    ];
    assert!(parse_chain(&m, &both_sides).is_ok());

    // Adjacent regions without a hole: a buffer may span them.
    let m = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x18_0000),
        (GuestAddress(0x18_0000), 0x8_0000),
    ])
    .unwrap();
    let spanning = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(0x17_fe00, 0x400),
        status(),
    ];
    assert!(parse_chain(&m, &spanning).is_ok());
}

#[test]
fn writes_on_a_read_only_disk_are_io_errors() {
    let m = memory();
    let write = [
        header(&m, VIRTIO_BLK_T_OUT, 0),
        readable(DATA, 512),
        status(),
    ];
    assert_refused(
        parse_on(&m, &write, CAPACITY, RO),
        Reason::ReadOnly { request: "write" },
        VIRTIO_BLK_S_IOERR,
    );
    // Not offered on a read-only disk, but refused as a write all the same.
    let discard = [
        header(&m, VIRTIO_BLK_T_DISCARD, 0),
        segment(&m, 0, 1, 0),
        status(),
    ];
    assert_refused(
        parse_on(&m, &discard, CAPACITY, RO),
        Reason::ReadOnly { request: "discard" },
        VIRTIO_BLK_S_IOERR,
    );
    let zeroes = [
        header(&m, VIRTIO_BLK_T_WRITE_ZEROES, 0),
        segment(&m, 0, 1, 0),
        status(),
    ];
    assert_refused(
        parse_on(&m, &zeroes, CAPACITY, RO | FEATURES),
        Reason::ReadOnly {
            request: "write zeroes",
        },
        VIRTIO_BLK_S_IOERR,
    );
    let read = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(DATA, 512),
        status(),
    ];
    assert!(parse_on(&m, &read, CAPACITY, RO).is_ok());
}

#[test]
fn too_many_or_too_large_data_descriptors_are_refused() {
    let m = memory();
    let count = SEG_MAX as usize + 1;
    let mut descs = vec![header(&m, VIRTIO_BLK_T_IN, 0)];
    descs.extend((0..count).map(|i| writable(DATA + 512 * i as u64, 512)));
    descs.push(status());
    assert_refused(
        parse_chain(&m, &descs),
        Reason::TooManySegments {
            count,
            max: SEG_MAX,
        },
        VIRTIO_BLK_S_IOERR,
    );
    // SEG_MAX descriptors of SIZE_MAX are the most allowed; one byte more is
    // refused before the buffers are even looked at.
    let len = MAX_REQUEST_BYTES as u32 - SIZE_MAX;
    let descs = [
        header(&m, VIRTIO_BLK_T_IN, 0),
        writable(DATA, len),
        writable(DATA, SIZE_MAX + 1),
        status(),
    ];
    assert_refused(
        parse_on(&m, &descs, u64::MAX, FEATURES),
        Reason::DataTooLong {
            len: MAX_REQUEST_BYTES + 1,
            max: MAX_REQUEST_BYTES,
        },
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn a_flush_with_data_is_refused() {
    let m = memory();
    let descs = [
        header(&m, VIRTIO_BLK_T_FLUSH, 0),
        writable(DATA, 512),
        status(),
    ];
    assert_refused(
        parse_chain(&m, &descs),
        Reason::UnexpectedData { count: 1 },
        VIRTIO_BLK_S_IOERR,
    );
}

#[test]
fn bad_discard_and_write_zeroes_segments_are_refused() {
    let m = memory();
    let discard_unmap = [
        header(&m, VIRTIO_BLK_T_DISCARD, 0),
        segment(&m, 0, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP),
        status(),
    ];
    assert_refused(
        parse_chain(&m, &discard_unmap),
        Reason::FlagsUnsupported {
            flags: 1,
            request: "discard",
        },
        VIRTIO_BLK_S_UNSUPP,
    );
    let zeroes_unknown_flag = [
        header(&m, VIRTIO_BLK_T_WRITE_ZEROES, 0),
        segment(&m, 0, 1, 0x2),
        status(),
    ];
    assert_refused(
        parse_chain(&m, &zeroes_unknown_flag),
        Reason::FlagsUnsupported {
            flags: 2,
            request: "write zeroes",
        },
        VIRTIO_BLK_S_UNSUPP,
    );
    let two_segments = [
        header(&m, VIRTIO_BLK_T_DISCARD, 0),
        readable(SEGMENT, 32),
        status(),
    ];
    assert_refused(
        parse_chain(&m, &two_segments),
        Reason::SegmentCount {
            len: 32,
            request: "discard",
        },
        VIRTIO_BLK_S_IOERR,
    );
    let past_the_end = [
        header(&m, VIRTIO_BLK_T_DISCARD, 0),
        segment(&m, CAPACITY - 1, 2, 0),
        status(),
    ];
    assert!(matches!(
        parse_chain(&m, &past_the_end).unwrap_err().reason,
        Reason::SectorRange { .. }
    ));
    let too_long = [
        header(&m, VIRTIO_BLK_T_WRITE_ZEROES, 0),
        segment(&m, 0, MAX_WRITE_ZEROES_SECTORS + 1, 0),
        status(),
    ];
    assert!(matches!(
        parse_on(&m, &too_long, u64::MAX, FEATURES)
            .unwrap_err()
            .reason,
        Reason::RangeTooLong { .. }
    ));
    let writable_segment = [
        header(&m, VIRTIO_BLK_T_DISCARD, 0),
        writable(SEGMENT, 16),
        status(),
    ];
    assert!(matches!(
        parse_chain(&m, &writable_segment).unwrap_err().reason,
        Reason::WrongDirection { .. }
    ));
}

#[test]
fn an_endless_descriptor_stream_is_cut_off() {
    let m = memory();
    let endless = std::iter::repeat(Descriptor::new(DATA, 512, 0, 0));
    assert_no_status(
        parse(endless, &m, CAPACITY, FEATURES),
        Reason::ChainTooLong { max: MAX_CHAIN_LEN },
    );
}
