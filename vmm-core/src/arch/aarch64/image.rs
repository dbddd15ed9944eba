//! The arm64 `Image` (Documentation/arch/arm64/booting.rst): its header,
//! loading it with linux-loader's Image loader, the initrd, the command
//! line's bytes.
//!
//! The header (64 bytes, little-endian):
//!
//! ```text
//! 0x00 code0, code1    branch to the kernel's entry
//! 0x08 text_offset     where the Image goes above a 2 MiB-aligned base
//! 0x10 image_size      bytes the kernel occupies from its load address,
//!                      BSS included (0: a kernel older than 3.17, whose
//!                      text_offset is 0x80000)
//! 0x18 flags           bit 0: big-endian kernel
//! 0x38 magic           "ARM\x64"
//! ```

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::pe::PE;
use linux_loader::loader::KernelLoader;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use super::layout::{CMDLINE_MAX_SIZE, KERNEL_BASE};
use super::{ArchError, BootProtocol, InitrdRegion, KernelImage};

/// Size of the Image header.
pub(crate) const HEADER_SIZE: usize = 64;
/// `magic` of an arm64 Image: "ARM\x64".
const IMAGE_MAGIC: u32 = 0x644d_5241;
/// The `text_offset` of kernels whose header has `image_size == 0`.
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// `flags` bit 0: the kernel is big-endian.
const FLAG_BIG_ENDIAN: u64 = 1;
/// Page size used to align the initrd.
const PAGE_SIZE: u64 = 0x1000;

/// What the loader needs from an Image header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ImageHeader {
    /// Offset of the Image above its 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes the kernel occupies from its load address (at least the file).
    pub image_size: u64,
}

/// Parses an Image header; `file_size` stands in for a zero `image_size`.
pub(crate) fn parse_header(bytes: &[u8], file_size: u64) -> Result<ImageHeader, ArchError> {
    let header: &[u8; HEADER_SIZE] = bytes
        .get(..HEADER_SIZE)
        .and_then(|b| b.try_into().ok())
        .ok_or(ArchError::ImageHeader("shorter than the 64-byte header"))?;
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
    let magic = u32::from_le_bytes(header[0x38..0x3c].try_into().unwrap());
    if magic != IMAGE_MAGIC {
        return Err(ArchError::ImageHeader(
            "no \"ARM\\x64\" magic at offset 0x38 (a compressed vmlinuz must be unpacked first)",
        ));
    }
    let (text_offset, image_size) = match u64_at(0x10) {
        0 => (LEGACY_TEXT_OFFSET, file_size),
        size => (u64_at(0x08), size.max(file_size)),
    };
    if u64_at(0x18) & FLAG_BIG_ENDIAN != 0 {
        return Err(ArchError::ImageHeader("a big-endian kernel"));
    }
    if text_offset % 8 != 0 || text_offset >= 0x20_0000 {
        return Err(ArchError::ImageHeader(
            "text_offset is not below 2 MiB and 8-byte aligned",
        ));
    }
    Ok(ImageHeader {
        text_offset,
        image_size,
    })
}

/// First byte past RAM.
fn ram_end(mem: &GuestMemoryMmap) -> u64 {
    mem.iter()
        .map(|r| r.start_addr().raw_value() + r.len())
        .max()
        .unwrap_or(0)
}

