//! What the VMM told the guest at entry: the boot protocol, the command line,
//! the RAM size and the ACPI RSDP address, read from PVH `hvm_start_info` or
//! the Linux zero page.
//!
//! Everything is copied out at start, so later checks (the SMP trampoline at
//! 0x8000) may reuse low memory freely.

use crate::entry::{PROTOCOL_LINUX64, PROTOCOL_PVH};
use crate::phys;

/// Longest command line kept, NUL excluded (Linux x86 COMMAND_LINE_SIZE - 1).
const CMDLINE_MAX: usize = 2047;

/// `hvm_start_info.magic`.
const PVH_MAGIC: u32 = 0x336e_c578;
/// `hvm_start_info` field offsets (Xen `arch-x86/hvm/start_info.h`).
const PVH_VERSION: u64 = 0x04;
const PVH_CMDLINE_PADDR: u64 = 0x18;
const PVH_RSDP_PADDR: u64 = 0x20;
const PVH_MEMMAP_PADDR: u64 = 0x28;
const PVH_MEMMAP_ENTRIES: u64 = 0x30;
/// Size of `hvm_memmap_table_entry` {u64 addr, u64 size, u32 type, u32 reserved}.
const PVH_MEMMAP_ENTRY_SIZE: u64 = 24;

/// Linux `boot_params` (zero page) offsets (Documentation/arch/x86/zero-page.rst).
const ZP_ACPI_RSDP_ADDR: u64 = 0x070;
const ZP_EXT_CMD_LINE_PTR: u64 = 0x0c8;
const ZP_E820_ENTRIES: u64 = 0x1e8;
const ZP_CMD_LINE_PTR: u64 = 0x228;
const ZP_E820_TABLE: u64 = 0x2d0;
/// Size of a `boot_e820_entry` {u64 addr, u64 size, u32 type}.
const E820_ENTRY_SIZE: u64 = 20;
/// Capacity of the zero page's e820 table.
const E820_MAX_ENTRIES: u8 = 128;

/// Memory-map type of usable RAM, in both e820 and the PVH memmap.
const MEMORY_TYPE_RAM: u32 = 1;

/// How the VMM entered the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// PVH: 32-bit entry from the ELF note, `hvm_start_info` in EBX.
    Pvh,
    /// Linux 64-bit boot protocol: zero page in RSI.
    Linux64,
}

impl Protocol {
    /// The name printed in `TEST-GUEST START protocol=...`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pvh => "pvh",
            Protocol::Linux64 => "linux64",
        }
    }
}

/// The boot information, copied out of guest memory.
pub struct BootInfo {
    pub protocol: Protocol,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// Sum of the RAM (type 1) regions of the memory map, `None` if the VMM
    /// passed no memory map (or PVH info with a bad magic).
    pub ram_bytes: Option<u64>,
    /// The ACPI RSDP address the boot protocol passed (PVH `rsdp_paddr`,
    /// `boot_params.acpi_rsdp_addr`), `None` if it passed 0.
    pub rsdp: Option<u64>,
}

impl BootInfo {
    /// Reads the boot information for `protocol` from `info_addr`.
    ///
    /// # Safety
    /// `info_addr` must be the zero page (Linux 64-bit) or `hvm_start_info`
    /// (PVH) address the VMM passed, and the structures it points to must be
    /// in identity-mapped memory below 4 GiB, outside this image.
    pub unsafe fn read(protocol: u32, info_addr: u64) -> BootInfo {
        let mut info = BootInfo {
            protocol: Protocol::Linux64,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            ram_bytes: None,
            rsdp: None,
        };
        let cmdline_addr;
        if protocol == PROTOCOL_PVH {
            info.protocol = Protocol::Pvh;
            // SAFETY: the caller guarantees `info_addr` is hvm_start_info.
            let (cmdline, ram, rsdp) = unsafe { read_pvh(info_addr) };
            cmdline_addr = cmdline;
            info.ram_bytes = ram;
            info.rsdp = rsdp;
        } else {
            debug_assert_eq!(protocol, PROTOCOL_LINUX64);
            // SAFETY: the caller guarantees `info_addr` is the zero page.
            let (cmdline, ram, rsdp) = unsafe { read_zero_page(info_addr) };
            cmdline_addr = cmdline;
            info.ram_bytes = ram;
            info.rsdp = rsdp;
        }
        if cmdline_addr != 0 && cmdline_addr < (1 << 32) - CMDLINE_MAX as u64 {
            // SAFETY: a nonzero command-line pointer from the VMM's boot
            // structure, checked to stay below 4 GiB; read byte by byte up
            // to the NUL or our buffer size.
            info.cmdline_len = unsafe { read_c_string(cmdline_addr, &mut info.cmdline) };
        }
        info
    }

