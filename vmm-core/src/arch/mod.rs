//! Architecture-specific code behind one small interface.
//!
//! Shared code calls `arch::*` and never `cfg`s on the architecture in the
//! middle of a function.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
#[cfg(target_arch = "x86_64")]
pub(crate) use self::x86_64::*;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::{ArchError, BootProtocol};