/// Loads the Image at [`KERNEL_BASE`] + `text_offset` (linux-loader checks
/// the base's 2 MiB alignment and the magic again). The whole
/// `image_size`, BSS included, must fit in RAM.
pub(crate) fn load_kernel(
    mem: &GuestMemoryMmap,
    file: &mut File,
) -> Result<KernelImage, ArchError> {
    let file_size = file.seek(SeekFrom::End(0)).map_err(ArchError::KernelRead)?;
    file.rewind().map_err(ArchError::KernelRead)?;
    let mut bytes = [0u8; HEADER_SIZE];
    file.read_exact(&mut bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            ArchError::ImageHeader("shorter than the 64-byte header")
        }
        _ => ArchError::KernelRead(e),
    })?;
    let header = parse_header(&bytes, file_size)?;
    let load = KERNEL_BASE + header.text_offset;
    let end = load.saturating_add(header.image_size);
    let mem_end = ram_end(mem);
    if end > mem_end {
        return Err(ArchError::KernelDoesNotFit {
            kernel_end: end,
            mem_end,
        });
    }
    let loaded =
        PE::load(mem, Some(GuestAddress(KERNEL_BASE)), file, None).map_err(ArchError::ImageLoad)?;
    Ok(KernelImage {
        entry: loaded.kernel_load,
        protocol: BootProtocol::Arm64Image,
        kernel_end: GuestAddress(end.max(loaded.kernel_end)),
    })
}

/// Where an initrd of `size` bytes goes: page-aligned, as high as RAM
/// allows, above the kernel.
pub(crate) fn initrd_addr(mem_end: u64, kernel_end: u64, size: u64) -> Result<u64, ArchError> {
    let available = mem_end.saturating_sub(kernel_end);
    let addr = mem_end.checked_sub(size).map(|a| a & !(PAGE_SIZE - 1));
    match addr {
        Some(addr) if addr >= kernel_end => Ok(addr),
        _ => Err(ArchError::InitrdDoesNotFit { size, available }),
    }
}

/// Reads the initrd into the top of RAM.
pub(crate) fn load_initrd(
    mem: &GuestMemoryMmap,
    file: &mut File,
    kernel: &KernelImage,
) -> Result<InitrdRegion, ArchError> {
    let size = file.seek(SeekFrom::End(0)).map_err(ArchError::InitrdSize)?;
    file.rewind().map_err(ArchError::InitrdSize)?;
    let addr = initrd_addr(ram_end(mem), kernel.kernel_end.raw_value(), size)?;
    mem.read_exact_volatile_from(GuestAddress(addr), file, size as usize)
        .map_err(|source| ArchError::InitrdRead { addr, size, source })?;
    Ok(InitrdRegion {
        addr: GuestAddress(addr),
        size: size as usize,
    })
}

