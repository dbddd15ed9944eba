//! RX unit tests on a fake TAP and mock queues.

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::EventSet;

use super::test_utils::{frame, memory, GuestQueue, Harness, FAKE_FD};
use super::{FRAMES_PER_WAKE, MAX_FRAME_LEN, RX_QUEUE, VNET_HDR_LEN};
use crate::virtio::{FdChange, VERSION_1};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_DATA_VALID,
};

const MRG: u64 = VERSION_1 | (1 << VIRTIO_NET_F_MRG_RXBUF);

fn read(memory: &vm_memory::GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    memory.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    bytes
}

/// `frame` as the guest must see it: `num_buffers` set.
fn with_num_buffers(mut frame: Vec<u8>, n: u16) -> Vec<u8> {
    frame[10..12].copy_from_slice(&n.to_le_bytes());
    frame
}

#[test]
fn a_frame_without_buffers_waits_and_stops_tap_reads() {
    let memory = memory();
    let mut rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);
    assert_eq!(h.last_watch(), Some(FdChange::Add(FAKE_FD, EventSet::IN)));
    let (first, second) = (frame(100, 1), frame(200, 7));
    h.tap().to_guest.extend([first.clone(), second.clone()]);

    h.tap_event(EventSet::IN);
    assert_eq!(h.tap().reads, 1, "only the frame that has nowhere to go");
    assert!(rx.used().is_empty());
    assert_eq!(h.last_watch(), Some(FdChange::Remove(FAKE_FD)));
    // A late readiness event reads nothing more.
    h.tap_event(EventSet::IN);
    assert_eq!(h.tap().reads, 1);

    rx.add_chain(&[(0x10_0000, 2048, true)]);
    h.notify(RX_QUEUE);
    assert_eq!(rx.used(), vec![(0, 112)]);
    assert_eq!(read(&memory, 0x10_0000, 112), with_num_buffers(first, 1));
    assert_eq!(h.interrupt.used(), 1);
    // The second frame is read and held for the next buffer.
    assert_eq!(h.tap().reads, 2);
    assert_eq!(h.last_watch(), Some(FdChange::Remove(FAKE_FD)));

    rx.add_chain(&[(0x11_0000, 2048, true)]);
    h.notify(RX_QUEUE);
    assert_eq!(rx.used(), vec![(0, 112), (1, 212)]);
    assert_eq!(read(&memory, 0x11_0000, 212), with_num_buffers(second, 1));
    assert_eq!(h.last_watch(), Some(FdChange::Add(FAKE_FD, EventSet::IN)));
    let stats = h.net.stats();
    assert_eq!(
        (stats.rx_frames, stats.rx_bytes, stats.rx_dropped),
        (2, 324, 0)
    );
    assert!(h.interrupt.broken().is_empty());
}

#[test]
fn mergeable_buffers_carry_a_frame_across_chains() {
    let memory = memory();
    let mut rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    // The header alone in its own descriptor, then two more chains.
    rx.add_chain(&[(0x10_0000, 12, true), (0x10_1000, 1000, true)]);
    rx.add_chain(&[(0x11_0000, 1500, true)]);
    rx.add_chain(&[(0x12_0000, 1500, true)]);
    let mut h = Harness::new(&memory, &rx, &tx, MRG);
    let sent = frame(3000, 3);
    h.tap().to_guest.push_back(sent.clone());

    h.tap_event(EventSet::IN);
    assert_eq!(rx.used(), vec![(0, 1012), (2, 1500), (3, 500)]);
    let mut got = read(&memory, 0x10_0000, 12);
    got.extend(read(&memory, 0x10_1000, 1000));
    got.extend(read(&memory, 0x11_0000, 1500));
    got.extend(read(&memory, 0x12_0000, 500));
    assert_eq!(got, with_num_buffers(sent, 3));
    assert_eq!(h.interrupt.used(), 1);
}

