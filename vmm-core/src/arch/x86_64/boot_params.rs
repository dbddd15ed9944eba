//! The Linux boot protocol zero page (`boot_params`): setup header, command
//! line, initrd and the e820 memory map, at [`ZERO_PAGE_START`].

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{CMDLINE_START, ZERO_PAGE_START};
use super::memory::RamRange;
use super::{ArchError, BootInfo};

/// `setup_header.boot_flag`: the boot sector signature.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `setup_header.header`: "HdrS", what tells a bzImage apart.
pub(super) const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// `setup_header.type_of_loader`: "undefined" boot loader.
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// `setup_header.kernel_alignment`: 16 MiB, as Firecracker.
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// e820 type of usable RAM.
const E820_RAM: u32 = 1;

/// The zero page for a kernel with (bzImage) or without (ELF) a setup
/// header. At most `E820_MAX_ENTRIES_ZEROPAGE` RAM ranges are reported.
pub(super) fn build_boot_params(
    header: Option<&setup_header>,
    info: &BootInfo,
    ram: &[RamRange],
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(header) = header {
        // Keep what the kernel told us (version, loadflags, code32_start...).
        params.hdr = *header;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    // The command line and initrd live below 4 GiB (low RAM): 32 bits suffice.
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = info.cmdline_size as u32;
    if let Some(initrd) = info.initrd {
        params.hdr.ramdisk_image = initrd.addr.raw_value() as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    if let Some(rsdp) = info.rsdp {
        params.acpi_rsdp_addr = rsdp.raw_value();
    }

    let mut e820 = params.e820_table;
    let mut count = 0;
    for (slot, range) in e820.iter_mut().zip(ram) {
        *slot = boot_e820_entry {
            addr: range.start,
            size: range.size,
            r#type: E820_RAM,
        };
        count += 1;
    }
    if count < ram.len() {
        log::warn!(
            "e820: {} RAM ranges reported, {} left out",
            count,
            ram.len() - count
        );
    }
    params.e820_table = e820;
    params.e820_entries = count as u8;
    params
}

/// Writes the zero page at [`ZERO_PAGE_START`].
pub(super) fn write_boot_params(
    mem: &GuestMemoryMmap,
    header: Option<&setup_header>,
    info: &BootInfo,
    ram: &[RamRange],
) -> Result<(), ArchError> {
    let params = build_boot_params(header, info, ram);
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|source| ArchError::GuestMemory {
            what: "zero page",
            addr: ZERO_PAGE_START,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::super::layout::{EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};
    use super::super::memory::{ram_ranges, tests::guest_memory};
    use super::super::InitrdRegion;
    use super::*;

    const MIB: u64 = 1 << 20;

    fn info() -> BootInfo {
        BootInfo {
            cmdline_size: 24,
            initrd: Some(InitrdRegion {
                addr: GuestAddress(0x3f0_0000),
                size: 0x1234,
            }),
            rsdp: None,
        }
    }

    fn e820(params: &boot_params) -> Vec<(u64, u64, u32)> {
        let table = params.e820_table;
        table[..usize::from(params.e820_entries)]
            .iter()
            .map(|e| (e.addr, e.size, e.r#type))
            .collect()
    }

    #[test]
    fn zero_page_fields_for_an_elf_kernel() {
        let mem = guest_memory(64 * MIB);
        let params = build_boot_params(None, &info(), &ram_ranges(&mem));
        let hdr = params.hdr;
        assert_eq!(hdr.type_of_loader, 0xff);
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.kernel_alignment }, 0x0100_0000);
        assert_eq!(u64::from(hdr.cmd_line_ptr), CMDLINE_START);
        assert_eq!({ hdr.cmdline_size }, 24);
        assert_eq!({ hdr.ramdisk_image }, 0x3f0_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x1234);
        assert_eq!({ params.acpi_rsdp_addr }, 0);
        assert_eq!(
            e820(&params),
            vec![
                (0, EBDA_START, E820_RAM),
                (HIMEM_START, 64 * MIB - HIMEM_START, E820_RAM),
            ]
        );
    }

    #[test]
    fn e820_includes_ram_above_4gib() {
        let mem = guest_memory(MMIO_GAP_START + 32 * MIB);
        let params = build_boot_params(None, &info(), &ram_ranges(&mem));
        assert_eq!(
            e820(&params),
            vec![
                (0, EBDA_START, E820_RAM),
                (HIMEM_START, MMIO_GAP_START - HIMEM_START, E820_RAM),
                (MMIO_GAP_END, 32 * MIB, E820_RAM),
            ]
        );
    }

    #[test]
    fn bzimage_setup_header_is_kept() {
        let header = setup_header {
            version: 0x020f,
            loadflags: 0x1,
            code32_start: 0x10_0000,
            initrd_addr_max: 0x7fff_ffff,
            type_of_loader: 0,
            ..Default::default()
        };
        let info = BootInfo {
            rsdp: Some(GuestAddress(0xe_0000)),
            ..info()
        };
        let params = build_boot_params(Some(&header), &info, &[]);
        let hdr = params.hdr;
        assert_eq!({ hdr.version }, 0x020f);
        assert_eq!(hdr.loadflags, 0x1);
        assert_eq!({ hdr.code32_start }, 0x10_0000);
        assert_eq!({ hdr.initrd_addr_max }, 0x7fff_ffff);
        // Ours override the image's.
        assert_eq!(hdr.type_of_loader, 0xff);
        assert_eq!({ hdr.ramdisk_size }, 0x1234);
        assert_eq!({ params.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(params.e820_entries, 0);
    }

    #[test]
    fn zero_page_is_written_at_zero_page_start() {
        let mem = guest_memory(64 * MIB);
        write_boot_params(&mem, None, &info(), &ram_ranges(&mem)).unwrap();
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ params.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!(params.e820_entries, 2);
    }
}
