//! Kernel, initrd and command line into guest memory.
//!
//! Kernels: an ELF vmlinux is entered through PVH when it carries the Xen
//! PVH note, else through the 64-bit Linux boot protocol at `e_entry`; a
//! bzImage through its 64-bit entry point. The kernel must fit in low RAM
//! (below the MMIO gap); the initrd goes page-aligned at the top of low RAM.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::cmdline::Cmdline;
use linux_loader::elf::{
    Elf64_Ehdr, Elf64_Phdr, EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, PT_LOAD,
};
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use super::boot_params::KERNEL_HDR_MAGIC;
use super::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START};
use super::memory::low_ram_end;
use super::{ArchError, BootProtocol, InitrdRegion, KernelImage};

/// Offset of the setup header in a bzImage (Linux boot protocol).
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// Size of a real-mode setup sector.
const SECTOR_SIZE: u64 = 512;
/// Setup sectors a header with `setup_sects == 0` means (boot protocol).
const DEFAULT_SETUP_SECTS: u64 = 4;
/// The 64-bit entry point of a bzImage is this far past its load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// `initrd_addr_max` assumed for boot protocols before 2.03, which lack it.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// Boot protocol version that introduced `initrd_addr_max`.
const BOOT_PROTOCOL_INITRD_ADDR_MAX: u16 = 0x0203;
/// Guest page size: the initrd is placed on a page boundary.
const PAGE_SIZE: u64 = 0x1000;

/// Loads an ELF vmlinux or a bzImage (told apart by their magic numbers).
pub(super) fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: &mut File,
) -> Result<KernelImage, ArchError> {
    if is_elf(kernel)? {
        load_elf(mem, kernel)
    } else if let Some(header) = read_setup_header(kernel)? {
        load_bzimage(mem, kernel, &header)
    } else {
        Err(ArchError::UnknownKernelFormat)
    }
}

/// Whether the image starts with the ELF magic. A file too short to hold
/// it is not ELF.
fn is_elf(kernel: &mut File) -> Result<bool, ArchError> {
    let mut magic = [0u8; 4];
    Ok(read_at(kernel, 0, &mut magic)? && magic == *ELFMAG)
}

/// The bzImage setup header, if the image has one ("HdrS" magic).
fn read_setup_header(kernel: &mut File) -> Result<Option<setup_header>, ArchError> {
    let mut header = setup_header::default();
    let found = read_at(kernel, SETUP_HEADER_OFFSET, header.as_mut_slice())?;
    // Copy out of the packed struct before comparing.
    let magic = header.header;
    Ok((found && magic == KERNEL_HDR_MAGIC).then_some(header))
}

/// Reads `buf.len()` bytes at `offset`; Ok(false) if the file is shorter.
fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> Result<bool, ArchError> {
    file.seek(SeekFrom::Start(offset))
        .map_err(ArchError::KernelRead)?;
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(ArchError::KernelRead(e)),
    }
}

/// Fails with [`ArchError::KernelDoesNotFit`] if the kernel would end past
/// low RAM.
fn check_kernel_fits(mem: &GuestMemoryMmap, kernel_end: u64) -> Result<(), ArchError> {
    let mem_end = low_ram_end(mem);
    if kernel_end > mem_end {
        return Err(ArchError::KernelDoesNotFit {
            kernel_end,
            mem_end,
        });
    }
    Ok(())
}

fn load_elf(mem: &GuestMemoryMmap, kernel: &mut File) -> Result<KernelImage, ArchError> {
    check_elf_is_x86_64(kernel)?;
    // Check the size up front: the loader would only say that a read failed.
    if let Some(end) = elf_load_end(kernel)? {
        check_kernel_fits(mem, end)?;
    }
    let loaded = Elf::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
        .map_err(ArchError::ElfLoad)?;
    check_kernel_fits(mem, loaded.kernel_end)?;
    let (protocol, entry) = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => (BootProtocol::Pvh, entry),
        // Without an offset the loader's load address is `e_entry`.
        _ => (BootProtocol::Linux64, loaded.kernel_load),
    };
    Ok(KernelImage {
        entry,
        protocol,
        kernel_end: GuestAddress(loaded.kernel_end),
        setup_header: None,
    })
}

/// Offset of `e_machine` in an ELF header, the same for 32 and 64 bits.
const ELF_MACHINE_OFFSET: usize = 18;