#[test]
fn a_frame_waits_for_enough_mergeable_buffers_and_goes_in_once() {
    let memory = memory();
    let mut rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    rx.add_chain(&[(0x10_0000, 1500, true)]);
    let mut h = Harness::new(&memory, &rx, &tx, MRG);
    let sent = frame(3000, 9);
    h.tap().to_guest.push_back(sent.clone());

    h.tap_event(EventSet::IN);
    assert!(rx.used().is_empty(), "one buffer is not enough");
    assert_eq!(h.last_watch(), Some(FdChange::Remove(FAKE_FD)));
    rx.add_chain(&[(0x11_0000, 1500, true)]);
    rx.add_chain(&[(0x12_0000, 1500, true)]);
    h.notify(RX_QUEUE);
    assert_eq!(rx.used(), vec![(0, 1500), (1, 1500), (2, 12)]);
    let mut got = read(&memory, 0x10_0000, 1500);
    got.extend(read(&memory, 0x11_0000, 1500));
    got.extend(read(&memory, 0x12_0000, 12));
    assert_eq!(got, with_num_buffers(sent, 3));
    // Read once, delivered once.
    h.notify(RX_QUEUE);
    assert_eq!(rx.used().len(), 3);
    assert_eq!((h.tap().reads, h.net.stats().rx_frames), (1, 1));
}

#[test]
fn without_mergeable_buffers_a_frame_larger_than_the_buffer_is_dropped() {
    let memory = memory();
    let mut rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    rx.add_chain(&[(0x10_0000, 1000, true)]);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);
    let small = frame(100, 5);
    h.tap().to_guest.extend([frame(2000, 1), small.clone()]);

    h.tap_event(EventSet::IN);
    assert_eq!(h.net.stats().rx_dropped, 1);
    // The buffer the large frame did not fit took the next one.
    assert_eq!(rx.used(), vec![(0, 112)]);
    assert_eq!(read(&memory, 0x10_0000, 112), with_num_buffers(small, 1));
}

#[test]
fn rx_work_per_wake_is_bounded() {
    let memory = memory();
    let mut rx = GuestQueue::new(&memory, 0, 256);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    for i in 0..128 {
        rx.add_chain(&[(0x10_0000 + i * 0x1000, 256, true)]);
    }
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);
    h.tap().to_guest.extend((0..100).map(|i| frame(60, i)));

    h.tap_event(EventSet::IN);
    assert_eq!(rx.used().len(), FRAMES_PER_WAKE);
    assert_eq!(h.tap().to_guest.len(), 100 - FRAMES_PER_WAKE);
    // Still watching: level-triggered readiness brings the device back.
    assert_eq!(h.last_watch(), Some(FdChange::Add(FAKE_FD, EventSet::IN)));
    h.tap_event(EventSet::IN);
    assert_eq!(rx.used().len(), 100);
    // In order, none lost or repeated.
    for (i, &(head, len)) in rx.used().iter().enumerate() {
        assert_eq!((head, len), (i as u16, 72));
        let got = read(&memory, 0x10_0000 + i as u64 * 0x1000, 72);
        assert_eq!(got, with_num_buffers(frame(60, i as u8), 1));
    }
}

#[test]
fn bad_rx_buffers_are_returned_unused() {
    let memory = memory();
    let mut rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    rx.add_chain(&[(0x10_0000, 1500, false)]); // device-readable
    rx.add_chain(&[(0x3f_ff00, 0x1000, true)]); // runs past guest memory
    rx.add_chain(&[(0x11_0000, 8, true)]); // smaller than a header
    rx.add_chain(&[(0x12_0000, 1500, true)]);
    let mut h = Harness::new(&memory, &rx, &tx, MRG);
    let sent = frame(64, 2);
    h.tap().to_guest.push_back(sent.clone());

    h.tap_event(EventSet::IN);
    assert_eq!(rx.used(), vec![(0, 0), (1, 0), (2, 0), (3, 76)]);
    assert_eq!(read(&memory, 0x12_0000, 76), with_num_buffers(sent, 1));
    assert_eq!(h.net.stats().rx_bad_buffers, 3);
    assert!(h.interrupt.broken().is_empty());
}

