//! Architecture-specific guests other than the x86_64 one (whose modules
//! are still at the top of `src/`).

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