/// Refuses an ELF built for another machine with a message naming it (the
/// loader would report only the first field it dislikes, e.g. "big-endian
/// binary" for a PowerPC kernel).
fn check_elf_is_x86_64(kernel: &mut File) -> Result<(), ArchError> {
    let mut header = [0u8; ELF_MACHINE_OFFSET + 2];
    if !read_at(kernel, 0, &mut header)? {
        // Too short for a header: the loader names that.
        return Ok(());
    }
    let class = header[EI_CLASS];
    let little_endian = header[EI_DATA] == ELFDATA2LSB;
    let machine_bytes = [header[ELF_MACHINE_OFFSET], header[ELF_MACHINE_OFFSET + 1]];
    let machine = if little_endian {
        u16::from_le_bytes(machine_bytes)
    } else {
        u16::from_be_bytes(machine_bytes)
    };
    if machine == EM_X86_64 && class == ELFCLASS64 && little_endian {
        return Ok(());
    }
    Err(ArchError::ElfNotX86_64 {
        machine: elf_machine_name(machine),
        bits: if class == ELFCLASS64 { 64 } else { 32 },
        endian: if little_endian { "little" } else { "big" },
    })
}

/// A readable name for the ELF machines a kernel is most often built for.
fn elf_machine_name(machine: u16) -> String {
    match machine {
        3 => "i386".into(),
        8 => "MIPS".into(),
        20 => "PowerPC".into(),
        21 => "PowerPC64".into(),
        22 => "s390".into(),
        40 => "ARM".into(),
        62 => "x86-64".into(),
        183 => "AArch64".into(),
        243 => "RISC-V".into(),
        258 => "LoongArch".into(),
        other => format!("machine {other}"),
    }
}

/// The end of the highest segment the ELF loader will copy (`PT_LOAD` with
/// file contents), or None if the headers are unreadable (the loader then
/// reports the precise error).
fn elf_load_end(kernel: &mut File) -> Result<Option<u64>, ArchError> {
    let mut ehdr = Elf64_Ehdr::default();
    if !read_at(kernel, 0, ehdr.as_mut_slice())? {
        return Ok(None);
    }
    if usize::from(ehdr.e_phentsize) != std::mem::size_of::<Elf64_Phdr>() {
        return Ok(None);
    }
    let mut end = 0u64;
    for i in 0..u64::from(ehdr.e_phnum) {
        let mut phdr = Elf64_Phdr::default();
        let offset = ehdr.e_phoff + i * std::mem::size_of::<Elf64_Phdr>() as u64;
        if !read_at(kernel, offset, phdr.as_mut_slice())? {
            return Ok(None);
        }
        if phdr.p_type == PT_LOAD && phdr.p_filesz != 0 {
            end = end.max(phdr.p_paddr.saturating_add(phdr.p_memsz));
        }
    }
    Ok(Some(end))
}

fn load_bzimage(
    mem: &GuestMemoryMmap,
    kernel: &mut File,
    header: &setup_header,
) -> Result<KernelImage, ArchError> {
    // The protected-mode kernel follows the setup sectors and the boot sector.
    let setup_sects = match u64::from(header.setup_sects) {
        0 => DEFAULT_SETUP_SECTS,
        n => n,
    };
    let file_len = kernel
        .seek(SeekFrom::End(0))
        .map_err(ArchError::KernelRead)?;
    let payload = file_len.saturating_sub((setup_sects + 1) * SECTOR_SIZE);
    check_kernel_fits(mem, u64::from(header.code32_start) + payload)?;

    let loaded = BzImage::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
        .map_err(ArchError::BzImageLoad)?;
    // The kernel decompresses and runs in `init_size` bytes from its load
    // address, past the end of the file data: nothing may be placed there.
    let init_end = loaded.kernel_load.raw_value() + u64::from(header.init_size);
    let kernel_end = loaded.kernel_end.max(init_end);
    check_kernel_fits(mem, kernel_end)?;
    Ok(KernelImage {
        entry: loaded.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
        protocol: BootProtocol::Linux64,
        kernel_end: GuestAddress(kernel_end),
        setup_header: loaded.setup_header,
    })
}

/// Places the initrd page-aligned at the highest address that fits below
/// the top of low RAM (and below `initrd_addr_max` for a bzImage), above the
/// kernel.
pub(super) fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &mut File,
    kernel: &KernelImage,
) -> Result<InitrdRegion, ArchError> {
    let size = initrd.metadata().map_err(ArchError::InitrdSize)?.len();
    let addr = initrd_addr(low_ram_end(mem), size, kernel)?;
    initrd.rewind().map_err(ArchError::InitrdSize)?;
    mem.read_exact_volatile_from(GuestAddress(addr), initrd, size as usize)
        .map_err(|source| ArchError::InitrdRead { addr, size, source })?;
    Ok(InitrdRegion {
        addr: GuestAddress(addr),
        size: size as usize,
    })
}

