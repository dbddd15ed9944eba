//! `virtio-vsock`: connect to a host port, send a message, read the
//! host's reply, shut the connection down.
//!
//! The host port is `vsock_port=<n>` on the command line (default 52).
//! The guest sends `mercury-test-guest ping` and reports the bytes it gets
//! back (printable, at most 64), so a host-side echo server shows both
//! directions work.

use super::{addr_of, buffer_page, id, Found, Virtq};
use crate::serial::{println, Bytes};

const HDR_LEN: usize = 44;
const HOST_CID: u64 = 2;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
const SHUTDOWN_BOTH: u32 = 3;
const GUEST_PORT: u32 = 49152;
const DEFAULT_HOST_PORT: u32 = 52;
const BUF_ALLOC: u32 = 64 << 10;
const MESSAGE: &[u8] = b"mercury-test-guest ping";
const RX_BUFFERS: usize = 3;
const WAIT_US: u64 = 10_000_000;

struct Header {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    op: u16,
}

fn write_header(buf: &mut [u8], h: &Header, fwd_cnt: u32) {
    buf[..HDR_LEN].fill(0);
    buf[0..8].copy_from_slice(&h.src_cid.to_le_bytes());
    buf[8..16].copy_from_slice(&h.dst_cid.to_le_bytes());
    buf[16..20].copy_from_slice(&h.src_port.to_le_bytes());
    buf[20..24].copy_from_slice(&h.dst_port.to_le_bytes());
    buf[24..28].copy_from_slice(&h.len.to_le_bytes());
    buf[28..30].copy_from_slice(&TYPE_STREAM.to_le_bytes());
    buf[30..32].copy_from_slice(&h.op.to_le_bytes());
    let flags = if h.op == OP_SHUTDOWN {
        SHUTDOWN_BOTH
    } else {
        0
    };
    buf[32..36].copy_from_slice(&flags.to_le_bytes());
    buf[36..40].copy_from_slice(&BUF_ALLOC.to_le_bytes());
    buf[40..44].copy_from_slice(&fwd_cnt.to_le_bytes());
}

fn read_header(buf: &[u8]) -> Header {
    let u32_at = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | u64::from(u32_at(o + 4)) << 32;
    Header {
        src_cid: u64_at(0),
        dst_cid: u64_at(8),
        src_port: u32_at(16),
        dst_port: u32_at(20),
        len: u32_at(24),
        op: u16::from_le_bytes([buf[30], buf[31]]),
    }
}

fn host_port(cmdline: &[u8]) -> u32 {
    cmdline
        .split(|b| b.is_ascii_whitespace())
        .filter_map(|w| w.strip_prefix(b"vsock_port="))
        .filter_map(|v| core::str::from_utf8(v).ok()?.parse().ok())
        .next_back()
        .unwrap_or(DEFAULT_HOST_PORT)
}

pub fn check(found: &Found, cmdline: &[u8]) {
    if let Err(why) = run(found, host_port(cmdline)) {
        println!("CHECK virtio-vsock FAIL {why}");
    }
}

fn run(found: &Found, port: u32) -> Result<(), &'static str> {
    let window = found.nth_of_type(id::VSOCK, 0).ok_or("no-vsock-device")?;
    window.negotiate(0)?;
    let mut rx = Virtq::new(window, 0)?;
    let mut tx = Virtq::new(window, 1)?;
    let _event = Virtq::new(window, 2)?;
    if !window.driver_ok() {
        return Err("device-needs-reset");
    }
    let cid = window.config64(0);
    let mut pages: [Option<&'static mut [u8; 4096]>; RX_BUFFERS] = [None, None, None];
    let mut heads = [u16::MAX; RX_BUFFERS];
    for (page, head) in pages.iter_mut().zip(heads.iter_mut()) {
        let buf = buffer_page().ok_or("out-of-buffers")?;
        *head = rx.submit(&[(addr_of(buf), 4096, true)]);
        *page = Some(buf);
    }
    let out = buffer_page().ok_or("out-of-buffers")?;
    let mut fwd_cnt = 0u32;
    let mut send =
        |tx: &mut Virtq, op: u16, data: &[u8], fwd_cnt: u32| -> Result<(), &'static str> {
            let header = Header {
                src_cid: cid,
                dst_cid: HOST_CID,
                src_port: GUEST_PORT,
                dst_port: port,
                len: data.len() as u32,
                op,
            };
            write_header(out, &header, fwd_cnt);
            out[HDR_LEN..HDR_LEN + data.len()].copy_from_slice(data);
            tx.submit(&[(addr_of(&out[..]), (HDR_LEN + data.len()) as u32, false)]);
            tx.wait_used().map(|_| ()).ok_or("tx-timeout")
        };
    send(&mut tx, OP_REQUEST, &[], 0)?;
    let mut connected = false;
    let mut reply = [0u8; 64];
    let mut reply_len = 0;
    for _ in 0..16 {
        let used = rx.wait_used_for(WAIT_US).ok_or("rx-timeout")?;
        let which = heads
            .iter()
            .position(|&h| u32::from(h) == used.id)
            .ok_or("rx-unknown-buffer")?;
        let page = pages[which].as_deref_mut().ok_or("rx-unknown-buffer")?;
        let h = read_header(&page[..]);
        let data_len = (h.len as usize).min(4096 - HDR_LEN);
        let mut chunk = [0u8; 64];
        let n = data_len.min(64);
        chunk[..n].copy_from_slice(&page[HDR_LEN..HDR_LEN + n]);
        heads[which] = rx.submit(&[(addr_of(&page[..]), 4096, true)]);
        if h.dst_cid != cid
            || h.src_cid != HOST_CID
            || h.dst_port != GUEST_PORT
            || h.src_port != port
        {
            return Err("packet-for-another-connection");
        }
        match h.op {
            OP_RESPONSE if !connected => {
                connected = true;
                send(&mut tx, OP_RW, MESSAGE, 0)?;
            }
            OP_RW if connected => {
                fwd_cnt = fwd_cnt.wrapping_add(h.len);
                let take = n.min(64 - reply_len);
                reply[reply_len..reply_len + take].copy_from_slice(&chunk[..take]);
                reply_len += take;
                if reply_len >= MESSAGE.len() || reply_len == 64 {
                    send(&mut tx, OP_SHUTDOWN, &[], fwd_cnt)?;
                    let end = reply[..reply_len]
                        .iter()
                        .position(|&b| !(0x20..0x7f).contains(&b))
                        .unwrap_or(reply_len);
                    println!(
                        "CHECK virtio-vsock PASS cid={cid} port={port} sent={} reply={}",
                        Bytes(MESSAGE),
                        Bytes(&reply[..end])
                    );
                    return Ok(());
                }
            }
            OP_CREDIT_REQUEST => send(&mut tx, OP_CREDIT_UPDATE, &[], fwd_cnt)?,
            OP_CREDIT_UPDATE => {}
            OP_RST => {
                return Err(if connected {
                    "reset-by-host"
                } else {
                    "connection-refused"
                })
            }
            OP_SHUTDOWN => return Err("host-shut-down-early"),
            _ => return Err("unexpected-packet"),
        }
    }
    Err("no-reply")
}
