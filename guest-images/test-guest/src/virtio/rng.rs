//! `virtio-rng`: read bytes from the entropy device.

use super::{addr_of, buffer_page, id, Found, Virtq};
use crate::serial::println;

/// Bytes asked for.
const REQUEST: u32 = 64;

pub fn check(found: &Found) {
    let Some(window) = found.nth_of_type(id::RNG, 0) else {
        println!("CHECK virtio-rng FAIL no-rng-device");
        return;
    };
    if let Err(why) = window.negotiate(0) {
        println!("CHECK virtio-rng FAIL {why}");
        return;
    }
    let mut queue = match Virtq::new(window, 0) {
        Ok(q) => q,
        Err(why) => {
            println!("CHECK virtio-rng FAIL {why}");
            return;
        }
    };
    if !window.driver_ok() {
        println!("CHECK virtio-rng FAIL device-needs-reset");
        return;
    }
    let Some(buf) = buffer_page() else {
        println!("CHECK virtio-rng FAIL out-of-buffers");
        return;
    };
    buf[..REQUEST as usize].fill(0);
    queue.submit(&[(addr_of(buf), REQUEST, true)]);
    match queue.wait_used() {
        Some(used) => {
            let nonzero = buf[..REQUEST as usize].iter().filter(|&&b| b != 0).count();
            // 64 random bytes are all zero with probability 2^-512.
            if used.len == REQUEST && nonzero > 0 {
                println!("CHECK virtio-rng PASS bytes={} nonzero={nonzero}", used.len);
            } else {
                println!("CHECK virtio-rng FAIL bytes={} nonzero={nonzero}", used.len);
            }
        }
        None => println!("CHECK virtio-rng FAIL timeout"),
    }
}