/// Where an initrd of `size` bytes goes, given the end of low RAM.
pub(super) fn initrd_addr(
    low_ram_end: u64,
    size: u64,
    kernel: &KernelImage,
) -> Result<u64, ArchError> {
    let mut limit = low_ram_end;
    if let Some(header) = &kernel.setup_header {
        // `initrd_addr_max` is the highest address the last byte may have.
        let addr_max = if header.version >= BOOT_PROTOCOL_INITRD_ADDR_MAX {
            u64::from(header.initrd_addr_max)
        } else {
            DEFAULT_INITRD_ADDR_MAX
        };
        limit = limit.min(addr_max.saturating_add(1));
    }
    let lowest = align_up(kernel.kernel_end.raw_value(), PAGE_SIZE);
    let available = limit.saturating_sub(lowest);
    match limit.checked_sub(size).map(|top| top & !(PAGE_SIZE - 1)) {
        Some(addr) if addr >= lowest => Ok(addr),
        _ => Err(ArchError::InitrdDoesNotFit { size, available }),
    }
}

fn align_up(addr: u64, align: u64) -> u64 {
    addr.div_ceil(align) * align
}

/// Size of the command line as the guest gets it, NUL included; fails if
/// that is more than [`CMDLINE_MAX_SIZE`].
pub(super) fn cmdline_size(cmdline: &Cmdline) -> Result<usize, ArchError> {
    let size = cmdline
        .as_cstring()
        .map_err(ArchError::CmdlineInvalid)?
        .as_bytes_with_nul()
        .len();
    if size > CMDLINE_MAX_SIZE {
        return Err(ArchError::CmdlineTooLong {
            len: size - 1,
            max: CMDLINE_MAX_SIZE - 1,
        });
    }
    Ok(size)
}

