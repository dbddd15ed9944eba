//! A minimal virtio-mmio (version 2) driver: find the devices (from the
//! kernel command line, `virtio_mmio.device=<size>@<addr>:<irq>`, or from
//! the DSDT's `LNRO0005` devices), negotiate features, set up split
//! queues in static memory, submit descriptor chains and poll the used
//! ring. No interrupts: every wait is a bounded poll.
//!
//! Plain integer code only (this guest's kernel-mode code may be
//! interpreted by the host's KVM).

pub mod attack;
pub mod blk;
pub mod net;
pub mod rng;
pub mod vsock;

use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use crate::cpu::Deadline;
use crate::phys;

/// Register offsets (virtio 1.2, 4.2.2).
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits.
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 64;
}

/// "virt".
const MAGIC: u32 = 0x7472_6976;
/// VIRTIO_F_VERSION_1.
pub const VERSION_1: u64 = 1 << 32;
/// Descriptor flags.
pub const DESC_NEXT: u16 = 1;
pub const DESC_WRITE: u16 = 2;
/// Entries per queue this driver uses.
pub const QUEUE_SIZE: u16 = 8;
/// How long a request may take before the driver gives up on it.
const REQUEST_TIMEOUT_US: u64 = 2_000_000;
/// Most devices the driver keeps track of.
pub const MAX_DEVICES: usize = 16;

/// Virtio device ids.
pub mod id {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const RNG: u32 = 4;
    pub const VSOCK: u32 = 19;
}

/// One virtio-mmio window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub irq: u32,
}

/// Windows found by one discovery route.
pub struct Found {
    windows: [Window; MAX_DEVICES],
    count: usize,
}

impl Found {
    const fn new() -> Self {
        Found {
            windows: [Window { base: 0, irq: 0 }; MAX_DEVICES],
            count: 0,
        }
    }

    fn push(&mut self, window: Window) {
        if self.count < MAX_DEVICES && !self.windows[..self.count].contains(&window) {
            self.windows[self.count] = window;
            self.count += 1;
        }
    }

    pub fn windows(&self) -> &[Window] {
        &self.windows[..self.count]
    }

    /// The `n`-th window (in discovery order) whose device has type `id`.
    pub fn nth_of_type(&self, id: u32, n: usize) -> Option<Window> {
        self.windows()
            .iter()
            .filter(|w| w.device_id() == Some(id))
            .nth(n)
            .copied()
    }
}

/// Parses a number in decimal or `0x` hex, with an optional K/M suffix.
fn parse_number(text: &[u8]) -> Option<u64> {
    let (digits, scale) = match text.last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&text[..text.len() - 1], 1u64 << 20),
        _ => (text, 1),
    };
    let (digits, radix) = match digits {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (digits, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value = 0u64;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' if radix == 16 => d - b'a' + 10,
            b'A'..=b'F' if radix == 16 => d - b'A' + 10,
            _ => return None,
        };
        value = value.checked_mul(radix)?.checked_add(u64::from(v))?;
    }
    value.checked_mul(scale)
}

/// `virtio_mmio.device=<size>@<base>:<irq>` words of the command line.
pub fn from_cmdline(cmdline: &[u8]) -> Found {
    let mut found = Found::new();
    for word in cmdline.split(|b| b.is_ascii_whitespace()) {
        let Some(spec) = word.strip_prefix(b"virtio_mmio.device=") else {
            continue;
        };
        let Some(at) = spec.iter().position(|&b| b == b'@') else {
            continue;
        };
        let Some(colon) = spec.iter().position(|&b| b == b':') else {
            continue;
        };
        if colon < at {
            continue;
        }
        let base = parse_number(&spec[at + 1..colon]);
        let irq = parse_number(&spec[colon + 1..]);
        if let (Some(base), Some(irq)) = (base, irq) {
            found.push(Window {
                base,
                irq: irq as u32,
            });
        }
    }
    found
}

