//! Guest memory: anonymous mappings from vm-memory, registered as KVM memslots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Errors creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host could not map the guest memory.
    #[error("cannot map {size_mib} MiB of guest memory: {source}")]
    Mmap {
        /// Requested size.
        size_mib: u64,
        /// Why.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM refused a memslot.
    #[error("KVM_SET_USER_MEMORY_REGION for slot {slot} at {addr:#x} failed: {source}")]
    SetMemslot {
        /// Slot number.
        slot: u32,
        /// Guest physical start.
        addr: u64,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Maps guest RAM for `regions` (from the arch layout).
pub(crate) fn create_guest_memory(
    regions: &[(GuestAddress, usize)],
    size_mib: u64,
) -> Result<GuestMemoryMmap, MemoryError> {
    GuestMemoryMmap::from_ranges(regions).map_err(|source| MemoryError::Mmap { size_mib, source })
}

/// Registers every region of `memory` with KVM, one slot per region.
pub(crate) fn register_memslots(vm: &VmFd, memory: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in memory.iter().enumerate() {
        let slot = slot as u32;
        let mem_region = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the host mapping is owned by `memory`, which the VM handle
        // and every vCPU thread keep alive for as long as the VM exists, and
        // slots never overlap since the regions do not.
        unsafe { vm.set_user_memory_region(mem_region) }.map_err(|source| {
            MemoryError::SetMemslot {
                slot,
                addr: region.start_addr().0,
                source,
            }
        })?;
    }
    Ok(())
}
