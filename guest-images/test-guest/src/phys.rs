//! Access to guest-physical memory by address (boot structures, MP table,
//! local APIC). Everything below 4 GiB is identity-mapped by `paging.rs`.

use core::ptr;

/// Reads a `T` at guest-physical `addr`, without alignment requirement.
///
/// # Safety
/// `addr` must be nonzero, `addr..addr + size_of::<T>()` must lie below
/// 4 GiB, and no Rust reference may point into that range; any bit pattern
/// must be a valid `T` (use integers).
pub unsafe fn read<T: Copy>(addr: u64) -> T {
    // SAFETY: guaranteed by the caller; the page tables map the address.
    unsafe { ptr::read_unaligned(addr as *const T) }
}

/// Copies `src` to guest-physical `addr`.
///
/// # Safety
/// `addr..addr + src.len()` must be nonzero RAM below 4 GiB that neither
/// this image nor any Rust reference uses.
pub unsafe fn copy_to(addr: u64, src: &[u8]) {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) }
}

/// Reads a 32-bit MMIO register.
///
/// # Safety
/// `addr` must be a 4-byte aligned register address in the MMIO gap whose
/// read has no side effect on memory.
pub unsafe fn mmio_read32(addr: u64) -> u32 {
    // SAFETY: guaranteed by the caller; volatile keeps the access as written.
    unsafe { ptr::read_volatile(addr as *const u32) }
}

/// Writes a 32-bit MMIO register.
///
/// # Safety
/// `addr` must be a 4-byte aligned register address in the MMIO gap.
pub unsafe fn mmio_write32(addr: u64, value: u32) {
    // SAFETY: guaranteed by the caller; volatile keeps the access as written.
    unsafe { ptr::write_volatile(addr as *mut u32, value) }
}

/// Writes an 8-bit MMIO register.
///
/// # Safety
/// `addr` must be a register address in the MMIO gap.
pub unsafe fn mmio_write8(addr: u64, value: u8) {
    // SAFETY: guaranteed by the caller; volatile keeps the access as written.
    unsafe { ptr::write_volatile(addr as *mut u8, value) }
}

/// Reads a 64-bit MMIO register (one 8-byte access).
///
/// # Safety
/// `addr` must be an 8-byte aligned register address in the MMIO gap whose
/// read has no side effect on memory.
pub unsafe fn mmio_read64(addr: u64) -> u64 {
    // SAFETY: guaranteed by the caller; volatile keeps the access as written.
    unsafe { ptr::read_volatile(addr as *const u64) }
}