/// The DSDT's `LNRO0005` devices: after each `_HID "LNRO0005"`, the next
/// Memory32Fixed descriptor (0x86) is the window and the next extended
/// interrupt descriptor (0x89) its line. The AML is searched, not
/// interpreted, which is enough for the tables a VMM writes.
pub fn from_dsdt(dsdt: u64) -> Found {
    let mut found = Found::new();
    // SAFETY: the ACPI checks validated the DSDT's header and checksum;
    // its length field bounds the search.
    let len = unsafe { phys::read::<u32>(dsdt + 4) } as u64;
    let len = len.min(256 << 10);
    let byte = |i: u64| -> u8 {
        // SAFETY: `i` < `len`, inside the DSDT.
        unsafe { phys::read::<u8>(dsdt + i) }
    };
    let hid = b"LNRO0005";
    let mut i = 36;
    while i + hid.len() as u64 <= len {
        if (0..hid.len() as u64).all(|k| byte(i + k) == hid[k as usize]) {
            let mut base = None;
            let mut irq = None;
            let mut j = i + hid.len() as u64;
            // A Memory32Fixed descriptor is 12 bytes, an interrupt one 9.
            while j + 9 <= len && (base.is_none() || irq.is_none()) {
                if base.is_none() && j + 12 <= len && byte(j) == 0x86 && byte(j + 1) == 0x09 {
                    // SAFETY: inside the DSDT (j + 12 <= len).
                    base = Some(unsafe { phys::read::<u32>(dsdt + j + 4) } as u64);
                    j += 12;
                    continue;
                }
                if irq.is_none() && byte(j) == 0x89 && byte(j + 1) == 0x06 && byte(j + 4) == 1 {
                    // SAFETY: inside the DSDT (j + 9 <= len).
                    irq = Some(unsafe { phys::read::<u32>(dsdt + j + 5) });
                    j += 9;
                    continue;
                }
                if byte(j) == b'L' && byte(j + 1) == b'N' && byte(j + 2) == b'R' {
                    break; // the next device
                }
                j += 1;
            }
            if let (Some(base), Some(irq)) = (base, irq) {
                found.push(Window { base, irq });
            }
            i = j;
            continue;
        }
        i += 1;
    }
    found
}

impl Window {
    pub fn read(&self, offset: u64) -> u32 {
        // SAFETY: the window is a virtio-mmio device the VMM announced, in
        // the identity-mapped MMIO gap; register reads have no side effect
        // on memory.
        unsafe { phys::mmio_read32(self.base + offset) }
    }

    pub fn write(&self, offset: u64, value: u32) {
        // SAFETY: as for `read`; register writes change only the device.
        unsafe { phys::mmio_write32(self.base + offset, value) }
    }

    /// The device type, if the window holds a virtio-mmio v2 device.
    pub fn device_id(&self) -> Option<u32> {
        (self.read(reg::MAGIC) == MAGIC && self.read(reg::VERSION) == 2)
            .then(|| self.read(reg::DEVICE_ID))
            .filter(|&id| id != 0)
    }

    pub fn config8(&self, offset: u64) -> u8 {
        // SAFETY: as for `read`; config space reads are side-effect free.
        unsafe { core::ptr::read_volatile((self.base + reg::CONFIG + offset) as *const u8) }
    }

    pub fn config32(&self, offset: u64) -> u32 {
        self.read(reg::CONFIG + offset)
    }

    pub fn config64(&self, offset: u64) -> u64 {
        u64::from(self.config32(offset)) | u64::from(self.config32(offset + 4)) << 32
    }

    pub fn features(&self) -> u64 {
        self.write(reg::DEVICE_FEATURES_SEL, 0);
        let low = self.read(reg::DEVICE_FEATURES);
        self.write(reg::DEVICE_FEATURES_SEL, 1);
        let high = self.read(reg::DEVICE_FEATURES);
        u64::from(low) | u64::from(high) << 32
    }