/// The command line as the FDT's `bootargs` takes it (no NUL), checked
/// against [`CMDLINE_MAX_SIZE`] — the one place that limit is checked.
pub(crate) fn cmdline_bytes(cmdline: &Cmdline) -> Result<String, ArchError> {
    let cstring = cmdline.as_cstring().map_err(ArchError::CmdlineInvalid)?;
    let len = cstring.as_bytes().len();
    let max = CMDLINE_MAX_SIZE - 1;
    if len > max {
        return Err(ArchError::CmdlineTooLong { len, max });
    }
    cstring
        .into_string()
        .map_err(|_| ArchError::CmdlineInvalid(linux_loader::cmdline::Error::InvalidAscii))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use vm_memory::Bytes;

    use super::*;
    use crate::arch::aarch64::{layout, memory_regions};

    const MIB: u64 = 1 << 20;

    /// A synthetic Image: the header, then `body` bytes of code.
    pub(crate) fn image(text_offset: u64, image_size: u64, body: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_SIZE];
        // code0: `b #0x40`-ish branch (any value does for the loader).
        bytes[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes());
        bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        bytes[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        bytes[0x18..0x20].copy_from_slice(&0xau64.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        bytes.extend((0..body).map(|i| i as u8));
        bytes
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile();
        file.write_all(bytes).unwrap();
        file
    }

    /// An unnamed temporary file.
    fn tempfile() -> File {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "mercury-image-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    fn memory(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&memory_regions(size)).unwrap()
    }

    #[test]
    fn header_fields_are_read() {
        let header = parse_header(&image(0x8_0000, 0x150_0000, 0), 4096).unwrap();
        assert_eq!(
            header,
            ImageHeader {
                text_offset: 0x8_0000,
                image_size: 0x150_0000
            }
        );
        // Modern kernels: text_offset 0.
        let header = parse_header(&image(0, 0x30_0000, 0), 4096).unwrap();
        assert_eq!(header.text_offset, 0);
    }

    #[test]
    fn a_zero_image_size_means_the_legacy_text_offset() {
        let header = parse_header(&image(0x1234, 0, 0), 0x9000).unwrap();
        assert_eq!(
            header,
            ImageHeader {
                text_offset: 0x8_0000,
                image_size: 0x9000
            }
        );
    }

    #[test]
    fn bad_headers_are_refused_with_the_reason() {
        let mut gzip = image(0, 0x1000, 0);
        gzip[0x38] = b'X';
        let e = parse_header(&gzip, 64).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        assert!(parse_header(&[0u8; 10], 10)
            .unwrap_err()
            .to_string()
            .contains("shorter"));
        let mut big_endian = image(0, 0x1000, 0);
        big_endian[0x18] = 1;
        assert!(parse_header(&big_endian, 64)
            .unwrap_err()
            .to_string()
            .contains("big-endian"));
        let e = parse_header(&image(0x20_0000, 0x1000, 0), 64).unwrap_err();
        assert!(e.to_string().contains("text_offset"), "{e}");
    }

    #[test]
    fn the_image_is_loaded_at_the_2mib_base_plus_text_offset() {
        let mem = memory(64 * MIB);
        let bytes = image(0x8_0000, 0x40_0000, 256);
        let kernel = load_kernel(&mem, &mut file_with(&bytes)).unwrap();
        let entry = layout::KERNEL_BASE + 0x8_0000;
        assert_eq!(kernel.entry, GuestAddress(entry));
        assert_eq!(entry % 0x20_0000, 0x8_0000);
        assert_eq!(kernel.protocol, BootProtocol::Arm64Image);
        // The BSS counts: the end is image_size from the load address.
        assert_eq!(kernel.kernel_end, GuestAddress(entry + 0x40_0000));
        let mut loaded = vec![0u8; bytes.len()];
        mem.read_slice(&mut loaded, kernel.entry).unwrap();
        assert_eq!(loaded, bytes);
    }

    #[test]
    fn a_kernel_larger_than_ram_is_refused() {
        let mem = memory(16 * MIB);
        let e = load_kernel(&mem, &mut file_with(&image(0, 64 * MIB, 16))).unwrap_err();
        assert!(matches!(e, ArchError::KernelDoesNotFit { .. }), "{e}");
        let e = load_kernel(&mem, &mut file_with(b"MZ not an image")).unwrap_err();
        assert!(e.to_string().contains("shorter"), "{e}");
    }

    #[test]
    fn the_initrd_goes_page_aligned_to_the_top_of_ram() {
        let mem = memory(64 * MIB);
        let kernel = load_kernel(&mem, &mut file_with(&image(0, 0x20_0000, 16))).unwrap();
        let initrd_bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let initrd = load_initrd(&mem, &mut file_with(&initrd_bytes), &kernel).unwrap();
        let ram_end = layout::DRAM_START + 64 * MIB;
        assert_eq!(initrd.addr.0, (ram_end - 5000) & !0xfff);
        assert_eq!(initrd.size, 5000);
        let mut read = vec![0u8; 5000];
        mem.read_slice(&mut read, initrd.addr).unwrap();
        assert_eq!(read, initrd_bytes);

        let e = initrd_addr(ram_end, ram_end - 0x1000, 0x2000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "initrd of 8192 bytes does not fit: 4096 bytes free between the kernel and the end of RAM"
        );
    }

    #[test]
    fn the_command_line_length_is_checked() {
        let mut cmdline = Cmdline::new(usize::MAX).unwrap();
        cmdline.insert_str("console=ttyS0").unwrap();
        assert_eq!(cmdline_bytes(&cmdline).unwrap(), "console=ttyS0");
        let mut long = Cmdline::new(usize::MAX).unwrap();
        long.insert_str("x".repeat(CMDLINE_MAX_SIZE)).unwrap();
        let e = cmdline_bytes(&long).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel command line is 2048 bytes; at most 2047 fit"
        );
    }
}
