//! `virtio-blk`: write a pattern at the first two and the last sector of
//! the first disk, flush, read it back, and ask for the disk's id.
//! `virtio-blk-ro`: on the first read-only disk, a write must fail with
//! IOERR while a read succeeds. The host checks the image file afterwards.
//!
//! The pattern (also in README.md): byte `i` of sector `s` is
//! `(s * 31 + i) mod 256 XOR 0xa5`.

use super::{addr_of, buffer_page, id, Found, Virtq, Window};
use crate::serial::{println, Bytes};

const SECTOR: usize = 512;
/// Request types and statuses (virtio 1.2, 5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
/// Feature bits.
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
/// Length of a disk id.
const ID_LEN: usize = 20;

pub fn pattern(sector: u64, i: usize) -> u8 {
    ((sector as usize * 31 + i) % 256) as u8 ^ 0xa5
}

/// A device with its request queue and three buffers: header, data,
/// status.
struct Disk {
    window: Window,
    queue: Virtq,
    features: u64,
    header: &'static mut [u8; 4096],
    data: &'static mut [u8; 4096],
}

impl Disk {
    fn open(window: Window) -> Result<Disk, &'static str> {
        let features = window.negotiate(F_RO | F_FLUSH)?;
        let queue = Virtq::new(window, 0)?;
        if !window.driver_ok() {
            return Err("device-needs-reset");
        }
        Ok(Disk {
            window,
            queue,
            features,
            header: buffer_page().ok_or("out-of-buffers")?,
            data: buffer_page().ok_or("out-of-buffers")?,
        })
    }

    fn capacity(&self) -> u64 {
        self.window.config64(0)
    }

    /// One request: header, then `data_len` bytes of data (device-writable
    /// for reads and GET_ID), then the status byte (kept in the header
    /// page at offset 512). Returns the status and the used length.
    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        data_len: u32,
    ) -> Result<(u8, u32), &'static str> {
        self.header[..16].fill(0);
        self.header[0..4].copy_from_slice(&kind.to_le_bytes());
        self.header[8..16].copy_from_slice(&sector.to_le_bytes());
        self.header[512] = 0xff;
        let header = addr_of(&self.header[..]);
        let status = header + 512;
        let data_writable = kind == T_IN || kind == T_GET_ID;
        let data = addr_of(&self.data[..]);
        if data_len == 0 {
            self.queue.submit(&[(header, 16, false), (status, 1, true)]);
        } else {
            self.queue.submit(&[
                (header, 16, false),
                (data, data_len, data_writable),
                (status, 1, true),
            ]);
        }
        let used = self.queue.wait_used().ok_or("timeout")?;
        Ok((self.header[512], used.len))
    }
}

pub fn check(found: &Found) {
    let Some(window) = found.nth_of_type(id::BLOCK, 0) else {
        println!("CHECK virtio-blk FAIL no-block-device");
        return;
    };
    match read_write(window) {
        Ok(()) => {}
        Err(why) => println!("CHECK virtio-blk FAIL {why}"),
    }
}

fn read_write(window: Window) -> Result<(), &'static str> {
    let mut disk = Disk::open(window)?;
    let capacity = disk.capacity();
    if capacity < 2 {
        return Err("capacity-below-2-sectors");
    }
    if disk.features & F_RO != 0 {
        return Err("first-disk-is-read-only");
    }
    let sectors = [0, 1, capacity - 1];
    for &sector in &sectors {
        for i in 0..SECTOR {
            disk.data[i] = pattern(sector, i);
        }
        let (status, _) = disk.request(T_OUT, sector, SECTOR as u32)?;
        if status != S_OK {
            println!("CHECK virtio-blk FAIL write sector={sector} status={status}");
            return Ok(());
        }
    }
    let flush = if disk.features & F_FLUSH != 0 {
        match disk.request(T_FLUSH, 0, 0)? {
            (S_OK, _) => "ok",
            _ => "failed",
        }
    } else {
        "not-offered"
    };
    for &sector in &sectors {
        disk.data[..SECTOR].fill(0);
        let (status, used) = disk.request(T_IN, sector, SECTOR as u32)?;
        let matches = (0..SECTOR).all(|i| disk.data[i] == pattern(sector, i));
        if status != S_OK || used != SECTOR as u32 + 1 || !matches {
            println!(
                "CHECK virtio-blk FAIL read sector={sector} status={status} used={used} matches={}",
                matches as u8
            );
            return Ok(());
        }
    }
    disk.data[..ID_LEN].fill(0);
    let (status, _) = disk.request(T_GET_ID, 0, ID_LEN as u32)?;
    let id_len = disk.data[..ID_LEN]
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(ID_LEN);
    let id = if status == S_OK {
        &disk.data[..id_len]
    } else {
        &b"(failed)"[..]
    };
    if flush != "ok" {
        println!("CHECK virtio-blk FAIL flush={flush}");
        return Ok(());
    }
    println!(
        "CHECK virtio-blk PASS capacity={capacity} written=0,1,{} flush={flush} id={}",
        capacity - 1,
        Bytes(id)
    );
    Ok(())
}

/// The first disk that offers VIRTIO_BLK_F_RO.
pub fn check_read_only(found: &Found) {
    let mut n = 0;
    while let Some(window) = found.nth_of_type(id::BLOCK, n) {
        n += 1;
        if window.features() & F_RO == 0 {
            continue;
        }
        let result = Disk::open(window).and_then(|mut disk| {
            for i in 0..SECTOR {
                disk.data[i] = pattern(0, i) ^ 0xff;
            }
            let (write, _) = disk.request(T_OUT, 0, SECTOR as u32)?;
            let (read, used) = disk.request(T_IN, 0, SECTOR as u32)?;
            Ok((write, read, used))
        });
        match result {
            // VIRTIO_BLK_S_IOERR is 1.
            Ok((1, S_OK, used)) => {
                println!("CHECK virtio-blk-ro PASS write_status=1 read_status=0 read_used={used}")
            }
            Ok((write, read, _)) => {
                println!("CHECK virtio-blk-ro FAIL write_status={write} read_status={read}")
            }
            Err(why) => println!("CHECK virtio-blk-ro FAIL {why}"),
        }
        return;
    }
    println!("CHECK virtio-blk-ro FAIL no-read-only-disk");
}
