//! mercury device models.
//!
//! This crate owns device models and their transports. It knows nothing about
//! how a VM is assembled: `vmm-core` places devices on its buses (keyed by
//! address ranges) and wires their interrupt and reset `EventFd`s to KVM.

pub mod legacy;
pub mod virtio;

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