    /// Reset, ACKNOWLEDGE, DRIVER, accept `wanted` ∩ offered (VERSION_1
    /// always wanted), FEATURES_OK. Returns the accepted features.
    pub fn negotiate(&self, wanted: u64) -> Result<u64, &'static str> {
        self.write(reg::STATUS, 0);
        self.write(reg::STATUS, status::ACKNOWLEDGE);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let offered = self.features();
        if offered & VERSION_1 == 0 {
            return Err("no-version-1");
        }
        let accepted = offered & (wanted | VERSION_1);
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, accepted as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (accepted >> 32) as u32);
        let ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(reg::STATUS, ok);
        if self.read(reg::STATUS) & status::FEATURES_OK == 0 {
            return Err("features-refused");
        }
        Ok(accepted)
    }

    /// Tells the device the driver is ready; false if it then needs reset.
    pub fn driver_ok(&self) -> bool {
        let ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(reg::STATUS, ok | status::DRIVER_OK);
        self.read(reg::STATUS) & status::NEEDS_RESET == 0
    }

    pub fn notify(&self, queue: u16) {
        self.write(reg::QUEUE_NOTIFY, u32::from(queue));
    }
}

/// A split-queue descriptor.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// A queue's memory: descriptor table, available ring, used ring, in one
/// page (16 entries at most: 256 + 38 + 134 bytes).
#[repr(C, align(4096))]
struct QueuePage {
    desc: [Desc; 16],
    avail_flags: u16,
    avail_idx: u16,
    avail_ring: [u16; 16],
    avail_used_event: u16,
    _pad: [u16; 3],
    used_flags: u16,
    used_idx: u16,
    used_ring: [(u32, u32); 16],
    used_avail_event: u16,
}

const EMPTY_PAGE: QueuePage = QueuePage {
    desc: [Desc {
        addr: 0,
        len: 0,
        flags: 0,
        next: 0,
    }; 16],
    avail_flags: 0,
    avail_idx: 0,
    avail_ring: [0; 16],
    avail_used_event: 0,
    _pad: [0; 3],
    used_flags: 0,
    used_idx: 0,
    used_ring: [(0, 0); 16],
    used_avail_event: 0,
};

/// Queue pages for every queue the checks set up.
const QUEUE_PAGES: usize = 12;
static mut QUEUES: [QueuePage; QUEUE_PAGES] = [EMPTY_PAGE; QUEUE_PAGES];
/// Which (window base, queue index) owns each page, so that setting a
/// queue up again after a reset reuses its page.
static mut QUEUE_OWNERS: [(u64, u16); QUEUE_PAGES] = [(0, 0); QUEUE_PAGES];
static mut NEXT_QUEUE: usize = 0;

/// Page-aligned buffers the checks hand to devices.
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);
const BUFFER_PAGES: usize = 16;
static mut BUFFERS: [Page; BUFFER_PAGES] = [const { Page([0; 4096]) }; BUFFER_PAGES];
static mut NEXT_BUFFER: usize = 0;

/// A page of guest memory for device buffers, or None when all are used.
/// The test guest is single-threaded while checks run.
pub fn buffer_page() -> Option<&'static mut [u8; 4096]> {
    // SAFETY: one thread runs the checks; each page is handed out once.
    unsafe {
        let next = &mut *addr_of_mut!(NEXT_BUFFER);
        if *next >= BUFFER_PAGES {
            return None;
        }
        let page = &mut (*addr_of_mut!(BUFFERS))[*next].0;
        *next += 1;
        Some(page)
    }
}

/// The guest-physical address of a buffer (identity-mapped image).
pub fn addr_of(buf: &[u8]) -> u64 {
    buf.as_ptr() as u64
}

/// A queue set up on a device.
pub struct Virtq {
    page: *mut QueuePage,
    pub size: u16,
    index: u16,
    window: Window,
    next_desc: u16,
    last_used: u16,
}

/// What a completed chain came back with.
#[derive(Clone, Copy, Debug)]
pub struct Used {
    pub id: u32,
    pub len: u32,
}

