//! The device behind the real virtio-mmio transport and event handler, on
//! a real TAP in a network namespace of its own: activation through the
//! registers, the TAP watched by the event loop (and not watched while a
//! frame waits for buffers), queue kicks through the queue eventfds,
//! interrupts through the irqfd.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use mercury_tests::netns::in_new_netns;
use vm_memory::{Bytes, GuestAddress};

use super::tap::if_index;
use super::tap_tests::{
    bring_up, is_test_frame, packet_socket, test_frame, wait_readable, GUEST_MAC, HOST_MAC,
};
use super::test_utils::{memory, GuestQueue};
use super::{Net, NetConfig, RX_QUEUE, TX_QUEUE, VNET_HDR_LEN};
use crate::virtio::handler::DeviceEventHandler;
use crate::virtio::mmio::{MmioDevice, MmioTransport};
use crate::virtio::VirtioDevice;
use crate::BusDevice;

/// virtio-mmio registers (virtio 1.2, 4.2.2).
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;

fn write(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// What a driver does: status, features (VERSION_1 only), both queues,
/// DRIVER_OK.
fn drive(t: &mut MmioTransport, queues: [&GuestQueue<'_>; 2]) {
    write(t, STATUS, 1);
    write(t, STATUS, 1 | 2);
    write(t, DRIVER_FEATURES_SEL, 0);
    write(t, DRIVER_FEATURES, 0);
    write(t, DRIVER_FEATURES_SEL, 1);
    write(t, DRIVER_FEATURES, 1);
    write(t, STATUS, 1 | 2 | 8);
    for (index, queue) in queues.into_iter().enumerate() {
        write(t, QUEUE_SEL, index as u32);
        write(t, QUEUE_NUM, 16);
        let m = &queue.mock;
        for (reg, addr) in [
            (QUEUE_DESC_LOW, m.desc_table_addr()),
            (QUEUE_DRIVER_LOW, m.avail_addr()),
            (QUEUE_DEVICE_LOW, m.used_addr()),
        ] {
            write(t, reg, addr.0 as u32);
            write(t, reg + 4, (addr.0 >> 32) as u32);
        }
        write(t, QUEUE_READY, 1);
    }
    write(t, STATUS, 1 | 2 | 8 | 4);
    assert_eq!(
        t.status(),
        1 | 2 | 8 | 4,
        "the transport refused the set-up"
    );
}

#[test]
fn the_event_loop_runs_the_device_on_a_real_tap() {
    in_new_netns(|| {
        let name = "mercury-mmio";
        let memory = memory();
        let mut rx = GuestQueue::new(&memory, 0, 16);
        let mut tx = GuestQueue::new(&memory, 0x8000, 16);
        let net = Arc::new(Mutex::new(
            Net::new(&NetConfig {
                tap: name.to_string(),
                mac: GUEST_MAC,
            })
            .unwrap(),
        ));
        let device: Arc<Mutex<dyn VirtioDevice>> = net.clone();
        let MmioDevice {
            mut transport,
            handler,
            queue_evts,
            irq_evt,
        } = MmioDevice::new(device, memory.clone()).unwrap();
        let mut events = EventManager::<DeviceEventHandler>::new().unwrap();
        events.add_subscriber(handler);
        drive(&mut transport, [&rx, &tx]);
        bring_up(name);
        let host = packet_socket(name);
        let deadline = Instant::now() + Duration::from_secs(5);

        // Host → guest with no RX buffers: the device takes one frame and
        // stops watching the TAP, so the loop goes quiet though the TAP
        // still has frames to read.
        let sent: Vec<Vec<u8>> = (0..2)
            .map(|i| test_frame(GUEST_MAC, HOST_MAC, 100, i))
            .collect();
        for frame in &sent {
            // SAFETY: the kernel reads `frame.len()` bytes from `frame`.
            let n = unsafe { libc::send(host.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(n, frame.len() as isize);
        }
        let mut quiet = false;
        while !quiet {
            assert!(Instant::now() < deadline, "the event loop never went quiet");
            quiet = events.run_with_timeout(200).unwrap() == 0;
        }
        assert_eq!(net.lock().unwrap().stats().rx_frames, 0);

        // Buffers and a kick: the held frame and the rest come in, in order.
        for i in 0..8 {
            rx.add_chain(&[(0x20_0000 + i * 0x1000, 2048, true)]);
        }
        queue_evts[RX_QUEUE].write(1).unwrap();
        let received = loop {
            assert!(Instant::now() < deadline, "frames missing: {:?}", rx.used());
            events.run_with_timeout(100).unwrap();
            let frames: Vec<Vec<u8>> = rx
                .used()
                .into_iter()
                .filter_map(|(head, len)| {
                    let mut bytes = vec![0u8; len as usize];
                    let addr = GuestAddress(0x20_0000 + u64::from(head) * 0x1000);
                    memory.read_slice(&mut bytes, addr).unwrap();
                    let frame = bytes.split_off(VNET_HDR_LEN);
                    is_test_frame(&frame).then_some(frame)
                })
                .collect();
            if frames.len() >= sent.len() {
                break frames;
            }
        };
        assert_eq!(received, sent, "lost, repeated or reordered");
        assert!(irq_evt.read().unwrap() > 0, "no interrupt");

        // Guest → host through a TX kick.
        let frame = test_frame([0xff; 6], GUEST_MAC, 80, 5);
        memory
            .write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(0x10_0000))
            .unwrap();
        memory.write_slice(&frame, GuestAddress(0x10_000c)).unwrap();
        tx.add_chain(&[(0x10_0000, (VNET_HDR_LEN + frame.len()) as u32, false)]);
        queue_evts[TX_QUEUE].write(1).unwrap();
        events.run_with_timeout(100).unwrap();
        assert_eq!(tx.used(), vec![(0, 0)]);
        let mut buf = vec![0u8; 2048];
        loop {
            assert!(
                wait_readable(host.as_raw_fd(), deadline),
                "the frame never reached the TAP"
            );
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::recv(host.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert!(n > 0);
            if is_test_frame(&buf[..n as usize]) {
                assert_eq!(buf[..n as usize], frame[..]);
                break;
            }
        }

        // Everything that held the device gone: so is the TAP.
        drop((events, transport, net, host));
        assert_eq!(if_index(name), None, "{name} outlived the device");
    });
}
