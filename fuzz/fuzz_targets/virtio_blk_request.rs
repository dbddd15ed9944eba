//! Guest-controlled virtio-blk requests: any descriptor chain over any guest
//! memory contents (two RAM regions around a hole) is parsed and executed
//! against an in-memory disk without panicking, and never touches the disk
//! outside the sectors the request was allowed.
#![no_main]

use devices::virtio::block::{process_request, MemoryDisk, RequestContext, RequestKind};
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// RAM below and above a hole, like the MMIO gap.
const LOW: (u64, usize) = (0, 0x1_0000);
const HIGH: (u64, usize) = (0x2_0000, 0x1_0000);

fuzz_target!(|data: &[u8]| {
    // [capacity u8, features u8, count u8, count * (addr u32, len u32, flags u8), memory...]
    if data.len() < 3 {
        return;
    }
    let capacity = u64::from(data[0]);
    let feature_bits = data[1];
    let count = usize::from(data[2] % 40);
    let mut rest = &data[3..];
    let mut descriptors = Vec::with_capacity(count);
    for _ in 0..count {
        if rest.len() < 9 {
            break;
        }
        let addr = u64::from(u32::from_le_bytes(rest[0..4].try_into().unwrap()));
        // Mostly small lengths, sometimes huge ones.
        let raw_len = u32::from_le_bytes(rest[4..8].try_into().unwrap());
        let len = if raw_len & 0x8000_0000 != 0 { raw_len } else { raw_len % 0x3000 };
        let flags = u16::from(rest[8] & 0x2); // VRING_DESC_F_WRITE or not
        // Addresses land around the two regions and the hole.
        let addr = if addr & 0x8000_0000 != 0 { addr } else { addr % 0x3_0000 };
        descriptors.push(Descriptor::new(addr, len, flags, 0));
        rest = &rest[9..];
    }
    let memory = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(LOW.0), LOW.1),
        (GuestAddress(HIGH.0), HIGH.1),
    ])
    .expect("guest memory");
    let low = rest.len().min(LOW.1);
    memory.write_slice(&rest[..low], GuestAddress(LOW.0)).expect("low");
    let high = (rest.len() - low).min(HIGH.1);
    memory
        .write_slice(&rest[low..low + high], GuestAddress(HIGH.0))
        .expect("high");

    // RO, FLUSH, DISCARD, WRITE_ZEROES from the feature byte.
    let mut features = 0u64;
    for (i, bit) in [5u32, 9, 13, 14].into_iter().enumerate() {
        if feature_bits & (1 << i) != 0 {
            features |= 1 << bit;
        }
    }
    // The disk is one sector longer than it claims: that sector must stay
    // untouched.
    let mut disk = MemoryDisk::new(capacity as usize + 1);
    disk.bytes.fill(0xa5);
    let id = *b"fuzz-disk\0\0\0\0\0\0\0\0\0\0\0";
    let mut bounce = Vec::new();
    let parsed = devices::virtio::block::parse(descriptors.clone(), &memory, capacity, features);
    let completion = {
        let mut ctx = RequestContext {
            backend: &mut disk,
            capacity_sectors: capacity,
            features,
            id: &id,
            bounce: &mut bounce,
        };
        process_request(descriptors.clone(), &memory, &mut ctx)
    };
    let writable: u64 = descriptors
        .iter()
        .filter(|d| d.is_write_only())
        .map(|d| u64::from(d.len()))
        .sum();
    assert!(u64::from(completion.used_len) <= writable);
    let tail = &disk.bytes[capacity as usize * 512..];
    assert!(tail.iter().all(|&b| b == 0xa5), "wrote past the disk's end");
    if let Ok(request) = parsed {
        if let RequestKind::Read { .. } | RequestKind::GetId { .. } | RequestKind::Flush = request.kind {
            assert!(disk.bytes.iter().all(|&b| b == 0xa5), "a read changed the disk");
        }
    }
});