impl Virtq {
    /// Sets up queue `index` of `window` with [`QUEUE_SIZE`] entries.
    pub fn new(window: Window, index: u16) -> Result<Virtq, &'static str> {
        // SAFETY: one thread runs the checks; a page belongs to one queue.
        let page = unsafe {
            let next = &mut *addr_of_mut!(NEXT_QUEUE);
            let owners = &mut *addr_of_mut!(QUEUE_OWNERS);
            let slot = match owners[..*next]
                .iter()
                .position(|&o| o == (window.base, index))
            {
                Some(slot) => slot,
                None if *next < QUEUE_PAGES => {
                    owners[*next] = (window.base, index);
                    *next += 1;
                    *next - 1
                }
                None => return Err("out-of-queue-pages"),
            };
            let page = addr_of_mut!((*addr_of_mut!(QUEUES))[slot]);
            // A queue set up again starts from empty rings.
            write_volatile(page, EMPTY_PAGE);
            page
        };
        window.write(reg::QUEUE_SEL, u32::from(index));
        let max = window.read(reg::QUEUE_NUM_MAX);
        if max == 0 {
            return Err("no-such-queue");
        }
        let size = QUEUE_SIZE.min(max as u16);
        window.write(reg::QUEUE_NUM, u32::from(size));
        // SAFETY: `page` is a valid, exclusively owned queue page.
        let (desc, avail, used) = unsafe {
            (
                addr_of_mut!((*page).desc) as u64,
                addr_of_mut!((*page).avail_flags) as u64,
                addr_of_mut!((*page).used_flags) as u64,
            )
        };
        let set = |low: u64, high: u64, addr: u64| {
            window.write(low, addr as u32);
            window.write(high, (addr >> 32) as u32);
        };
        set(reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, desc);
        set(reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH, avail);
        set(reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH, used);
        window.write(reg::QUEUE_READY, 1);
        Ok(Virtq {
            page,
            size,
            index,
            window,
            next_desc: 0,
            last_used: 0,
        })
    }

    /// Puts a chain of `(addr, len, device_writable)` buffers in the
    /// available ring and notifies the device. Returns the head's index.
    pub fn submit(&mut self, buffers: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let slot = (self.next_desc % self.size) as usize;
            let last = i + 1 == buffers.len();
            let next = (self.next_desc + 1) % self.size;
            let desc = Desc {
                addr,
                len,
                flags: if writable { DESC_WRITE } else { 0 } | if last { 0 } else { DESC_NEXT },
                next: if last { 0 } else { next },
            };
            // SAFETY: `slot` < size <= 16; the page is ours.
            unsafe { write_volatile(addr_of_mut!((*self.page).desc[slot]), desc) };
            self.next_desc = next;
        }
        self.publish(head % self.size);
        head % self.size
    }

    /// Makes `head` available and notifies.
    pub fn publish(&mut self, head: u16) {
        // SAFETY: the page is ours; the device reads it only after the
        // index store below, ordered by the fence.
        unsafe {
            let idx = read_volatile(addr_of_mut!((*self.page).avail_idx));
            let slot = (idx % self.size) as usize;
            write_volatile(addr_of_mut!((*self.page).avail_ring[slot]), head);
            fence(Ordering::SeqCst);
            write_volatile(addr_of_mut!((*self.page).avail_idx), idx.wrapping_add(1));
            fence(Ordering::SeqCst);
        }
        self.window.notify(self.index);
    }

    /// The same as [`Virtq::new`]: a queue set up again reuses its page.
    pub fn new_reused(window: Window, index: u16) -> Result<Virtq, &'static str> {
        Self::new(window, index)
    }

    /// The descriptor [`Virtq::submit`] would use next.
    pub fn next_free(&self) -> u16 {
        self.next_desc % self.size
    }

    /// Skips `n` descriptors (written by hand with [`Virtq::write_desc`]).
    pub fn skip(&mut self, n: u16) {
        self.next_desc = (self.next_desc + n) % self.size;
    }

    /// The available ring's index.
    pub fn avail_idx(&self) -> u16 {
        // SAFETY: the page is ours.
        unsafe { read_volatile(addr_of_mut!((*self.page).avail_idx)) }
    }

    /// Writes a raw descriptor (for the malicious checks).
    pub fn write_desc(&mut self, slot: u16, desc: Desc) {
        // SAFETY: the page is ours; slot is reduced modulo the table size.
        unsafe { write_volatile(addr_of_mut!((*self.page).desc[(slot % 16) as usize]), desc) };
    }

    /// Sets the available index directly (for the malicious checks).
    pub fn set_avail_idx(&mut self, idx: u16) {
        // SAFETY: the page is ours.
        unsafe { write_volatile(addr_of_mut!((*self.page).avail_idx), idx) };
        fence(Ordering::SeqCst);
        self.window.notify(self.index);
    }

    /// Waits for the next used element, up to the request timeout.
    pub fn wait_used(&mut self) -> Option<Used> {
        self.wait_used_for(REQUEST_TIMEOUT_US)
    }

    /// Waits up to `us` for the next used element.
    pub fn wait_used_for(&mut self, us: u64) -> Option<Used> {
        let mut deadline = Deadline::after_us(us);
        loop {
            fence(Ordering::SeqCst);
            // SAFETY: the page is ours; the device writes the used ring.
            let idx = unsafe { read_volatile(addr_of_mut!((*self.page).used_idx)) };
            if idx != self.last_used {
                let slot = (self.last_used % self.size) as usize;
                // SAFETY: as above.
                let (id, len) =
                    unsafe { read_volatile(addr_of_mut!((*self.page).used_ring[slot])) };
                self.last_used = self.last_used.wrapping_add(1);
                // Acknowledge the interrupt the device raised.
                let isr = self.window.read(reg::INTERRUPT_STATUS);
                self.window.write(reg::INTERRUPT_ACK, isr);
                return Some(Used { id, len });
            }
            if deadline.expired() {
                return None;
            }
        }
    }
}

