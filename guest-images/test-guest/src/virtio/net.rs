//! `virtio-net`: send one Ethernet frame and receive one from the host.
//!
//! The frame sent: broadcast destination, the device's MAC as source,
//! EtherType 0x88b5 (IEEE local experimental), payload
//! `mercury-test-guest tx`. The check then waits (up to 20 s) for a frame
//! of EtherType 0x88b5 from the host and reports its payload (printable
//! bytes, at most 64).

use super::{addr_of, buffer_page, id, Found, Virtq};
use crate::serial::{println, Bytes};

/// VIRTIO_NET_F_MAC.
const F_MAC: u64 = 1 << 5;
/// virtio_net_hdr_v1 (num_buffers included in virtio 1.x).
const HDR_LEN: usize = 12;
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const TX_PAYLOAD: &[u8] = b"mercury-test-guest tx";
/// How long to wait for the host's frame.
const RX_TIMEOUT_US: u64 = 20_000_000;
/// RX buffers posted.
const RX_BUFFERS: usize = 2;

pub fn check(found: &Found) {
    match run(found) {
        Ok(()) => {}
        Err(why) => println!("CHECK virtio-net FAIL {why}"),
    }
}

fn run(found: &Found) -> Result<(), &'static str> {
    let window = found.nth_of_type(id::NET, 0).ok_or("no-net-device")?;
    let features = window.negotiate(F_MAC)?;
    let mut rx = Virtq::new(window, 0)?;
    let mut tx = Virtq::new(window, 1)?;
    if !window.driver_ok() {
        return Err("device-needs-reset");
    }
    let mut mac = [0u8; 6];
    if features & F_MAC != 0 {
        for (i, byte) in mac.iter_mut().enumerate() {
            *byte = window.config8(i as u64);
        }
    }
    // Each RX chain is one page; `heads[i]` is the head descriptor of page i.
    let mut pages: [Option<&'static mut [u8; 4096]>; RX_BUFFERS] = [None, None];
    let mut heads = [u16::MAX; RX_BUFFERS];
    for (page, head) in pages.iter_mut().zip(heads.iter_mut()) {
        let buf = buffer_page().ok_or("out-of-buffers")?;
        *head = rx.submit(&[(addr_of(buf), 4096, true)]);
        *page = Some(buf);
    }
    let frame = buffer_page().ok_or("out-of-buffers")?;
    frame[..HDR_LEN].fill(0);
    let eth = &mut frame[HDR_LEN..];
    eth[0..6].fill(0xff);
    eth[6..12].copy_from_slice(&mac);
    eth[12..14].copy_from_slice(&ETHERTYPE);
    eth[14..14 + TX_PAYLOAD.len()].copy_from_slice(TX_PAYLOAD);
    let frame_len = 14 + TX_PAYLOAD.len();
    // Header and frame in two descriptors: a split the device must accept.
    let base = addr_of(&frame[..]);
    tx.submit(&[
        (base, HDR_LEN as u32, false),
        (base + HDR_LEN as u64, frame_len as u32, false),
    ]);
    tx.wait_used().ok_or("tx-timeout")?;
    // Frames other than the host's (none are expected on a private TAP)
    // are skipped: at most a few.
    for _ in 0..8 {
        let used = rx.wait_used_for(RX_TIMEOUT_US).ok_or("rx-timeout")?;
        let which = heads
            .iter()
            .position(|&h| u32::from(h) == used.id)
            .ok_or("rx-unknown-buffer")?;
        let page = pages[which].as_deref_mut().ok_or("rx-unknown-buffer")?;
        let len = (used.len as usize).min(4096);
        if len < HDR_LEN + 14 {
            return Err("rx-short-frame");
        }
        let eth = &page[HDR_LEN..len];
        if eth[12..14] == ETHERTYPE {
            let payload = &eth[14..];
            let end = payload
                .iter()
                .position(|&b| !(0x20..0x7f).contains(&b))
                .unwrap_or(payload.len())
                .min(64);
            println!(
                "CHECK virtio-net PASS mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} tx_bytes={frame_len} rx_bytes={} rx_payload={}",
                mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
                len - HDR_LEN,
                Bytes(&payload[..end])
            );
            return Ok(());
        }
        // Not the host's frame: give the page back.
        heads[which] = rx.submit(&[(addr_of(&page[..]), 4096, true)]);
    }
    Err("no-frame-from-host")
}
