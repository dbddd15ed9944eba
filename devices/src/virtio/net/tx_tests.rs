//! TX unit tests on a fake TAP and mock queues.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::test_utils::{memory, GuestQueue, Harness, FAKE_FD};
use super::{FRAMES_PER_WAKE, MAX_FRAME_LEN, TX_QUEUE, VNET_HDR_LEN};
use crate::virtio::{FdChange, VERSION_1};

/// Writes `len` pattern bytes at `addr`; returns them.
fn fill(memory: &GuestMemoryMmap, addr: u64, len: usize, seed: u8) -> Vec<u8> {
    let bytes: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
    memory.write_slice(&bytes, GuestAddress(addr)).unwrap();
    bytes
}

fn queues(memory: &GuestMemoryMmap, tx_size: u16) -> (GuestQueue<'_>, GuestQueue<'_>) {
    (
        GuestQueue::new(memory, 0, 16),
        GuestQueue::new(memory, 0x8000, tx_size),
    )
}

#[test]
fn chains_of_any_shape_are_sent_whole() {
    let memory = memory();
    let (rx, mut tx) = queues(&memory, 16);
    // Header alone, then many small descriptors and one larger.
    let mut split = fill(&memory, 0x10_0000, VNET_HDR_LEN, 0);
    let mut descs = vec![(0x10_0000, VNET_HDR_LEN as u32, false)];
    for i in 0..10u64 {
        split.extend(fill(&memory, 0x11_0000 + i * 0x100, 7, i as u8));
        descs.push((0x11_0000 + i * 0x100, 7, false));
    }
    split.extend(fill(&memory, 0x12_0000, 50, 9));
    descs.push((0x12_0000, 50, false));
    tx.add_chain(&descs);
    // Header and frame in one descriptor; an empty descriptor in between.
    let whole = fill(&memory, 0x13_0000, 100, 4);
    tx.add_chain(&[
        (0x13_0000, 60, false),
        (0x14_0000, 0, false),
        (0x13_003c, 40, false),
    ]);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);

    h.notify(TX_QUEUE);
    assert_eq!(h.tap().from_guest, vec![split, whole]);
    assert_eq!(tx.used(), vec![(0, 0), (12, 0)]);
    assert_eq!(h.interrupt.used(), 1);
    assert_eq!(h.net.stats().tx_frames, 2);
    assert_eq!(h.net.stats().tx_bytes, 132 + 100);
}

#[test]
fn malformed_chains_are_dropped_and_counted() {
    let memory = memory();
    let (rx, mut tx) = queues(&memory, 16);
    fill(&memory, 0x10_0000, 0x1000, 0);
    tx.add_chain(&[(0x10_0000, 12, false), (0x10_0100, 64, true)]); // writable
    tx.add_chain(&[(0x3f_ff00, 0x1000, false)]); // past guest memory
    tx.add_chain(&[(0x10_0000, (VNET_HDR_LEN + 13) as u32, false)]); // too short
    let good = fill(&memory, 0x11_0000, 80, 1);
    tx.add_chain(&[(0x11_0000, 80, false)]);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);

    h.notify(TX_QUEUE);
    assert_eq!(h.tap().from_guest, vec![good]);
    assert_eq!(tx.used(), vec![(0, 0), (2, 0), (3, 0), (4, 0)]);
    let stats = h.net.stats();
    assert_eq!((stats.tx_bad_chains, stats.tx_frames), (3, 1));
    assert!(h.interrupt.broken().is_empty());
}

#[test]
fn a_frame_over_the_limit_is_dropped_and_one_at_the_limit_is_sent() {
    let memory = memory();
    let (rx, mut tx) = queues(&memory, 16);
    let limit = VNET_HDR_LEN + MAX_FRAME_LEN;
    let at_limit = fill(&memory, 0x10_0000, limit, 3);
    tx.add_chain(&[
        (0x10_0000, 12, false),
        (0x10_000c, (limit - 12) as u32, false),
    ]);
    tx.add_chain(&[
        (0x10_0000, 12, false),
        (0x10_000c, (limit - 11) as u32, false),
    ]);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);

    h.notify(TX_QUEUE);
    assert_eq!(h.tap().from_guest, vec![at_limit]);
    assert_eq!(tx.used().len(), 2);
    assert_eq!(h.net.stats().tx_oversize, 1);
}

#[test]
fn a_full_tap_keeps_the_chain_until_it_is_writable() {
    let memory = memory();
    let (rx, mut tx) = queues(&memory, 16);
    let first = fill(&memory, 0x10_0000, 60, 1);
    let second = fill(&memory, 0x11_0000, 70, 2);
    tx.add_chain(&[(0x10_0000, 60, false)]);
    tx.add_chain(&[(0x11_0000, 70, false)]);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);
    h.tap().refuse_writes = 2;

    h.notify(TX_QUEUE);
    assert!(h.tap().from_guest.is_empty());
    assert!(
        tx.used().is_empty(),
        "the refused chain stays with the device"
    );
    assert_eq!(
        h.last_watch(),
        Some(FdChange::Modify(FAKE_FD, EventSet::IN | EventSet::OUT))
    );
    // Still full: nothing moves, nothing is lost.
    h.tap_event(EventSet::OUT);
    assert!(tx.used().is_empty());
    h.tap_event(EventSet::OUT);
    assert_eq!(h.tap().from_guest, vec![first, second]);
    assert_eq!(tx.used(), vec![(0, 0), (1, 0)]);
    assert_eq!(
        h.last_watch(),
        Some(FdChange::Modify(FAKE_FD, EventSet::IN))
    );
    assert_eq!(h.net.stats().tx_blocked, 2);
    assert_eq!(h.net.stats().tx_frames, 2);
}

#[test]
fn tx_work_per_wake_is_bounded() {
    let memory = memory();
    let (rx, mut tx) = queues(&memory, 256);
    for i in 0..100u64 {
        fill(&memory, 0x10_0000 + i * 0x100, 60, i as u8);
        tx.add_chain(&[(0x10_0000 + i * 0x100, 60, false)]);
    }
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);

    h.notify(TX_QUEUE);
    assert_eq!(h.tap().from_guest.len(), FRAMES_PER_WAKE);
    assert_eq!(
        h.last_watch(),
        Some(FdChange::Modify(FAKE_FD, EventSet::IN | EventSet::OUT))
    );
    h.tap_event(EventSet::OUT);
    assert_eq!(h.tap().from_guest.len(), 100);
    assert_eq!(
        h.last_watch(),
        Some(FdChange::Modify(FAKE_FD, EventSet::IN))
    );
    for (i, frame) in h.tap().from_guest.iter().enumerate() {
        assert_eq!(frame[0], i as u8, "frame {i} out of order");
    }
}

#[test]
fn a_runaway_tx_available_index_breaks_the_device() {
    let memory = memory();
    let (rx, tx) = queues(&memory, 16);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);
    tx.mock.avail().idx().store(100);
    h.notify(TX_QUEUE);
    assert_eq!(h.interrupt.broken().len(), 1, "{:?}", h.interrupt.broken());
    assert_eq!(h.last_watch(), Some(FdChange::Remove(FAKE_FD)));
}
