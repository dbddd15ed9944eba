//! Tests of the device's configuration, features, lifecycle and the MAC
//! helpers.

use virtio_bindings::virtio_net::*;
use vmm_sys_util::epoll::EventSet;

use super::device::guest_offloads;
use super::tap::{Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_UFO};
use super::test_utils::{frame, memory, GuestQueue, Harness, FAKE_FD, MAC};
use super::*;
use crate::virtio::{ActivateError, FdChange, FdWatch, VirtioDevice, VERSION_1};

fn fake_net(offloads: u32) -> (Net, std::sync::Arc<std::sync::Mutex<test_utils::FakeState>>) {
    let state = std::sync::Arc::new(std::sync::Mutex::new(test_utils::FakeState::default()));
    let net = Net::with_backend(
        Box::new(test_utils::FakeTap(state.clone())),
        "fake0".to_string(),
        MAC,
        offloads,
    );
    (net, state)
}

#[test]
fn config_space_holds_the_mac_and_link_up() {
    let (net, _) = fake_net(0);
    assert_eq!(net.device_type(), 1);
    assert_eq!(net.queue_max_sizes(), &[256, 256]);
    let mut config = [0xffu8; 12];
    net.read_config(0, &mut config);
    assert_eq!(config[..6], MAC);
    assert_eq!(u16::from_le_bytes([config[6], config[7]]), 1, "LINK_UP");
    assert_eq!(config[10..], [0, 0], "past the end reads as zero");
}

#[test]
fn features_follow_the_offloads_the_tap_accepts() {
    let always = [
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        crate::virtio::VIRTIO_RING_F_EVENT_IDX,
    ];
    let guest = [
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
    ];
    let ufo = [VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_UFO];
    let has = |features: u64, bits: &[u32]| bits.iter().all(|&b| features & (1 << b) != 0);
    let none = |features: u64, bits: &[u32]| bits.iter().all(|&b| features & (1 << b) == 0);

    let (net, _) = fake_net(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6);
    let f = net.features();
    assert!(f & VERSION_1 != 0 && has(f, &always) && has(f, &guest) && none(f, &ufo));

    let (net, _) = fake_net(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UFO);
    assert!(has(net.features(), &ufo));

    let (net, _) = fake_net(0);
    let f = net.features();
    assert!(has(f, &always) && none(f, &guest) && none(f, &ufo));
    assert!(none(f, &[VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_VQ]));
}

#[test]
fn acked_guest_features_set_the_tap_offloads() {
    let (mut net, state) = fake_net(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UFO);
    let bits = |list: &[u32]| list.iter().fold(VERSION_1, |f, &b| f | (1 << b));
    net.ack_features(bits(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4]));
    assert_eq!(state.lock().unwrap().offload, Some(TUN_F_CSUM | TUN_F_TSO4));
    net.ack_features(bits(&[
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_UFO,
        VIRTIO_NET_F_HOST_TSO4,
    ]));
    assert_eq!(
        state.lock().unwrap().offload,
        Some(TUN_F_CSUM | TUN_F_TSO6 | TUN_F_UFO)
    );
    // No segmentation without checksum offload.
    assert_eq!(guest_offloads(bits(&[VIRTIO_NET_F_GUEST_TSO4])), 0);
    net.ack_features(VERSION_1);
    assert_eq!(state.lock().unwrap().offload, Some(0));
}