#[test]
fn checksum_flags_reach_only_a_guest_that_negotiated_guest_csum() {
    for (features, flags) in [
        (VERSION_1, 0),
        (
            VERSION_1 | (1 << VIRTIO_NET_F_GUEST_CSUM),
            VIRTIO_NET_HDR_F_DATA_VALID as u8,
        ),
    ] {
        let memory = memory();
        let mut rx = GuestQueue::new(&memory, 0, 16);
        let tx = GuestQueue::new(&memory, 0x8000, 16);
        rx.add_chain(&[(0x10_0000, 1500, true)]);
        let mut h = Harness::new(&memory, &rx, &tx, features);
        let mut sent = frame(64, 0);
        sent[0] = VIRTIO_NET_HDR_F_DATA_VALID as u8;
        h.tap().to_guest.push_back(sent);
        h.tap_event(EventSet::IN);
        assert_eq!(read(&memory, 0x10_0000, 1)[0], flags, "{features:#x}");
    }
}

#[test]
fn a_runaway_rx_available_index_breaks_the_device() {
    let memory = memory();
    let rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);
    rx.mock.avail().idx().store(100);
    h.tap().to_guest.push_back(frame(64, 0));
    h.tap_event(EventSet::IN);
    assert_eq!(h.interrupt.broken().len(), 1, "{:?}", h.interrupt.broken());
    assert_eq!(h.last_watch(), Some(FdChange::Remove(FAKE_FD)));
    // Inactive: nothing more is read.
    h.tap().to_guest.push_back(frame(64, 1));
    h.tap_event(EventSet::IN);
    assert_eq!(h.tap().to_guest.len(), 1);
}

#[test]
fn a_short_frame_from_the_tap_is_dropped() {
    let memory = memory();
    let mut rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    rx.add_chain(&[(0x10_0000, 1500, true)]);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);
    h.tap()
        .to_guest
        .extend([vec![0u8; VNET_HDR_LEN - 1], frame(20, 0)]);
    h.tap_event(EventSet::IN);
    assert_eq!(rx.used(), vec![(0, 32)]);
    assert_eq!(h.net.stats().rx_dropped, 1);
}

#[test]
fn a_tap_frame_over_the_limit_is_dropped_and_one_at_the_limit_is_delivered() {
    let memory = memory();
    let mut rx = GuestQueue::new(&memory, 0, 64);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    for i in 0..40 {
        rx.add_chain(&[(0x10_0000 + i * 0x1000, 4096, true)]);
    }
    let mut h = Harness::new(&memory, &rx, &tx, MRG);
    let largest = frame(MAX_FRAME_LEN, 4);
    h.tap()
        .to_guest
        .extend([frame(MAX_FRAME_LEN + 1, 3), largest.clone()]);

    h.tap_event(EventSet::IN);
    assert_eq!(h.net.stats().rx_dropped, 1);
    let used = rx.used();
    let chains = largest.len().div_ceil(4096);
    assert_eq!(used.len(), chains);
    // The chains are contiguous in guest memory: read the frame in one go.
    let got = read(&memory, 0x10_0000, largest.len());
    assert_eq!(got, with_num_buffers(largest, chains as u16));
    assert!(h.interrupt.broken().is_empty());
}

#[test]
fn interrupts_follow_event_idx_and_a_split_frame_always_interrupts() {
    let memory = memory();
    let mut rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    for i in 0..6 {
        rx.add_chain(&[(0x10_0000 + i * 0x1000, 1500, true)]);
    }
    let event_idx = 1 << crate::virtio::VIRTIO_RING_F_EVENT_IDX;
    let mut h = Harness::new(&memory, &rx, &tx, MRG | event_idx);
    // Interrupt once the used index passes 5.
    rx.set_used_event(&memory, 5);
    h.tap().to_guest.extend((0..3).map(|i| frame(100, i)));
    h.tap_event(EventSet::IN);
    assert_eq!(rx.used().len(), 3);
    assert_eq!(
        h.interrupt.used(),
        0,
        "the driver asked for no interrupt yet"
    );

    // Two buffers for one frame: published at once, so interrupt rather
    // than trust a count that saw one of them.
    h.tap().to_guest.push_back(frame(2000, 9));
    rx.set_used_event(&memory, 100);
    h.tap_event(EventSet::IN);
    assert_eq!(rx.used().len(), 5);
    assert_eq!(h.interrupt.used(), 1);

    // One buffer, used index passing used_event (5): interrupt.
    rx.set_used_event(&memory, 5);
    h.tap().to_guest.push_back(frame(100, 1));
    h.tap_event(EventSet::IN);
    assert_eq!(rx.used().len(), 6);
    assert_eq!(h.interrupt.used(), 2);
}
