//! Identity page tables for entering a kernel in 64-bit mode: one PML4
//! entry, one PDPT entry and a full page directory of 2 MiB pages mapping
//! the first 1 GiB (the kernel builds its own tables from there).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{PDE_START, PDPTE_START, PML4_START};
use super::ArchError;

/// Entry maps something (page or next-level table).
const PTE_PRESENT: u64 = 1 << 0;
/// Entry is writable.
const PTE_WRITABLE: u64 = 1 << 1;
/// Page-directory entry maps a 2 MiB page instead of a page table.
const PDE_HUGE_PAGE: u64 = 1 << 7;
/// Size of the pages the page directory maps.
const HUGE_PAGE_SIZE: u64 = 2 << 20;
/// Entries per 4 KiB table.
const ENTRIES_PER_TABLE: usize = 512;
/// Bytes per table.
const TABLE_SIZE: usize = ENTRIES_PER_TABLE * 8;

/// Writes the three tables; returns the value for CR3.
pub(super) fn setup_identity_page_tables(mem: &GuestMemoryMmap) -> Result<u64, ArchError> {
    let mut pml4 = [0u64; ENTRIES_PER_TABLE];
    pml4[0] = PDPTE_START | PTE_PRESENT | PTE_WRITABLE;
    let mut pdpt = [0u64; ENTRIES_PER_TABLE];
    pdpt[0] = PDE_START | PTE_PRESENT | PTE_WRITABLE;
    let mut pd = [0u64; ENTRIES_PER_TABLE];
    for (i, entry) in pd.iter_mut().enumerate() {
        *entry = (i as u64 * HUGE_PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE | PDE_HUGE_PAGE;
    }
    // Whole tables are written so stale entries from a previous boot of the
    // same memory cannot survive.
    for (what, addr, table) in [
        ("PML4", PML4_START, &pml4),
        ("PDPT", PDPTE_START, &pdpt),
        ("page directory", PDE_START, &pd),
    ] {
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        debug_assert_eq!(bytes.len(), TABLE_SIZE);
        mem.write_slice(&bytes, GuestAddress(addr))
            .map_err(|source| ArchError::GuestMemory { what, addr, source })?;
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mem: &GuestMemoryMmap, table: u64, index: u64) -> u64 {
        mem.read_obj(GuestAddress(table + index * 8)).unwrap()
    }

    #[test]
    fn first_gib_is_identity_mapped_with_2mib_pages() {
        let mem = super::super::memory::tests::guest_memory(1 << 20);
        assert_eq!(setup_identity_page_tables(&mem).unwrap(), PML4_START);
        assert_eq!(entry(&mem, PML4_START, 0), PDPTE_START | 0x3);
        assert_eq!(entry(&mem, PML4_START, 1), 0);
        assert_eq!(entry(&mem, PDPTE_START, 0), PDE_START | 0x3);
        assert_eq!(entry(&mem, PDPTE_START, 1), 0);
        assert_eq!(entry(&mem, PDE_START, 0), 0x83);
        assert_eq!(entry(&mem, PDE_START, 1), 0x20_0083);
        // The last entry maps the last 2 MiB below 1 GiB.
        assert_eq!(entry(&mem, PDE_START, 511), 0x3fe0_0083);
    }

    #[test]
    fn too_little_memory_is_an_error() {
        let mem = super::super::memory::tests::guest_memory(PDE_START);
        assert!(matches!(
            setup_identity_page_tables(&mem),
            Err(ArchError::GuestMemory {
                addr: PDE_START,
                ..
            })
        ));
    }
}
