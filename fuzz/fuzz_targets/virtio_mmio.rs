//! Guest-controlled virtio-mmio register accesses and queue contents: any
//! sequence of register reads and writes, guest memory bytes (descriptor
//! tables, rings, buffers) and queue notifications, against the transport
//! with a virtio-rng device behind it, must not panic or hang.
#![no_main]

use std::sync::{Arc, Mutex};

use devices::virtio::mmio::MmioDevice;
use devices::virtio::rng::Rng;
use devices::virtio::VirtioDevice;
use devices::BusDevice;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory: 64 KiB at 0, a hole, 64 KiB at 1 MiB (a buffer may cross
/// the hole).
fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000), (GuestAddress(0x10_0000), 0x1_0000)])
        .expect("guest memory")
}

fuzz_target!(|data: &[u8]| {
    let memory = memory();
    let rng = Arc::new(Mutex::new(Rng::new()));
    let as_device: Arc<Mutex<dyn VirtioDevice>> = rng.clone();
    let mut device = MmioDevice::new(as_device, memory.clone()).expect("device");
    // Each operation: [op, a, b, c, d, e, f] where op selects
    //   0: register write (offset a*4 % 0x200, value b..e),
    //   1: register read,
    //   2: guest memory write of 4 bytes at (a,b) * 4,
    //   3: queue notification processed (as the VMM thread would).
    let mut rest = data;
    while rest.len() >= 7 {
        let (op, a, b) = (rest[0] % 4, rest[1], rest[2]);
        let value = [rest[3], rest[4], rest[5], rest[6]];
        rest = &rest[7..];
        match op {
            0 => device.transport.write(u64::from(a) * 4 % 0x200, &value),
            1 => {
                let mut out = [0u8; 4];
                device.transport.read(u64::from(a) * 4 % 0x200, &mut out);
            }
            2 => {
                let addr = (u64::from(a) << 8 | u64::from(b)) * 4;
                let _ = memory.write_slice(&value, GuestAddress(addr % 0x1_0000));
            }
            _ => {
                let mut fds = devices::virtio::FdWatch::default();
                rng.lock().unwrap().queue_notified(0, &mut fds);
            }
        }
    }
});
