//! `virtio-attack`: a malicious driver. Against the first virtio-rng device
//! it sends requests and register writes a correct driver never would, and
//! checks after each that the device still answers a good request (or, for
//! a ring it cannot trust any more, that it set DEVICE_NEEDS_RESET and
//! works again after a reset). The VMM must survive all of it: the host
//! side of the test checks mercury keeps running and other devices keep
//! working.
//!
//! One line per attack, `VIRTIO-ATTACK <name> survived|broken <detail>`,
//! then `CHECK virtio-attack PASS|FAIL attacks=N survived=M`.

use super::{
    addr_of, buffer_page, id, reg, status, Desc, Found, Virtq, Window, DESC_NEXT, DESC_WRITE,
};
use crate::serial::println;

/// A good request: 16 random bytes into a fresh buffer.
fn good_request(queue: &mut Virtq, buf: &mut [u8; 4096]) -> bool {
    buf[..16].fill(0);
    queue.submit(&[(addr_of(&buf[..]), 16, true)]);
    matches!(queue.wait_used(), Some(used) if used.len == 16)
}

/// Brings the device up from reset with one request queue.
fn bring_up(window: Window) -> Result<Virtq, &'static str> {
    window.negotiate(0)?;
    let queue = Virtq::new_reused(window, 0)?;
    if !window.driver_ok() {
        return Err("needs-reset-at-driver-ok");
    }
    Ok(queue)
}

struct Tally {
    attacks: u32,
    survived: u32,
}

impl Tally {
    fn report(&mut self, name: &str, ok: bool, detail: &str) {
        self.attacks += 1;
        if ok {
            self.survived += 1;
        }
        let verdict = if ok { "survived" } else { "broken" };
        println!("VIRTIO-ATTACK {name} {verdict} {detail}");
    }
}

pub fn check(found: &Found, ram_bytes: u64) {
    let Some(window) = found.nth_of_type(id::RNG, 0) else {
        println!("CHECK virtio-attack FAIL no-rng-device");
        return;
    };
    let Some(buf) = buffer_page() else {
        println!("CHECK virtio-attack FAIL out-of-buffers");
        return;
    };
    let mut tally = Tally {
        attacks: 0,
        survived: 0,
    };

    // Register-level attacks on a device being set up.
    window.write(reg::STATUS, 0);
    window.write(reg::STATUS, status::DRIVER_OK);
    let out_of_order = window.read(reg::STATUS);
    tally.report(
        "status-out-of-order",
        out_of_order == 0,
        if out_of_order == 0 {
            "status=0"
        } else {
            "status-accepted"
        },
    );
    window.write(reg::STATUS, status::ACKNOWLEDGE);
    window.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    // Features before DRIVER, config far out of range, a queue that does
    // not exist, queue sizes that are not powers of two or too large.
    window.write(reg::CONFIG + 0xe00, 0xdead_beef);
    window.write(reg::QUEUE_SEL, 7);
    window.write(reg::QUEUE_NUM, 8);
    window.write(reg::QUEUE_READY, 1);
    window.notify(7);
    window.write(reg::QUEUE_SEL, 0);
    let max = window.read(reg::QUEUE_NUM_MAX);
    window.write(reg::QUEUE_NUM, 3);
    window.write(reg::QUEUE_NUM, max.saturating_mul(2));
    let mut queue = match bring_up(window) {
        Ok(queue) => queue,
        Err(why) => {
            println!("CHECK virtio-attack FAIL setup {why}");
            return;
        }
    };
    let ok = good_request(&mut queue, buf);
    tally.report("registers", ok, "bad-sizes,queue-7,config-0xe00");

    // Descriptor attacks: each chain is bad in one way; the device answers
    // it (any used length) and then serves a good request.
    let buf_addr = addr_of(&buf[..]);
    let attacks: [(&str, &[(u64, u32, bool)]); 5] = [
        ("outside-memory", &[(0xffff_ffff_0000, 4096, true)]),
        (
            "across-mmio-gap",
            &[(ram_bytes.min(0xd000_0000) - 64, 8192, true)],
        ),
        ("length-overflow", &[(buf_addr, u32::MAX, true)]),
        ("wrong-direction", &[(buf_addr, 16, false)]),
        ("zero-length", &[(buf_addr, 0, true)]),
    ];
    for (name, chain) in attacks {
        queue.submit(chain);
        let answered = queue.wait_used().is_some();
        let ok = answered && good_request(&mut queue, buf);
        tally.report(name, ok, if answered { "answered" } else { "no-answer" });
    }

    // A chain whose descriptors point at each other: it must end.
    let head = queue.next_free();
    let next = (head + 1) % queue.size;
    queue.write_desc(
        head,
        Desc {
            addr: buf_addr,
            len: 16,
            flags: DESC_WRITE | DESC_NEXT,
            next,
        },
    );
    queue.write_desc(
        next,
        Desc {
            addr: buf_addr + 16,
            len: 16,
            flags: DESC_WRITE | DESC_NEXT,
            next: head,
        },
    );
    queue.skip(2);
    queue.publish(head);
    let answered = queue.wait_used().is_some();
    let ok = good_request(&mut queue, buf);
    tally.report(
        "descriptor-loop",
        ok,
        if answered { "answered" } else { "dropped" },
    );

    // An available index far ahead of the ring: the device cannot trust the
    // queue any more and must ask for a reset; after one it works again.
    let runaway = queue.avail_idx().wrapping_add(queue.size * 4);
    queue.set_avail_idx(runaway);
    let mut needs_reset = false;
    let mut deadline = crate::cpu::Deadline::after_us(2_000_000);
    while !deadline.expired() {
        if window.read(reg::STATUS) & status::NEEDS_RESET != 0 {
            needs_reset = true;
            break;
        }
    }
    let recovered = needs_reset
        && bring_up(window)
            .map(|mut q| good_request(&mut q, buf))
            .unwrap_or(false);
    tally.report(
        "runaway-avail-index",
        needs_reset && recovered,
        if !needs_reset {
            "no-needs-reset"
        } else if recovered {
            "needs-reset,recovered"
        } else {
            "needs-reset,not-recovered"
        },
    );

    let verdict = if tally.survived == tally.attacks {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "CHECK virtio-attack {verdict} attacks={} survived={}",
        tally.attacks, tally.survived
    );
}
