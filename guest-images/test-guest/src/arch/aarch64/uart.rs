//! The console: the UART the FDT's `/chosen/stdout-path` names, a 16550 on
//! MMIO (`ns16550a`, `ns16550`, `ns8250`: mercury's choice, as Firecracker's)
//! or a PL011 (`arm,pl011`: QEMU's `virt` board). Output is polled; a UART
//! that never drains is given up on after a bounded number of reads.

use core::fmt::{self, Write};
use core::ptr::{read_volatile, write_volatile};

use super::fdt::{self, Fdt};

/// 16550 registers (index, scaled by `reg-shift`) and bits.
pub const UART_THR: usize = 0;
pub const UART_MCR: usize = 4;
pub const UART_LSR: usize = 5;
pub const UART_SCR: usize = 7;
pub const LSR_THR_EMPTY: u8 = 1 << 5;
/// PL011 registers (byte offsets) and bits.
pub const PL011_DR: usize = 0x000;
pub const PL011_FR: usize = 0x018;
pub const PL011_FR_TXFF: u32 = 1 << 5;
/// PL011 peripheral and PrimeCell identification registers.
pub const PL011_PERIPH_ID0: usize = 0xfe0;
pub const PL011_CELL_ID0: usize = 0xff0;
/// Status reads before one byte is given up on (a UART that never drains).
const SPIN_LIMIT: u32 = 100_000;

/// The kind of console UART.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ns16550,
    Pl011,
}

/// The console UART found in the FDT.
#[derive(Clone, Copy)]
pub struct Uart {
    pub kind: Kind,
    pub base: usize,
    /// 16550 only: register index shift (`reg-shift`) and access width in
    /// bytes (`reg-io-width`, 1 or 4).
    pub shift: u32,
    pub width: u32,
}

/// The console, set once by the boot CPU before anything is printed.
static mut CONSOLE: Option<Uart> = None;

impl Uart {
    /// The UART `/chosen/stdout-path` names (or, without one, the first
    /// 16550 or PL011 node).
    pub fn from_fdt(fdt: &Fdt) -> Option<Uart> {
        let node = fdt
            .root()
            .and_then(|root| fdt.child(root, b"chosen"))
            .and_then(|chosen| fdt.prop(chosen, b"stdout-path"))
            .and_then(|path| fdt.find(fdt::text(path)))
            .or_else(|| fdt.find_compatible(b"ns16550a"))
            .or_else(|| fdt.find_compatible(b"arm,pl011"))?;
        let kind = if fdt.has_string(node, b"compatible", b"arm,pl011") {
            Kind::Pl011
        } else if [&b"ns16550a"[..], b"ns16550", b"ns8250"]
            .iter()
            .any(|c| fdt.has_string(node, b"compatible", c))
        {
            Kind::Ns16550
        } else {
            return None;
        };
        let (base, _) = fdt.reg(node, 0)?;
        Some(Uart {
            kind,
            base: usize::try_from(base).ok()?,
            shift: fdt.prop_u32(node, b"reg-shift").unwrap_or(0),
            width: match fdt.prop_u32(node, b"reg-io-width") {
                Some(4) => 4,
                _ => 1,
            },
        })
    }

    /// Reads 16550 register `index`.
    pub fn read(&self, index: usize) -> u8 {
        let addr = self.base + (index << self.shift);
        // SAFETY: `base` is the UART's MMIO window from the FDT; its
        // registers are within the window and reading them has no effect
        // on memory.
        unsafe {
            if self.width == 4 {
                read_volatile(addr as *const u32) as u8
            } else {
                read_volatile(addr as *const u8)
            }
        }
    }

    /// Writes 16550 register `index`.
    pub fn write(&self, index: usize, value: u8) {
        let addr = self.base + (index << self.shift);
        // SAFETY: as in `read`: a register of the UART's MMIO window.
        unsafe {
            if self.width == 4 {
                write_volatile(addr as *mut u32, u32::from(value))
            } else {
                write_volatile(addr as *mut u8, value)
            }
        }
    }

    /// Reads the 32-bit PL011 register at byte offset `offset`.
    pub fn read32(&self, offset: usize) -> u32 {
        // SAFETY: a register of the PL011's 4 KiB MMIO window from the FDT.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// Sends one byte once the transmitter has room (or gives up).
    pub fn put(&self, byte: u8) {
        match self.kind {
            Kind::Ns16550 => {
                let mut spins = 0;
                while self.read(UART_LSR) & LSR_THR_EMPTY == 0 && spins < SPIN_LIMIT {
                    spins += 1;
                }
                self.write(UART_THR, byte);
            }
            Kind::Pl011 => {
                let mut spins = 0;
                while self.read32(PL011_FR) & PL011_FR_TXFF != 0 && spins < SPIN_LIMIT {
                    spins += 1;
                }
                self.write32(PL011_DR, u32::from(byte));
            }
        }
    }
}

/// Makes `uart` the console.
pub fn set_console(uart: Uart) {
    // SAFETY: called once by the boot CPU before any secondary runs or
    // anything is printed; never changed afterwards.
    unsafe { *core::ptr::addr_of_mut!(CONSOLE) = Some(uart) };
}

/// The console, if one was found.
pub fn console() -> Option<Uart> {
    // SAFETY: written once before any reader (see `set_console`).
    unsafe { *core::ptr::addr_of!(CONSOLE) }
}

/// `fmt::Write` onto the console (bytes are dropped without one).
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(uart) = console() {
            s.bytes().for_each(|b| uart.put(b));
        }
        Ok(())
    }
}

/// `println!` onto the console; every line ends with a bare `\n`.
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::arch::aarch64::uart::Console, $($arg)*);
    }};
}
pub(crate) use println;

/// Displays bytes as the x86 guest does: printable ASCII as is, anything
/// else and `\` as `\xNN`.
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if (0x20..0x7f).contains(&b) && b != b'\\' {
                f.write_char(b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}
