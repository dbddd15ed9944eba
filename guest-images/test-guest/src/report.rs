//! Lines of the console protocol (README.md) that both architectures print
//! the same way, each through its own console.

use core::fmt;
use core::panic::PanicInfo;

/// `TEST-GUEST PANIC <message> at <file>:<line>` (without ` at …` when the
/// panic has no location).
pub struct PanicLine<'a>(pub &'a PanicInfo<'a>);

impl fmt::Display for PanicLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TEST-GUEST PANIC {}", self.0.message())?;
        match self.0.location() {
            Some(at) => write!(f, " at {}:{}", at.file(), at.line()),
            None => Ok(()),
        }
    }
}
