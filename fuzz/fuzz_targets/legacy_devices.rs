//! Guest-controlled register accesses to the legacy devices: any sequence of
//! reads and writes, at any offset and length, must not panic or hang.
#![no_main]

use std::time::Instant;

use devices::legacy::{BootTimer, I8042, Serial};
use devices::BusDevice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut serial = Serial::new(Box::new(std::io::sink())).expect("serial");
    let mut i8042 = I8042::new().expect("i8042");
    let mut timer = BootTimer::new(Instant::now());
    // Each access: [device, offset, len (0..=8), is_write, bytes...].
    let mut rest = data;
    while rest.len() >= 4 {
        let (device, offset, len, write) = (rest[0] % 3, u64::from(rest[1]), usize::from(rest[2] % 9), rest[3] & 1 == 1);
        rest = &rest[4..];
        let take = len.min(rest.len());
        let mut buf = rest[..take].to_vec();
        rest = &rest[take..];
        let dev: &mut dyn BusDevice = match device {
            0 => &mut serial,
            1 => &mut i8042,
            _ => &mut timer,
        };
        if write {
            dev.write(offset, &buf);
        } else {
            dev.read(offset, &mut buf);
        }
    }
    // Host input while the guest plays with the UART.
    let _ = serial.enqueue_input(data);
});