/// Which discovery route the checks use: `virtio_route=acpi` on the command
/// line picks the DSDT, anything else the command line's
/// `virtio_mmio.device=` entries.
pub fn devices(boot: &crate::bootinfo::BootInfo) -> Result<Found, &'static str> {
    let acpi = boot
        .cmdline()
        .split(|b| b.is_ascii_whitespace())
        .any(|w| w == b"virtio_route=acpi");
    if acpi {
        let tables = crate::acpi::read_tables(boot, false).map_err(|_| "no-acpi-tables")?;
        Ok(from_dsdt(tables.dsdt))
    } else {
        Ok(from_cmdline(boot.cmdline()))
    }
}

/// `virtio-acpi`: the DSDT describes the same windows and lines as the
/// command line, and each holds a virtio-mmio v2 device.
pub fn check_acpi(boot: &crate::bootinfo::BootInfo) {
    let tables = match crate::acpi::read_tables(boot, false) {
        Ok(tables) => tables,
        Err(_) => {
            crate::serial::println!("CHECK virtio-acpi FAIL no-acpi-tables");
            return;
        }
    };
    let acpi = from_dsdt(tables.dsdt);
    let cmdline = from_cmdline(boot.cmdline());
    let same = acpi.windows() == cmdline.windows();
    let all_virtio = acpi.windows().iter().all(|w| w.device_id().is_some());
    let mut ids = [0u32; MAX_DEVICES];
    for (slot, w) in ids.iter_mut().zip(acpi.windows()) {
        *slot = w.device_id().unwrap_or(0);
    }
    let verdict = if same && all_virtio && !acpi.windows().is_empty() {
        "PASS"
    } else {
        "FAIL"
    };
    crate::serial::println!(
        "CHECK virtio-acpi {verdict} acpi_devices={} cmdline_devices={} same={} ids={}",
        acpi.windows().len(),
        cmdline.windows().len(),
        same as u8,
        crate::serial::CommaList(&ids[..acpi.windows().len()])
    );
}
