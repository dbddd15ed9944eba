//! Polled output on COM1 (16550 at 0x3f8) and the `println!` macro.
//!
//! No interrupts, no initialisation: wait for "transmit holding register
//! empty" (LSR bit 5), then write the byte. Lines end with a bare `\n`.

use core::fmt::{self, Write};

use crate::cpu::{inb, outb};

/// COM1 transmit holding register.
const COM1_THR: u16 = 0x3f8;
/// COM1 line status register.
const COM1_LSR: u16 = 0x3fd;
/// LSR: transmit holding register empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Give up waiting for the UART after this many LSR reads (then write anyway).
const LSR_POLL_LIMIT: u32 = 10_000;

/// The COM1 transmitter.
pub struct Com1;

impl Com1 {
    /// Writes one byte once the transmitter is ready.
    pub fn write_byte(byte: u8) {
        for _ in 0..LSR_POLL_LIMIT {
            if inb(COM1_LSR) & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        outb(COM1_THR, byte);
    }
}

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(Com1::write_byte);
        Ok(())
    }
}

/// Writes `args` and a newline to COM1. Used by [`println!`].
pub fn print_line(args: fmt::Arguments) {
    // Com1::write_str never fails.
    let _ = Com1.write_fmt(args);
    Com1::write_byte(b'\n');
}

/// `println!` for the guest: formats one line to COM1.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::serial::print_line(format_args!($($arg)*))
    };
}
pub(crate) use println;

/// Displays guest-supplied bytes (command line, check names): printable
/// ASCII as is, anything else as `\xNN`, so one report stays one line.
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0 {
            if (0x20..0x7f).contains(&byte) && byte != b'\\' {
                f.write_char(char::from(byte))?;
            } else {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// Displays a list of numbers as `a,b,c`.
pub struct CommaList<'a, T>(pub &'a [T]);

impl<T: fmt::Display> fmt::Display for CommaList<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, value) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{value}")?;
        }
        Ok(())
    }
}