/// Writes the command line, NUL-terminated, at [`CMDLINE_START`].
pub(super) fn load_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<(), ArchError> {
    cmdline_size(cmdline)?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(
        |source| ArchError::CmdlineWrite {
            addr: CMDLINE_START,
            source,
        },
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use linux_loader::elf::{Elf64_Nhdr, ET_EXEC, PT_NOTE};
    use vmm_sys_util::tempfile::TempFile;

    use super::super::memory::tests::guest_memory;
    use super::*;

    const MIB: u64 = 1 << 20;
    /// Where the test kernels load and start.
    const KERNEL_ADDR: u64 = 0x100_0000;
    /// PVH entry advertised by the test kernels that have the note.
    const PVH_ENTRY: u32 = 0x100_0040;
    /// Where the test ELF puts its segment in the file.
    const SEGMENT_OFFSET: usize = 0x1000;
    /// Xen ELF note type carrying the 32-bit PVH entry point.
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

    /// A file holding `bytes`; the `TempFile` deletes it when dropped.
    fn file_with(bytes: &[u8]) -> (TempFile, File) {
        let tmp = TempFile::new().unwrap();
        let mut file = tmp.as_file().try_clone().unwrap();
        file.write_all(bytes).unwrap();
        (tmp, file)
    }

    fn push_note(image: &mut Vec<u8>, name: &[u8], note_type: u32, desc: &[u8]) {
        let nhdr = Elf64_Nhdr {
            n_namesz: name.len() as u32,
            n_descsz: desc.len() as u32,
            n_type: note_type,
        };
        image.extend_from_slice(nhdr.as_slice());
        for part in [name, desc] {
            image.extend_from_slice(part);
            image.resize(image.len().next_multiple_of(4), 0);
        }
    }

    /// A minimal ELF64 vmlinux: one PT_LOAD of `payload` (`memsz` in memory)
    /// at `KERNEL_ADDR`, plus a PT_NOTE holding a GNU note and, if asked, the
    /// Xen PVH entry note.
    fn elf_image(payload: &[u8], memsz: u64, pvh: bool) -> Vec<u8> {
        let ehdr_size = std::mem::size_of::<Elf64_Ehdr>();
        let phdr_size = std::mem::size_of::<Elf64_Phdr>();
        let mut ehdr = Elf64_Ehdr::default();
        ehdr.e_ident[..4].copy_from_slice(ELFMAG);
        ehdr.e_ident[4] = ELFCLASS64;
        ehdr.e_ident[5] = 1; // ELFDATA2LSB
        ehdr.e_ident[6] = 1; // EV_CURRENT
        ehdr.e_type = ET_EXEC;
        ehdr.e_machine = EM_X86_64;
        ehdr.e_version = 1;
        ehdr.e_entry = KERNEL_ADDR;
        ehdr.e_phoff = ehdr_size as u64;
        ehdr.e_ehsize = ehdr_size as u16;
        ehdr.e_phentsize = phdr_size as u16;
        ehdr.e_phnum = 2;

        let mut notes = Vec::new();
        push_note(&mut notes, b"GNU\0", 3, &[0xab; 20]);
        if pvh {
            push_note(
                &mut notes,
                b"Xen\0",
                XEN_ELFNOTE_PHYS32_ENTRY,
                &PVH_ENTRY.to_le_bytes(),
            );
        }
        let notes_offset = ehdr_size + 2 * phdr_size;
        let load = Elf64_Phdr {
            p_type: PT_LOAD,
            p_offset: SEGMENT_OFFSET as u64,
            p_vaddr: KERNEL_ADDR,
            p_paddr: KERNEL_ADDR,
            p_filesz: payload.len() as u64,
            p_memsz: memsz,
            ..Default::default()
        };
        let note = Elf64_Phdr {
            p_type: PT_NOTE,
            p_offset: notes_offset as u64,
            p_filesz: notes.len() as u64,
            p_memsz: notes.len() as u64,
            ..Default::default()
        };
        let mut image = Vec::new();
        image.extend_from_slice(ehdr.as_slice());
        image.extend_from_slice(load.as_slice());
        image.extend_from_slice(note.as_slice());
        image.extend_from_slice(&notes);
        image.resize(SEGMENT_OFFSET, 0);
        image.extend_from_slice(payload);
        image
    }

    /// A minimal bzImage: one setup sector, then `payload_len` bytes.
    fn bzimage(payload_len: usize, version: u16, initrd_addr_max: u32) -> Vec<u8> {
        bzimage_with_init_size(payload_len, version, initrd_addr_max, 0)
    }

    fn bzimage_with_init_size(
        payload_len: usize,
        version: u16,
        initrd_addr_max: u32,
        init_size: u32,
    ) -> Vec<u8> {
        let header = setup_header {
            init_size,
            setup_sects: 1,
            boot_flag: 0xaa55,
            header: KERNEL_HDR_MAGIC,
            version,
            loadflags: 1, // LOADED_HIGH
            code32_start: KERNEL_ADDR as u32,
            initrd_addr_max,
            ..Default::default()
        };
        let mut image = vec![0u8; 2 * SECTOR_SIZE as usize];
        let start = SETUP_HEADER_OFFSET as usize;
        image[start..start + header.as_slice().len()].copy_from_slice(header.as_slice());
        image.extend((0..payload_len).map(|i| i as u8));
        image
    }

    fn elf_kernel(kernel_end: u64) -> KernelImage {
        KernelImage {
            entry: GuestAddress(KERNEL_ADDR),
            protocol: BootProtocol::Linux64,
            kernel_end: GuestAddress(kernel_end),
            setup_header: None,
        }
    }

    #[test]
    fn an_elf_for_another_machine_is_named() {
        let mem = guest_memory(64 * MIB);
        for (machine, big_endian, class, expected) in [
            (
                183u16,
                false,
                ELFCLASS64,
                "an ELF for AArch64 (64-bit, little-endian)",
            ),
            (
                21,
                true,
                ELFCLASS64,
                "an ELF for PowerPC64 (64-bit, big-endian)",
            ),
            (3, false, 1, "an ELF for i386 (32-bit, little-endian)"),
            (
                EM_X86_64,
                false,
                1,
                "an ELF for x86-64 (32-bit, little-endian)",
            ),
        ] {
            let mut image = elf_image(&[0x90; 16], 16, false);
            image[EI_CLASS] = class;
            image[EI_DATA] = if big_endian { 2 } else { 1 };
            let bytes = if big_endian {
                machine.to_be_bytes()
            } else {
                machine.to_le_bytes()
            };
            image[ELF_MACHINE_OFFSET..ELF_MACHINE_OFFSET + 2].copy_from_slice(&bytes);
            let (_tmp, mut file) = file_with(&image);
            let err = load_kernel(&mem, &mut file).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("not an x86-64 kernel"), "{message}");
        }
    }

    #[test]
    fn elf_without_pvh_note_boots_linux64() {
        let mem = guest_memory(64 * MIB);
        let (_tmp, mut file) = file_with(&elf_image(b"kernel text", 0x2000, false));
        let kernel = load_kernel(&mem, &mut file).unwrap();
        assert_eq!(kernel.protocol, BootProtocol::Linux64);
        assert_eq!(kernel.entry, GuestAddress(KERNEL_ADDR));
        assert_eq!(kernel.kernel_end, GuestAddress(KERNEL_ADDR + 0x2000));
        assert!(kernel.setup_header.is_none());
        let mut text = [0u8; 11];
        mem.read_slice(&mut text, GuestAddress(KERNEL_ADDR))
            .unwrap();
        assert_eq!(&text, b"kernel text");
    }

    #[test]
    fn elf_with_pvh_note_boots_pvh() {
        let mem = guest_memory(64 * MIB);
        let (_tmp, mut file) = file_with(&elf_image(b"kernel text", 0x2000, true));
        let kernel = load_kernel(&mem, &mut file).unwrap();
        assert_eq!(kernel.protocol, BootProtocol::Pvh);
        assert_eq!(kernel.entry, GuestAddress(u64::from(PVH_ENTRY)));
    }

    #[test]
    fn elf_larger_than_memory_is_refused() {
        let mem = guest_memory(16 * MIB);
        let (_tmp, mut file) = file_with(&elf_image(b"kernel text", 2 * MIB, false));
        match load_kernel(&mem, &mut file) {
            Err(ArchError::KernelDoesNotFit {
                kernel_end,
                mem_end,
            }) => {
                assert_eq!(kernel_end, KERNEL_ADDR + 2 * MIB);
                assert_eq!(mem_end, 16 * MIB);
            }
            other => panic!("expected KernelDoesNotFit, got {other:?}"),
        }
    }

    #[test]
    fn bzimage_boots_linux64_at_the_64bit_entry() {
        let mem = guest_memory(64 * MIB);
        let (_tmp, mut file) = file_with(&bzimage(0x3000, 0x020f, 0x7fff_ffff));
        let kernel = load_kernel(&mem, &mut file).unwrap();
        assert_eq!(kernel.protocol, BootProtocol::Linux64);
        assert_eq!(kernel.entry, GuestAddress(KERNEL_ADDR + 0x200));
        assert_eq!(kernel.kernel_end, GuestAddress(KERNEL_ADDR + 0x3000));
        let header = kernel.setup_header.unwrap();
        assert_eq!({ header.version }, 0x020f);
        let byte: u8 = mem.read_obj(GuestAddress(KERNEL_ADDR + 5)).unwrap();
        assert_eq!(byte, 5);
    }

    #[test]
    fn bzimage_init_size_reserves_memory_past_the_file_data() {
        let mem = guest_memory(64 * MIB);
        let (_tmp, mut file) = file_with(&bzimage_with_init_size(
            0x3000,
            0x020f,
            0x7fff_ffff,
            0x80_0000,
        ));
        let kernel = load_kernel(&mem, &mut file).unwrap();
        assert_eq!(kernel.kernel_end, GuestAddress(KERNEL_ADDR + 0x80_0000));
        // An init_size past the end of memory does not fit.
        let mem = guest_memory(KERNEL_ADDR + MIB);
        let (_tmp, mut file) = file_with(&bzimage_with_init_size(
            0x3000,
            0x020f,
            0x7fff_ffff,
            0x80_0000,
        ));
        assert!(matches!(
            load_kernel(&mem, &mut file),
            Err(ArchError::KernelDoesNotFit { .. })
        ));
    }

    #[test]
    fn bzimage_larger_than_memory_is_refused() {
        let mem = guest_memory(KERNEL_ADDR + MIB);
        let (_tmp, mut file) = file_with(&bzimage(2 * MIB as usize, 0x020f, 0x7fff_ffff));
        assert!(matches!(
            load_kernel(&mem, &mut file),
            Err(ArchError::KernelDoesNotFit { .. })
        ));
    }

    #[test]
    fn unknown_formats_are_refused() {
        let mem = guest_memory(16 * MIB);
        for bytes in [&b"MZ not a kernel"[..], &[0u8; 4096][..], &[][..]] {
            let (_tmp, mut file) = file_with(bytes);
            assert!(matches!(
                load_kernel(&mem, &mut file),
                Err(ArchError::UnknownKernelFormat)
            ));
        }
    }

    #[test]
    fn initrd_goes_page_aligned_to_the_top_of_low_ram() {
        let mem = guest_memory(64 * MIB);
        let contents: Vec<u8> = (0..0x1800).map(|i| (i % 251) as u8).collect();
        let (_tmp, mut file) = file_with(&contents);
        let initrd = load_initrd(&mem, &mut file, &elf_kernel(KERNEL_ADDR + MIB)).unwrap();
        assert_eq!(initrd.size, 0x1800);
        // Highest page-aligned address with 0x1800 bytes below 64 MiB.
        assert_eq!(initrd.addr, GuestAddress(64 * MIB - 0x2000));
        let mut read = vec![0u8; contents.len()];
        mem.read_slice(&mut read, initrd.addr).unwrap();
        assert_eq!(read, contents);
    }

    #[test]
    fn initrd_stays_below_the_mmio_gap() {
        let kernel = elf_kernel(KERNEL_ADDR + MIB);
        let addr = initrd_addr(super::super::layout::MMIO_GAP_START, 0x1000, &kernel).unwrap();
        assert_eq!(addr, super::super::layout::MMIO_GAP_START - 0x1000);
    }

    #[test]
    fn initrd_overlapping_the_kernel_is_refused() {
        let mem = guest_memory(16 * MIB);
        // The kernel ends mid-page: free space starts at the next page and
        // runs to the end of memory.
        let kernel = elf_kernel(8 * MIB + 0x123);
        let available = 16 * MIB - (8 * MIB + 0x1000);
        let (_tmp, mut file) = file_with(&vec![0u8; (available + 1) as usize]);
        match load_initrd(&mem, &mut file, &kernel) {
            Err(ArchError::InitrdDoesNotFit {
                size,
                available: free,
            }) => {
                assert_eq!(size, available + 1);
                assert_eq!(free, available);
            }
            other => panic!("expected InitrdDoesNotFit, got {other:?}"),
        }
        // Exactly the free space fits, right after the kernel's last page.
        assert_eq!(
            initrd_addr(16 * MIB, available, &kernel).unwrap(),
            8 * MIB + 0x1000
        );
    }

    #[test]
    fn initrd_honors_initrd_addr_max() {
        let mem = guest_memory(64 * MIB);
        let (_tmp, mut file) = file_with(&bzimage(0x3000, 0x020f, (32 * MIB - 1) as u32));
        let kernel = load_kernel(&mem, &mut file).unwrap();
        assert_eq!(
            initrd_addr(64 * MIB, 0x1000, &kernel).unwrap(),
            32 * MIB - 0x1000
        );
        // Before protocol 2.03 the limit is 0x37ffffff: memory is lower.
        let (_tmp, mut file) = file_with(&bzimage(0x3000, 0x0202, 0));
        let kernel = load_kernel(&mem, &mut file).unwrap();
        assert_eq!(
            initrd_addr(64 * MIB, 0x1000, &kernel).unwrap(),
            64 * MIB - 0x1000
        );
    }

    #[test]
    fn cmdline_is_written_nul_terminated() {
        let mem = guest_memory(16 * MIB);
        let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).unwrap();
        cmdline.insert_str("console=ttyS0 panic=-1").unwrap();
        load_cmdline(&mem, &cmdline).unwrap();
        let mut read = [0u8; 23];
        mem.read_slice(&mut read, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&read, b"console=ttyS0 panic=-1\0");
        assert_eq!(cmdline_size(&cmdline).unwrap(), 23);
    }

    #[test]
    fn cmdline_too_long_is_refused() {
        let mem = guest_memory(16 * MIB);
        let mut cmdline = Cmdline::new(2 * CMDLINE_MAX_SIZE).unwrap();
        cmdline.insert_str("x".repeat(CMDLINE_MAX_SIZE)).unwrap();
        match load_cmdline(&mem, &cmdline) {
            Err(ArchError::CmdlineTooLong { len, max }) => {
                assert_eq!(len, CMDLINE_MAX_SIZE);
                assert_eq!(max, CMDLINE_MAX_SIZE - 1);
            }
            other => panic!("expected CmdlineTooLong, got {other:?}"),
        }
        // One byte shorter fits (NUL included).
        let mut cmdline = Cmdline::new(2 * CMDLINE_MAX_SIZE).unwrap();
        cmdline
            .insert_str("x".repeat(CMDLINE_MAX_SIZE - 1))
            .unwrap();
        load_cmdline(&mem, &cmdline).unwrap();
    }
}