#[test]
fn reset_stops_watching_and_forgets_the_held_frame() {
    let memory = memory();
    let rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);
    h.tap().to_guest.extend([frame(100, 1), frame(50, 2)]);
    h.tap_event(EventSet::IN); // the first frame is held

    let mut fds = FdWatch::default();
    h.net.reset(&mut fds);
    // Not watched while a frame was held, so nothing to remove.
    assert_eq!(fds.changes, vec![]);

    // A new session on fresh queues gets the next frame, not the old one.
    let mut rx2 = GuestQueue::new(&memory, 0x10000, 16);
    rx2.add_chain(&[(0x10_0000, 2048, true)]);
    let mut fds = FdWatch::default();
    h.net
        .activate(
            memory.clone(),
            vec![
                rx2.mock.create_queue().unwrap(),
                tx.mock.create_queue().unwrap(),
            ],
            h.interrupt.clone(),
            &mut fds,
        )
        .unwrap();
    assert_eq!(fds.changes, vec![FdChange::Add(FAKE_FD, EventSet::IN)]);
    h.tap_event(EventSet::IN);
    assert_eq!(rx2.used(), vec![(0, 62)]);
    assert!(rx.used().is_empty());

    let mut fds = FdWatch::default();
    h.net.reset(&mut fds);
    assert_eq!(fds.changes, vec![FdChange::Remove(FAKE_FD)]);
    // Inactive: events and notifications do nothing.
    h.tap().to_guest.push_back(frame(10, 3));
    h.tap_event(EventSet::IN);
    h.notify(RX_QUEUE);
    assert_eq!(h.tap().to_guest.len(), 1);
}

#[test]
fn activation_needs_both_queues_ready() {
    let memory = memory();
    let rx = GuestQueue::new(&memory, 0, 16);
    let (mut net, _) = fake_net(0);
    let mut tx_queue: virtio_queue::Queue = rx.mock.create_queue().unwrap();
    virtio_queue::QueueT::set_ready(&mut tx_queue, false);
    let result = net.activate(
        memory.clone(),
        vec![rx.mock.create_queue().unwrap(), tx_queue],
        std::sync::Arc::new(crate::virtio::test_utils::CountingInterrupt::default()),
        &mut FdWatch::default(),
    );
    assert!(
        matches!(result, Err(ActivateError::QueueNotReady { index: 1 })),
        "{result:?}"
    );
}

#[test]
fn a_tap_error_or_hang_up_breaks_the_device() {
    let memory = memory();
    let rx = GuestQueue::new(&memory, 0, 16);
    let tx = GuestQueue::new(&memory, 0x8000, 16);
    let mut h = Harness::new(&memory, &rx, &tx, VERSION_1);
    h.tap_event(EventSet::ERROR);
    assert_eq!(h.interrupt.broken().len(), 1);
    assert!(h.interrupt.broken()[0].contains("fake0"));
    assert_eq!(h.last_watch(), Some(FdChange::Remove(FAKE_FD)));
}

#[test]
fn mac_from_name_is_stable_local_and_unicast() {
    let a = mac_from_name("prod/node-1/eth0");
    assert_eq!(a, mac_from_name("prod/node-1/eth0"));
    assert_eq!(a[0], 0x02, "{a:02x?}");
    let names = [
        "prod/node-1/eth0",
        "prod/node-2/eth0",
        "prod/node-1/eth1",
        "",
    ];
    let macs: std::collections::HashSet<_> = names.iter().map(|n| mac_from_name(n)).collect();
    assert_eq!(macs.len(), names.len());
    // Pinned: VMs keep their address across mercury releases.
    assert_eq!(mac_from_name(""), [0x02, 0xcb, 0xf2, 0x9c, 0xe4, 0x84]);
}

#[test]
fn parse_mac_takes_unicast_and_refuses_the_rest() {
    assert_eq!(
        parse_mac("52:54:00:12:34:5f").unwrap(),
        [0x52, 0x54, 0x00, 0x12, 0x34, 0x5f]
    );
    assert_eq!(parse_mac("02:AB:cd:00:00:01").unwrap()[1], 0xab);
    for bad in [
        "",
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "52-54-00-12-34-56",
        "52:54:00:12:34:5",
        "52:54:00:12:34:5g",
        "52:54:00:12:34:+5",
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
    ] {
        let err = parse_mac(bad).expect_err(bad);
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn bad_tap_names_are_refused_by_name() {
    for bad in [
        "",
        "sixteen-chars-xx",
        "a/b",
        "a:b",
        "a b",
        "tap%d",
        "..",
        ".",
    ] {
        let err = Tap::open(bad).expect_err(bad);
        assert!(matches!(err, NetError::TapName { .. }), "{bad}: {err}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}
