//! Finds and parses the Intel MultiProcessor table (MP spec 1.4): which CPUs
//! the VMM says exist, by local APIC ID.
//!
//! Search order from the spec: first KiB of the EBDA (segment in the BDA at
//! 0x40e), last KiB of base memory, then the BIOS ROM 0xf0000..0x100000.
//! mercury puts the table at 0x9fc00; QEMU's SeaBIOS in the ROM area.

use crate::phys;

/// "_MP_", the floating pointer signature.
const MPF_SIGNATURE: u32 = u32::from_le_bytes(*b"_MP_");
/// "PCMP", the configuration table signature.
const MPC_SIGNATURE: u32 = u32::from_le_bytes(*b"PCMP");
/// BDA word holding the EBDA segment.
const BDA_EBDA_SEGMENT: u64 = 0x40e;
/// BDA word holding the base memory size in KiB.
const BDA_BASE_MEM_KIB: u64 = 0x413;
/// The 640 KiB default for the last KiB of base memory.
const DEFAULT_BASE_MEM_END: u64 = 0xa_0000;
/// BIOS ROM area searched last.
const BIOS_ROM: (u64, u64) = (0xf_0000, 0x10_0000);
/// Size of the configuration table header; entries follow it.
const MPC_HEADER_SIZE: u64 = 44;
/// Processor entry type and size; every other entry type is 8 bytes.
const MP_ENTRY_PROCESSOR: u8 = 0;
const MP_PROCESSOR_ENTRY_SIZE: u64 = 20;
const MP_OTHER_ENTRY_SIZE: u64 = 8;
/// Processor entry flags: enabled, bootstrap processor.
const CPU_ENABLED: u8 = 1 << 0;
const CPU_BOOTSTRAP: u8 = 1 << 1;

/// Most CPUs this guest tracks (xAPIC IDs are 8 bits).
pub const MAX_CPUS: usize = 256;

/// Why no CPU list could be read.
#[derive(Clone, Copy, Debug)]
pub enum MpError {
    /// No "_MP_" floating pointer with a valid checksum.
    NoFloatingPointer,
    /// The floating pointer has no configuration table (default config).
    NoConfigTable,
    /// The configuration table's signature or checksum is wrong.
    BadConfigTable,
}

impl MpError {
    /// Short reason printed in the check result.
    pub fn reason(self) -> &'static str {
        match self {
            MpError::NoFloatingPointer => "no-mp-floating-pointer",
            MpError::NoConfigTable => "no-mp-config-table",
            MpError::BadConfigTable => "bad-mp-config-table",
        }
    }
}

/// The enabled processors of the MP table.
pub struct MpCpus {
    apic_ids: [u8; MAX_CPUS],
    count: usize,
    /// APIC ID of the entry flagged as bootstrap processor, if any.
    pub bsp_apic_id: Option<u8>,
}

impl MpCpus {
    /// APIC IDs of the enabled processors, in table order.
    pub fn apic_ids(&self) -> &[u8] {
        &self.apic_ids[..self.count]
    }
}

/// Finds the MP table and lists its enabled processors.
pub fn read_cpus() -> Result<MpCpus, MpError> {
    let mpf = find_floating_pointer().ok_or(MpError::NoFloatingPointer)?;
    // SAFETY: a 16-byte floating pointer found (and checksummed) in low memory.
    let (table, feature1): (u32, u8) = unsafe { (phys::read(mpf + 4), phys::read(mpf + 11)) };
    if table == 0 || feature1 != 0 {
        return Err(MpError::NoConfigTable);
    }
    let table = u64::from(table);
    // SAFETY: the configuration table header the floating pointer points to
    // (a 32-bit physical address, identity-mapped).
    let (signature, length, entry_count): (u32, u16, u16) = unsafe {
        (
            phys::read(table),
            phys::read(table + 4),
            phys::read(table + 34),
        )
    };
    if signature != MPC_SIGNATURE || u64::from(length) < MPC_HEADER_SIZE {
        return Err(MpError::BadConfigTable);
    }
    // SAFETY: the table spans `length` bytes by its own header.
    if unsafe { checksum(table, u64::from(length)) } != 0 {
        return Err(MpError::BadConfigTable);
    }

    let mut cpus = MpCpus {
        apic_ids: [0; MAX_CPUS],
        count: 0,
        bsp_apic_id: None,
    };
    let end = table + u64::from(length);
    let mut entry = table + MPC_HEADER_SIZE;
    for _ in 0..entry_count {
        if entry >= end {
            break;
        }
        // SAFETY: inside the checksummed table.
        let kind: u8 = unsafe { phys::read(entry) };
        if kind != MP_ENTRY_PROCESSOR {
            entry += MP_OTHER_ENTRY_SIZE;
            continue;
        }
        if entry + MP_PROCESSOR_ENTRY_SIZE > end {
            return Err(MpError::BadConfigTable);
        }
        // SAFETY: a processor entry inside the table.
        let (apic_id, flags): (u8, u8) = unsafe { (phys::read(entry + 1), phys::read(entry + 3)) };
        if flags & CPU_ENABLED != 0 && cpus.count < MAX_CPUS {
            cpus.apic_ids[cpus.count] = apic_id;
            cpus.count += 1;
            if flags & CPU_BOOTSTRAP != 0 {
                cpus.bsp_apic_id = Some(apic_id);
            }
        }
        entry += MP_PROCESSOR_ENTRY_SIZE;
    }
    Ok(cpus)
}

/// Returns the address of a valid "_MP_" floating pointer.
fn find_floating_pointer() -> Option<u64> {
    // SAFETY: BDA words in the first page of RAM.
    let (ebda_segment, base_kib): (u16, u16) =
        unsafe { (phys::read(BDA_EBDA_SEGMENT), phys::read(BDA_BASE_MEM_KIB)) };
    let ebda = u64::from(ebda_segment) << 4;
    let base_end = match u64::from(base_kib) * 1024 {
        end @ 0x8_0000..=DEFAULT_BASE_MEM_END => end,
        _ => DEFAULT_BASE_MEM_END,
    };
    let mut regions = [(0, 0), (base_end - 1024, base_end), BIOS_ROM];
    if (0x8_0000..DEFAULT_BASE_MEM_END).contains(&ebda) {
        regions[0] = (ebda, ebda + 1024);
    }
    regions.iter().find_map(|&(start, end)| scan(start, end))
}

/// Scans `start..end` on 16-byte boundaries for the floating pointer.
fn scan(start: u64, end: u64) -> Option<u64> {
    (start..end)
        .step_by(16)
        .filter(|&addr| addr != 0)
        .find(|&addr| {
            // SAFETY: `addr` is in low memory (below 1 MiB), identity-mapped.
            let (signature, length): (u32, u8) =
                unsafe { (phys::read(addr), phys::read(addr + 8)) };
            // SAFETY: the floating pointer spans `length` paragraphs; checked
            // to stay inside the region.
            signature == MPF_SIGNATURE
                && length != 0
                && addr + u64::from(length) * 16 <= end
                && unsafe { checksum(addr, u64::from(length) * 16) } == 0
        })
}

/// Byte sum of `len` bytes at `addr` (0 for a valid MP structure).
///
/// # Safety
/// `addr..addr + len` must be readable memory below 4 GiB.
unsafe fn checksum(addr: u64, len: u64) -> u8 {
    (addr..addr + len).fold(0u8, |sum, a| {
        // SAFETY: within the range guaranteed by the caller.
        sum.wrapping_add(unsafe { phys::read::<u8>(a) })
    })
}
