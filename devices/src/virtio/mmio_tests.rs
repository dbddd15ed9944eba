//! Unit tests of the virtio-mmio transport against a recording device.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::*;
use crate::virtio::{ActivateError, FdWatch, VirtioDevice, VirtioInterrupt};

const BASE_FEATURES: u64 = VERSION_1 | (1 << 5);

/// What the transport did to the device.
#[derive(Default)]
struct Record {
    acked: Option<u64>,
    activated: Vec<(u16, bool)>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
    fail_activation: bool,
}

struct RecordingDevice(Arc<Mutex<Record>>);

impl VirtioDevice for RecordingDevice {
    fn device_type(&self) -> u32 {
        2
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn features(&self) -> u64 {
        BASE_FEATURES
    }
    fn ack_features(&mut self, features: u64) {
        self.0.lock().unwrap().acked = Some(features);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::virtio::read_config_bytes(&[0x10, 0x20, 0x30, 0x40], offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(
        &mut self,
        _memory: GuestMemoryMmap,
        queues: Vec<Queue>,
        _interrupt: Arc<dyn VirtioInterrupt>,
        _fds: &mut FdWatch,
    ) -> Result<(), ActivateError> {
        let mut record = self.0.lock().unwrap();
        if record.fail_activation {
            return Err(ActivateError::QueueNotReady { index: 1 });
        }
        record.activated = queues.iter().map(|q| (q.size(), q.ready())).collect();
        Ok(())
    }
    fn queue_notified(&mut self, _index: usize, _fds: &mut FdWatch) {}
    fn reset(&mut self, _fds: &mut FdWatch) {
        self.0.lock().unwrap().resets += 1;
    }
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn transport() -> (MmioDevice, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let device = Arc::new(Mutex::new(RecordingDevice(record.clone())));
    (MmioDevice::new(device, memory()).unwrap(), record)
}

fn read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    t.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn write(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

fn negotiate(t: &mut MmioTransport, features: u64) {
    write(t, reg::STATUS, ACK);
    write(t, reg::STATUS, ACK | DRIVER);
    write(t, reg::DRIVER_FEATURES_SEL, 0);
    write(t, reg::DRIVER_FEATURES, features as u32);
    write(t, reg::DRIVER_FEATURES_SEL, 1);
    write(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK);
}

/// Queue `index` at 0x1000 * (index + 1), `size` entries, ready.
fn set_up_queue(t: &mut MmioTransport, index: u32, size: u32) {
    let base = 0x1_0000 * (index + 1);
    write(t, reg::QUEUE_SEL, index);
    write(t, reg::QUEUE_NUM, size);
    write(t, reg::QUEUE_DESC_LOW, base);
    write(t, reg::QUEUE_DESC_HIGH, 0);
    write(t, reg::QUEUE_DRIVER_LOW, base + 0x1000);
    write(t, reg::QUEUE_DEVICE_LOW, base + 0x2000);
    write(t, reg::QUEUE_READY, 1);
}

#[test]
fn identification_registers() {
    let (mut dev, _) = transport();
    let t = &mut dev.transport;
    assert_eq!(read(t, reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(read(t, reg::VERSION), 2);
    assert_eq!(read(t, reg::DEVICE_ID), 2);
    assert_eq!(read(t, reg::VENDOR_ID), VENDOR_ID);
    write(t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(read(t, reg::DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
    write(t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(read(t, reg::DEVICE_FEATURES), 1 << 5);
    write(t, reg::DEVICE_FEATURES_SEL, 7);
    assert_eq!(read(t, reg::DEVICE_FEATURES), 0);
    write(t, reg::QUEUE_SEL, 1);
    assert_eq!(read(t, reg::QUEUE_NUM_MAX), 8);
    write(t, reg::QUEUE_SEL, 2);
    assert_eq!(read(t, reg::QUEUE_NUM_MAX), 0, "no such queue");
}

#[test]
fn full_negotiation_activates_with_the_queues_set_up() {
    let (mut dev, record) = transport();
    let t = &mut dev.transport;
    negotiate(t, BASE_FEATURES | (1 << 7));
    assert_eq!(t.status(), ACK | DRIVER | FEATURES_OK);
    // Only offered features are acknowledged.
    assert_eq!(record.lock().unwrap().acked, Some(BASE_FEATURES));
    set_up_queue(t, 0, 16);
    set_up_queue(t, 1, 4);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(t.status(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(
        record.lock().unwrap().activated,
        vec![(16, true), (4, true)]
    );
}

#[test]
fn a_driver_without_version_1_never_gets_features_ok() {
    let (mut dev, record) = transport();
    let t = &mut dev.transport;
    negotiate(t, 1 << 5);
    assert_eq!(t.status(), ACK | DRIVER, "FEATURES_OK must stay clear");
    assert_eq!(record.lock().unwrap().acked, None);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert!(record.lock().unwrap().activated.is_empty());
}

#[test]
fn status_writes_out_of_order_are_ignored() {
    let (mut dev, record) = transport();
    let t = &mut dev.transport;
    write(t, reg::STATUS, DRIVER_OK);
    assert_eq!(t.status(), 0);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK);
    assert_eq!(t.status(), 0);
    write(t, reg::STATUS, ACK);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(t.status(), ACK);
    // Clearing a bit is not a transition either.
    write(t, reg::STATUS, ACK | DRIVER);
    write(t, reg::STATUS, ACK);
    assert_eq!(t.status(), ACK | DRIVER);
    assert!(record.lock().unwrap().activated.is_empty());
    // FAILED can be added at any time.
    write(t, reg::STATUS, ACK | DRIVER | FAILED);
    assert_eq!(t.status(), ACK | DRIVER | FAILED);
}

#[test]
fn queue_registers_only_between_features_ok_and_driver_ok() {
    let (mut dev, record) = transport();
    let t = &mut dev.transport;
    write(t, reg::QUEUE_SEL, 0);
    write(t, reg::QUEUE_READY, 1);
    assert_eq!(read(t, reg::QUEUE_READY), 0, "ready before FEATURES_OK");
    negotiate(t, BASE_FEATURES);
    set_up_queue(t, 0, 8);
    set_up_queue(t, 1, 8);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    write(t, reg::QUEUE_SEL, 0);
    write(t, reg::QUEUE_NUM, 2);
    write(t, reg::QUEUE_READY, 0);
    assert_eq!(read(t, reg::QUEUE_READY), 1, "changed after DRIVER_OK");
    assert_eq!(record.lock().unwrap().activated, vec![(8, true), (8, true)]);
}

#[test]
fn bad_queue_sizes_are_refused() {
    let (mut dev, _) = transport();
    let t = &mut dev.transport;
    negotiate(t, BASE_FEATURES);
    write(t, reg::QUEUE_SEL, 0);
    for bad in [0, 3, 12, 32, 0x1_0000, u32::MAX] {
        write(t, reg::QUEUE_NUM, bad);
        assert_eq!(t.queues[0].size(), 16, "size {bad} accepted");
    }
    write(t, reg::QUEUE_NUM, 4);
    assert_eq!(t.queues[0].size(), 4);
}

#[test]
fn a_queue_outside_guest_memory_needs_reset_instead_of_activation() {
    let (mut dev, record) = transport();
    let t = &mut dev.transport;
    negotiate(t, BASE_FEATURES);
    set_up_queue(t, 0, 16);
    write(t, reg::QUEUE_SEL, 1);
    write(t, reg::QUEUE_NUM, 8);
    // Past the end of the 1 MiB of guest memory.
    write(t, reg::QUEUE_DESC_LOW, 0x20_0000);
    write(t, reg::QUEUE_DRIVER_LOW, 0x3000);
    write(t, reg::QUEUE_DEVICE_LOW, 0x4000);
    write(t, reg::QUEUE_READY, 1);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_ne!(t.status() & NEEDS_RESET, 0);
    assert!(record.lock().unwrap().activated.is_empty());
    assert_ne!(read(t, reg::INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG, 0);
    assert_eq!(dev.irq_evt.read().unwrap(), 1);
    // Only a reset gets the device going again.
    write(&mut dev.transport, reg::STATUS, ACK);
    assert_ne!(dev.transport.status() & NEEDS_RESET, 0);
    write(&mut dev.transport, reg::STATUS, 0);
    assert_eq!(dev.transport.status(), 0);
}

#[test]
fn a_failed_activation_needs_reset() {
    let (mut dev, record) = transport();
    record.lock().unwrap().fail_activation = true;
    let t = &mut dev.transport;
    negotiate(t, BASE_FEATURES);
    set_up_queue(t, 0, 16);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_ne!(t.status() & NEEDS_RESET, 0);
}

#[test]
fn reset_returns_everything_to_the_start() {
    let (mut dev, record) = transport();
    let t = &mut dev.transport;
    negotiate(t, BASE_FEATURES);
    set_up_queue(t, 0, 4);
    set_up_queue(t, 1, 4);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    t.interrupt.signal_used_queue();
    write(t, reg::STATUS, 0);
    assert_eq!(record.lock().unwrap().resets, 1);
    assert_eq!(t.status(), 0);
    assert_eq!(read(t, reg::INTERRUPT_STATUS), 0);
    assert_eq!(t.driver_features, 0);
    write(t, reg::QUEUE_SEL, 0);
    assert_eq!(read(t, reg::QUEUE_READY), 0);
    assert_eq!(t.queues[0].size(), 16);
    // And the device can be brought up again.
    negotiate(t, BASE_FEATURES);
    set_up_queue(t, 0, 8);
    write(t, reg::STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(
        record.lock().unwrap().activated,
        vec![(8, true), (8, false)]
    );
}

#[test]
fn interrupt_status_and_acknowledge() {
    let (mut dev, _) = transport();
    let t = &mut dev.transport;
    t.interrupt.signal_used_queue();
    t.interrupt.signal_config_changed();
    assert_eq!(read(t, reg::INTERRUPT_STATUS), 3);
    assert_eq!(read(t, reg::CONFIG_GENERATION), 1);
    write(t, reg::INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_eq!(read(t, reg::INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(dev.irq_evt.read().unwrap(), 2);
}

#[test]
fn config_space_reads_and_writes_reach_the_device() {
    let (mut dev, record) = transport();
    let t = &mut dev.transport;
    let mut two = [0u8; 2];
    t.read(0x101, &mut two);
    assert_eq!(two, [0x20, 0x30]);
    let mut past = [0xffu8; 4];
    t.read(0x1f0, &mut past);
    assert_eq!(past, [0; 4]);
    t.write(0x102, &[7]);
    assert!(
        record.lock().unwrap().config_writes.is_empty(),
        "before DRIVER"
    );
    write(t, reg::STATUS, ACK);
    write(t, reg::STATUS, ACK | DRIVER);
    t.write(0x102, &[7]);
    assert_eq!(record.lock().unwrap().config_writes, vec![(2, vec![7])]);
}

#[test]
fn odd_accesses_do_not_panic_and_read_zero() {
    let (mut dev, _) = transport();
    let t = &mut dev.transport;
    for (offset, len) in [
        (0u64, 1usize),
        (1, 4),
        (0x70, 2),
        (0x7c, 8),
        (0xfd, 4),
        (0x44, 0),
    ] {
        let mut data = vec![0xaa; len];
        t.read(offset, &mut data);
        assert!(data.iter().all(|&b| b == 0), "offset {offset:#x} len {len}");
        t.write(offset, &data);
    }
    for offset in (0..0x100).step_by(4) {
        write(t, offset, u32::MAX);
        read(t, offset);
    }
    assert_eq!(t.status() & DRIVER_OK, 0);
}

#[test]
fn queue_notify_without_ioeventfd_reaches_the_handler() {
    let (mut dev, _) = transport();
    negotiate(&mut dev.transport, BASE_FEATURES);
    set_up_queue(&mut dev.transport, 0, 16);
    write(
        &mut dev.transport,
        reg::STATUS,
        ACK | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    write(&mut dev.transport, reg::QUEUE_NOTIFY, 1);
    write(&mut dev.transport, reg::QUEUE_NOTIFY, 9);
    assert!(dev.queue_evts[0].read().is_err(), "queue 0 not notified");
    assert_eq!(dev.queue_evts[1].read().unwrap(), 1);
}
