//! Guest memory: anonymous mappings from vm-memory, registered as KVM memslots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Errors creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// More guest memory than the host's RAM and swap together: it could
    /// never be backed, and the guest would be killed once it touched it.
    #[error("memory {requested_mib} MiB is more than this host can back ({host_mib} MiB of RAM and swap)")]
    ExceedsHost {
        /// Requested size.
        requested_mib: u64,
        /// The host's RAM plus swap.
        host_mib: u64,
    },
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

/// What /proc/meminfo says about how much memory a guest could get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostMemory {
    /// RAM plus swap: the most that can ever be backed.
    pub(crate) backable_mib: u64,
    /// Memory available now without swapping (`MemAvailable`).
    pub(crate) available_mib: u64,
}

impl HostMemory {
    /// Parses /proc/meminfo's text; None if a field is missing.
    pub(crate) fn parse(meminfo: &str) -> Option<HostMemory> {
        let field_kib = |name: &str| -> Option<u64> {
            meminfo.lines().find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        };
        let total = field_kib("MemTotal")?;
        let swap = field_kib("SwapTotal")?;
        let available = field_kib("MemAvailable")?;
        Some(HostMemory {
            backable_mib: (total + swap) >> 10,
            available_mib: available >> 10,
        })
    }

    /// Refuses a guest larger than RAM and swap; warns about one larger
    /// than what is available now (guest memory is mapped lazily, so it may
    /// still run, as long as it does not touch all of it).
    pub(crate) fn check(&self, requested_mib: u64) -> Result<(), MemoryError> {
        if requested_mib > self.backable_mib {
            return Err(MemoryError::ExceedsHost {
                requested_mib,
                host_mib: self.backable_mib,
            });
        }
        if requested_mib > self.available_mib {
            log::warn!(
                "guest memory {requested_mib} MiB is more than the {} MiB the host has available now; \
                 the host may swap or kill the VM when the guest uses it",
                self.available_mib
            );
        }
        Ok(())
    }
}

/// Checks `requested_mib` against this host's memory ([`HostMemory::check`]).
/// A host whose /proc/meminfo cannot be read is not checked.
pub(crate) fn check_host_can_back(requested_mib: u64) -> Result<(), MemoryError> {
    match std::fs::read_to_string("/proc/meminfo")
        .ok()
        .as_deref()
        .and_then(HostMemory::parse)
    {
        Some(host) => host.check(requested_mib),
        None => {
            log::debug!(
                "cannot read /proc/meminfo: guest memory size not checked against the host"
            );
            Ok(())
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\n\
MemAvailable:   20480000 kB\nBuffers:           10000 kB\nSwapTotal:       1024000 kB\n";

    #[test]
    fn host_memory_from_meminfo() {
        let host = HostMemory::parse(MEMINFO).unwrap();
        assert_eq!(host.backable_mib, (24_576_000 + 1_024_000) >> 10);
        assert_eq!(host.available_mib, 20_480_000 >> 10);
        assert_eq!(HostMemory::parse("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn more_than_ram_and_swap_is_refused_with_both_sizes() {
        let host = HostMemory::parse(MEMINFO).unwrap();
        let err = host.check(1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "memory 1048576 MiB is more than this host can back (25000 MiB of RAM and swap)"
        );
        // More than available but within RAM and swap: allowed (warned).
        host.check(22_000).unwrap();
        host.check(128).unwrap();
    }
}
