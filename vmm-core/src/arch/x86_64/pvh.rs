//! The PVH boot structures: `hvm_start_info` at [`PVH_INFO_START`] (its
//! address goes to the guest in RBX), the memory map at [`PVH_MEMMAP_START`]
//! and the module list (the initrd) at [`PVH_MODLIST_START`].

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_MEMMAP_TYPE_RAM,
    XEN_HVM_START_MAGIC_VALUE,
};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{CMDLINE_START, PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START};
use super::memory::RamRange;
use super::{ArchError, BootInfo};

/// `hvm_start_info` version 1: has the memory map fields.
const START_INFO_VERSION: u32 = 1;

/// The three PVH structures, before they are written.
pub(super) struct PvhBootInfo {
    /// Goes at [`PVH_INFO_START`].
    pub start_info: hvm_start_info,
    /// Go at [`PVH_MEMMAP_START`].
    pub memmap: Vec<hvm_memmap_table_entry>,
    /// Go at [`PVH_MODLIST_START`].
    pub modules: Vec<hvm_modlist_entry>,
}

/// Builds `hvm_start_info`, the memory map (one RAM entry per range) and the
/// module list (the initrd, if any).
pub(super) fn build_start_info(info: &BootInfo, ram: &[RamRange]) -> PvhBootInfo {
    let memmap: Vec<_> = ram
        .iter()
        .map(|range| hvm_memmap_table_entry {
            addr: range.start,
            size: range.size,
            type_: XEN_HVM_MEMMAP_TYPE_RAM,
            reserved: 0,
        })
        .collect();
    let modules: Vec<_> = info
        .initrd
        .iter()
        .map(|initrd| hvm_modlist_entry {
            paddr: initrd.addr.raw_value(),
            size: initrd.size as u64,
            // No per-module command line.
            cmdline_paddr: 0,
            reserved: 0,
        })
        .collect();
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: START_INFO_VERSION,
        flags: 0,
        nr_modules: modules.len() as u32,
        // Zero means "not present" for every address below.
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_START
        },
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: info.rsdp.map_or(0, |rsdp| rsdp.raw_value()),
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    PvhBootInfo {
        start_info,
        memmap,
        modules,
    }
}

fn write_all<T: ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    items: &[T],
) -> Result<(), ArchError> {
    let bytes: Vec<u8> = items.iter().flat_map(|i| i.as_slice().to_vec()).collect();
    mem.write_slice(&bytes, GuestAddress(addr))
        .map_err(|source| ArchError::GuestMemory { what, addr, source })
}

/// Writes the PVH structures where the layout says.
pub(super) fn write_start_info(
    mem: &GuestMemoryMmap,
    info: &BootInfo,
    ram: &[RamRange],
) -> Result<(), ArchError> {
    let pvh = build_start_info(info, ram);
    write_all(mem, "PVH memory map", PVH_MEMMAP_START, &pvh.memmap)?;
    write_all(mem, "PVH module list", PVH_MODLIST_START, &pvh.modules)?;
    write_all(mem, "PVH start info", PVH_INFO_START, &[pvh.start_info])
}

// The start info must not run into the module list.
const _: () =
    assert!(PVH_INFO_START + std::mem::size_of::<hvm_start_info>() as u64 <= PVH_MODLIST_START);

#[cfg(test)]
mod tests {
    use super::super::layout::{EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};
    use super::super::memory::{ram_ranges, tests::guest_memory};
    use super::super::InitrdRegion;
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A 10-byte command line and a 0x1234-byte initrd at 63 MiB.
    fn info_with_initrd() -> BootInfo {
        BootInfo {
            cmdline_size: 10,
            initrd: Some(InitrdRegion {
                addr: GuestAddress(0x3f0_0000),
                size: 0x1234,
            }),
            rsdp: None,
        }
    }

    #[test]
    fn start_info_fields_with_initrd() {
        let mem = guest_memory(MMIO_GAP_START + 16 * MIB);
        let info = info_with_initrd();
        let pvh = build_start_info(&info, &ram_ranges(&mem));
        let si = pvh.start_info;
        assert_eq!(si.magic, 0x336e_c578);
        assert_eq!(si.version, 1);
        assert_eq!(si.cmdline_paddr, CMDLINE_START);
        assert_eq!(si.rsdp_paddr, 0);
        assert_eq!((si.nr_modules, si.modlist_paddr), (1, PVH_MODLIST_START));
        assert_eq!((si.memmap_paddr, si.memmap_entries), (PVH_MEMMAP_START, 3));
        assert_eq!(
            (pvh.modules[0].paddr, pvh.modules[0].size),
            (0x3f0_0000, 0x1234)
        );
        let map: Vec<_> = pvh
            .memmap
            .iter()
            .map(|e| (e.addr, e.size, e.type_))
            .collect();
        assert_eq!(
            map,
            vec![
                (0, EBDA_START, XEN_HVM_MEMMAP_TYPE_RAM),
                (
                    HIMEM_START,
                    MMIO_GAP_START - HIMEM_START,
                    XEN_HVM_MEMMAP_TYPE_RAM
                ),
                (MMIO_GAP_END, 16 * MIB, XEN_HVM_MEMMAP_TYPE_RAM),
            ]
        );
    }

    #[test]
    fn start_info_without_initrd_has_no_modules() {
        let info = BootInfo {
            rsdp: Some(GuestAddress(0xe_0000)),
            ..Default::default()
        };
        let pvh = build_start_info(&info, &[]);
        assert_eq!(
            (pvh.start_info.nr_modules, pvh.start_info.modlist_paddr),
            (0, 0)
        );
        assert_eq!(pvh.start_info.rsdp_paddr, 0xe_0000);
        assert!(pvh.modules.is_empty());
    }

    #[test]
    fn structures_are_written_where_layout_says() {
        let mem = guest_memory(64 * MIB);
        let info = info_with_initrd();
        write_start_info(&mem, &info, &ram_ranges(&mem)).unwrap();
        let si: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(si.magic, XEN_HVM_START_MAGIC_VALUE);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!(module.paddr, 0x3f0_0000);
        let ram: hvm_memmap_table_entry =
            mem.read_obj(GuestAddress(PVH_MEMMAP_START + 24)).unwrap();
        assert_eq!(
            (ram.addr, ram.type_),
            (HIMEM_START, XEN_HVM_MEMMAP_TYPE_RAM)
        );
    }
}
