//! mercury device models.
//!
//! This crate owns device models and their transports. It knows nothing about
//! how a VM is assembled: `vmm-core` places devices on its buses (keyed by
//! address ranges) and wires their interrupt and reset `EventFd`s to KVM.

pub mod acpi_ged;
pub mod legacy;
mod power_button;
pub mod virtio;

pub use power_button::PowerButton;

/// 64-bit FNV-1a of `bytes`: a fixed algorithm, stable across Rust
/// releases (unlike `std`'s `DefaultHasher`), for names and ids that must
/// come out the same from one run, build or host to the next (derived MAC
/// addresses, disk ids, cluster TAP names).
pub fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .into_iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// A device on a PIO or MMIO bus.
///
/// `offset` is relative to the base address the device was registered at.
/// Accesses come straight from the guest: implementations must accept any
/// offset and any `data` length without panicking (ignore or report what they
/// do not understand).
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}