    /// The command line, without its NUL terminator.
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }
}

/// Returns (command-line address, RAM bytes, RSDP address) from
/// `hvm_start_info`.
///
/// # Safety
/// `addr` must point to a readable `hvm_start_info` below 4 GiB.
unsafe fn read_pvh(addr: u64) -> (u64, Option<u64>, Option<u64>) {
    // SAFETY: the fields read here and below lie in the 56-byte
    // hvm_start_info at `addr`, readable by the caller's guarantee.
    let magic: u32 = unsafe { phys::read(addr) };
    if magic != PVH_MAGIC {
        return (0, None, None);
    }
    // SAFETY: as above.
    let version: u32 = unsafe { phys::read(addr + PVH_VERSION) };
    // SAFETY: as above.
    let cmdline: u64 = unsafe { phys::read(addr + PVH_CMDLINE_PADDR) };
    // SAFETY: as above (rsdp_paddr is in every version).
    let rsdp: u64 = unsafe { phys::read(addr + PVH_RSDP_PADDR) };
    let rsdp = (rsdp != 0).then_some(rsdp);
    if version < 1 {
        // Version 0 has no memory map.
        return (cmdline, None, rsdp);
    }
    // SAFETY: as above (version >= 1 has the memmap fields).
    let memmap: u64 = unsafe { phys::read(addr + PVH_MEMMAP_PADDR) };
    // SAFETY: as above.
    let entries: u32 = unsafe { phys::read(addr + PVH_MEMMAP_ENTRIES) };
    if memmap == 0 || entries == 0 || memmap >= 1 << 32 {
        return (cmdline, None, rsdp);
    }
    let mut ram = 0u64;
    for i in 0..u64::from(entries.min(1024)) {
        let entry = memmap + i * PVH_MEMMAP_ENTRY_SIZE;
        // SAFETY: entry `i` of the memmap the VMM described, below 4 GiB.
        let (size, kind): (u64, u32) = unsafe { (phys::read(entry + 8), phys::read(entry + 16)) };
        if kind == MEMORY_TYPE_RAM {
            ram = ram.saturating_add(size);
        }
    }
    (cmdline, Some(ram), rsdp)
}

/// Returns (command-line address, RAM bytes, RSDP address) from the Linux
/// zero page.
///
/// # Safety
/// `addr` must point to a readable 4 KiB `boot_params` below 4 GiB.
unsafe fn read_zero_page(addr: u64) -> (u64, Option<u64>, Option<u64>) {
    // SAFETY: fields inside the 4 KiB zero page, guaranteed by the caller.
    let (low, high): (u32, u32) = unsafe {
        (
            phys::read(addr + ZP_CMD_LINE_PTR),
            phys::read(addr + ZP_EXT_CMD_LINE_PTR),
        )
    };
    let cmdline = u64::from(high) << 32 | u64::from(low);
    // SAFETY: as above (acpi_rsdp_addr, boot protocol 2.14+; zero before).
    let rsdp: u64 = unsafe { phys::read(addr + ZP_ACPI_RSDP_ADDR) };
    let rsdp = (rsdp != 0).then_some(rsdp);
    // SAFETY: as above.
    let entries: u8 = unsafe { phys::read(addr + ZP_E820_ENTRIES) };
    if entries == 0 {
        return (cmdline, None, rsdp);
    }
    let mut ram = 0u64;
    for i in 0..u64::from(entries.min(E820_MAX_ENTRIES)) {
        let entry = addr + ZP_E820_TABLE + i * E820_ENTRY_SIZE;
        // SAFETY: entry `i` of the e820 table inside the zero page.
        let (size, kind): (u64, u32) = unsafe { (phys::read(entry + 8), phys::read(entry + 16)) };
        if kind == MEMORY_TYPE_RAM {
            ram = ram.saturating_add(size);
        }
    }
    (cmdline, Some(ram), rsdp)
}

/// Copies the NUL-terminated string at `addr` into `buf` (truncating);
/// returns its length.
///
/// # Safety
/// `addr..addr + buf.len()` must be readable memory below 4 GiB.
unsafe fn read_c_string(addr: u64, buf: &mut [u8]) -> usize {
    for (i, slot) in buf.iter_mut().enumerate() {
        // SAFETY: within the range guaranteed by the caller.
        let byte: u8 = unsafe { phys::read(addr + i as u64) };
        if byte == 0 {
            return i;
        }
        *slot = byte;
    }
    buf.len()
}
