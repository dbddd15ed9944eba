//! Guest RAM: the regions around the 32-bit MMIO gap, and the RAM map the
//! guest is told about (e820 for Linux, the PVH memory map).

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::layout::{EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};

/// Guest RAM regions for `mem_size` bytes, split around the MMIO gap:
/// `[0, mem_size)` if it fits below the gap, else `[0, MMIO_GAP_START)` and
/// the rest from 4 GiB up. No regions for `mem_size == 0`.
pub(crate) fn memory_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size == 0 {
        return Vec::new();
    }
    if mem_size <= MMIO_GAP_START {
        return vec![(GuestAddress(0), mem_size as usize)];
    }
    vec![
        (GuestAddress(0), MMIO_GAP_START as usize),
        (
            GuestAddress(MMIO_GAP_END),
            (mem_size - MMIO_GAP_START) as usize,
        ),
    ]
}

/// End (exclusive) of the RAM that starts at address 0, capped at the MMIO
/// gap: the kernel, the initrd and every boot structure live below it.
pub(crate) fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    mem.iter()
        .find(|region| region.start_addr() == GuestAddress(0))
        .map_or(0, |region| region.len().min(MMIO_GAP_START))
}

/// A range of guest RAM, as reported to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RamRange {
    /// First byte.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The usable RAM the guest is told about: the region at 0 minus the legacy
/// hole `[EBDA_START, HIMEM_START)` (EBDA with the MP table, VGA, ROMs), then
/// every other region as is.
pub(crate) fn ram_ranges(mem: &GuestMemoryMmap) -> Vec<RamRange> {
    let mut ranges = Vec::new();
    for region in mem.iter() {
        let start = region.start_addr().raw_value();
        let end = start + region.len();
        if start == 0 {
            ranges.push(RamRange {
                start: 0,
                size: end.min(EBDA_START),
            });
            if end > HIMEM_START {
                ranges.push(RamRange {
                    start: HIMEM_START,
                    size: end - HIMEM_START,
                });
            }
        } else {
            ranges.push(RamRange {
                start,
                size: region.len(),
            });
        }
    }
    ranges
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// Guest memory laid out as the VMM does it.
    pub(crate) fn guest_memory(mem_size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&memory_regions(mem_size)).unwrap()
    }

    #[test]
    fn regions_below_the_gap() {
        assert_eq!(
            memory_regions(128 * MIB),
            vec![(GuestAddress(0), (128 * MIB) as usize)]
        );
        assert!(memory_regions(0).is_empty());
    }

    #[test]
    fn regions_at_the_gap() {
        assert_eq!(
            memory_regions(MMIO_GAP_START),
            vec![(GuestAddress(0), MMIO_GAP_START as usize)]
        );
    }

    #[test]
    fn regions_above_the_gap() {
        let regions = memory_regions(4 * GIB);
        assert_eq!(
            regions,
            vec![
                (GuestAddress(0), MMIO_GAP_START as usize),
                (
                    GuestAddress(MMIO_GAP_END),
                    (4 * GIB - MMIO_GAP_START) as usize
                ),
            ]
        );
        let total: usize = regions.iter().map(|(_, size)| size).sum();
        assert_eq!(total as u64, 4 * GIB);
        // One byte past the gap start already goes above 4 GiB.
        assert_eq!(
            memory_regions(MMIO_GAP_START + 1)[1],
            (GuestAddress(MMIO_GAP_END), 1)
        );
    }

    #[test]
    fn ram_ranges_skip_the_legacy_hole() {
        let mem = guest_memory(128 * MIB);
        assert_eq!(
            ram_ranges(&mem),
            vec![
                RamRange {
                    start: 0,
                    size: EBDA_START
                },
                RamRange {
                    start: HIMEM_START,
                    size: 128 * MIB - HIMEM_START
                },
            ]
        );
        assert_eq!(low_ram_end(&mem), 128 * MIB);
    }

    #[test]
    fn ram_ranges_include_high_ram() {
        // Only map the regions' layout: 4 GiB + 16 MiB of sparse memory.
        let mem = guest_memory(MMIO_GAP_START + 16 * MIB);
        let ranges = ram_ranges(&mem);
        assert_eq!(ranges.len(), 3);
        assert_eq!(
            ranges[1],
            RamRange {
                start: HIMEM_START,
                size: MMIO_GAP_START - HIMEM_START
            }
        );
        assert_eq!(
            ranges[2],
            RamRange {
                start: MMIO_GAP_END,
                size: 16 * MIB
            }
        );
        assert_eq!(low_ram_end(&mem), MMIO_GAP_START);
    }
}
