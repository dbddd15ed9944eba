//! Reads the VMM's ACPI tables the way an OS does: find the RSDP, walk the
//! XSDT (or RSDT), verify every checksum, and pick out what the `acpi` and
//! `poweroff` checks need from the FADT, the MADT and the DSDT.
//!
//! ```text
//! RSDP ──▶ XSDT/RSDT ──┬─▶ FACP (FADT) ──▶ DSDT   \_S5_ package: SLP_TYP for S5
//!                      └─▶ APIC (MADT)            local APIC / x2APIC entries
//! ```
//! Only the bytes the checks use are parsed; the DSDT's AML is searched for
//! `_S5_`, not interpreted.

use core::fmt;

use crate::bootinfo::BootInfo;
use crate::phys;
use crate::serial::Bytes;

/// "RSD PTR ", the RSDP signature.
const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// Size of an ACPI 1.0 RSDP (covered by its first checksum).
const RSDP_V1_LEN: u64 = 20;
/// RSDP offsets: revision, RSDT address, length, XSDT address.
const RSDP_REVISION: u64 = 15;
const RSDP_RSDT_ADDR: u64 = 16;
const RSDP_LENGTH: u64 = 20;
const RSDP_XSDT_ADDR: u64 = 24;
/// Smallest ACPI 2.0+ RSDP (its length field covers the extended checksum).
const RSDP_V2_MIN_LEN: u32 = 36;
/// Where a legacy OS scans for the RSDP (16-byte steps): the BIOS area.
const RSDP_SCAN: (u64, u64) = (0xe_0000, 0x10_0000);

/// Every system description table starts with this 36-byte header.
const SDT_HEADER_LEN: u64 = 36;
/// Longest table accepted: bounds the checksum loop (interpreted CPL0 code).
const SDT_MAX_LEN: u32 = 256 << 10;
/// Tables named in the report (further root entries are still checked).
pub const MAX_TABLES: usize = 16;

/// FADT offsets (ACPI 6.5, table 5.9).
const FADT_DSDT: u64 = 40;
const FADT_FLAGS: u64 = 112;
const FADT_RESET_REG: u64 = 116;
const FADT_RESET_VALUE: u64 = 128;
const FADT_X_DSDT: u64 = 140;
const FADT_SLEEP_CONTROL_REG: u64 = 244;
const FADT_SLEEP_STATUS_REG: u64 = 256;
/// FADT flags: RESET_REG_SUP, HW_REDUCED_ACPI.
const FADT_FLAG_RESET_REG_SUP: u32 = 1 << 10;
const FADT_FLAG_HW_REDUCED: u32 = 1 << 20;
/// Size of a Generic Address Structure.
const GAS_LEN: u64 = 12;

/// MADT: interrupt controller structures start after the local APIC
/// address and flags.
const MADT_ENTRIES: u64 = 44;
/// MADT structure types and the flag both processor types share.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_LOCAL_X2APIC: u8 = 9;
const MADT_LAPIC_LEN: u8 = 8;
const MADT_X2APIC_LEN: u8 = 16;
const MADT_CPU_ENABLED: u32 = 1 << 0;
/// Most enabled CPUs whose APIC IDs are kept.
pub const MAX_MADT_CPUS: usize = 256;

/// AML opcodes met on the way to the first `_S5_` package element.
const AML_NAME_OP: u8 = 0x08;
const AML_PACKAGE_OP: u8 = 0x12;
const AML_ZERO_OP: u8 = 0x00;
const AML_ONE_OP: u8 = 0x01;
const AML_BYTE_PREFIX: u8 = 0x0a;
const AML_WORD_PREFIX: u8 = 0x0b;
const AML_DWORD_PREFIX: u8 = 0x0c;
const AML_QWORD_PREFIX: u8 = 0x0e;
const AML_ONES_OP: u8 = 0xff;
/// `SLP_TYP` is a 3-bit field of the sleep control register.
const SLP_TYP_MAX: u64 = 0b111;

/// Everything above 4 GiB is outside this guest's identity map.
const MAPPED_LIMIT: u64 = 1 << 32;

/// How the RSDP was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsdpSource {
    /// The boot protocol's pointer (PVH `rsdp_paddr`, `boot_params.acpi_rsdp_addr`).
    Boot,
    /// The scan of [`RSDP_SCAN`].
    Scan,
}

/// `boot` or `scan`, for reports.
impl fmt::Display for RsdpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RsdpSource::Boot => "boot",
            RsdpSource::Scan => "scan",
        })
    }
}

/// Why the tables could not be read.
#[derive(Clone, Copy, Debug)]
pub enum AcpiError {
    /// The RSDP at this address has a bad signature, checksum or length.
    BadRsdp(u64),
    /// A table's header, length or checksum is wrong.
    BadTable {
        signature: [u8; 4],
        addr: u64,
        why: &'static str,
    },
    /// A MADT structure is shorter than its type needs, or overruns the table.
    BadMadtEntry { offset: u64 },
    /// The FADT is too short for the DSDT pointer.
    FadtTooShort(u32),
    /// The root table lists no FADT.
    NoFadt,
    /// The root table lists no MADT.
    NoMadt,
    /// No RSDP: no boot-protocol pointer (or it was ignored) and none in the scan.
    NoRsdp,
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AcpiError::BadRsdp(addr) => write!(f, "bad-rsdp(addr={addr:#x})"),
            AcpiError::BadTable {
                signature,
                addr,
                why,
            } => write!(f, "bad-table({}@{addr:#x},{why})", Bytes(&signature)),
            AcpiError::BadMadtEntry { offset } => write!(f, "bad-madt-entry(offset={offset})"),
            AcpiError::FadtTooShort(len) => write!(f, "fadt-too-short(length={len})"),
            AcpiError::NoFadt => f.write_str("no-fadt"),
            AcpiError::NoMadt => f.write_str("no-madt"),
            AcpiError::NoRsdp => f.write_str("no-rsdp"),
        }
    }
}

/// A Generic Address Structure: its address space and address.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gas {
    pub space: u8,
    pub address: u64,
}

impl Gas {
    /// Address space: system I/O.
    pub const SYSTEM_IO: u8 = 1;
    /// Address space: system memory.
    pub const SYSTEM_MEMORY: u8 = 0;
}

/// `io:0x3c0`, `mem:0xfed00000`, `space<N>:0x...`, or `none` (address 0).
impl fmt::Display for Gas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.address, self.space) {
            (0, _) => f.write_str("none"),
            (a, Gas::SYSTEM_IO) => write!(f, "io:{a:#x}"),
            (a, Gas::SYSTEM_MEMORY) => write!(f, "mem:{a:#x}"),
            (a, space) => write!(f, "space{space}:{a:#x}"),
        }
    }
}

/// What the guest read from the FADT.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fadt {
    pub flags: u32,
    /// Reset register and value (`None` if the FADT is too short).
    pub reset: Option<(Gas, u8)>,
    /// Sleep control and status registers (FADT revision 5+, `None` if the
    /// FADT is too short for them).
    pub sleep_control: Option<Gas>,
    pub sleep_status: Option<Gas>,
}

impl Fadt {
    pub fn hw_reduced(&self) -> bool {
        self.flags & FADT_FLAG_HW_REDUCED != 0
    }
    pub fn reset_supported(&self) -> bool {
        self.flags & FADT_FLAG_RESET_REG_SUP != 0
    }
}

/// The enabled processors of the MADT.
pub struct MadtCpus {
    apic_ids: [u32; MAX_MADT_CPUS],
    count: usize,
}

impl MadtCpus {
    /// APIC IDs of the enabled local APIC and x2APIC entries, in table order
    /// (at most [`MAX_MADT_CPUS`]).
    pub fn apic_ids(&self) -> &[u32] {
        &self.apic_ids[..self.count]
    }
}

/// The tables as the guest found them.
pub struct Tables {
    pub rsdp: u64,
    pub source: RsdpSource,
    /// "XSDT" or "RSDT".
    pub root: [u8; 4],
    /// Signatures of the root table's entries, then "DSDT".
    names: [[u8; 4]; MAX_TABLES],
    name_count: usize,
    pub fadt: Fadt,
    pub dsdt: u64,
    pub madt: MadtCpus,
}

impl Tables {
    /// The tables reached, in order: root entries, then the DSDT.
    pub fn names(&self) -> &[[u8; 4]] {
        &self.names[..self.name_count]
    }

    fn push_name(&mut self, signature: [u8; 4]) {
        if self.name_count < MAX_TABLES {
            self.names[self.name_count] = signature;
            self.name_count += 1;
        }
    }
}

/// Finds the RSDP (the boot protocol's pointer unless `force_scan`, else
/// the BIOS-area scan) and reads every table from it.
pub fn read_tables(boot: &BootInfo, force_scan: bool) -> Result<Tables, AcpiError> {
    let (rsdp, source) = match boot.rsdp.filter(|_| !force_scan) {
        Some(addr) => (addr, RsdpSource::Boot),
        None => (scan_for_rsdp().ok_or(AcpiError::NoRsdp)?, RsdpSource::Scan),
    };
    let (root_addr, entry_size) = read_rsdp(rsdp)?;
    let root_len = read_table_header(root_addr)?;
    // SAFETY: a table header validated by read_table_header.
    let root: [u8; 4] = unsafe { phys::read(root_addr) };
    let expected_root = if entry_size == 8 { b"XSDT" } else { b"RSDT" };
    if &root != expected_root {
        return Err(AcpiError::BadTable {
            signature: root,
            addr: root_addr,
            why: "signature",
        });
    }
    let mut tables = Tables {
        rsdp,
        source,
        root,
        names: [[0; 4]; MAX_TABLES],
        name_count: 0,
        fadt: Fadt::default(),
        dsdt: 0,
        madt: MadtCpus {
            apic_ids: [0; MAX_MADT_CPUS],
            count: 0,
        },
    };
    let mut fadt = None;
    let mut madt = None;
    let entries = (u64::from(root_len) - SDT_HEADER_LEN) / entry_size;
    for i in 0..entries {
        let at = root_addr + SDT_HEADER_LEN + i * entry_size;
        // SAFETY: entry `i` lies inside the checksummed root table.
        let addr: u64 = unsafe {
            if entry_size == 8 {
                phys::read(at)
            } else {
                u64::from(phys::read::<u32>(at))
            }
        };
        let len = read_table_header(addr)?;
        // SAFETY: a validated table header.
        let signature: [u8; 4] = unsafe { phys::read(addr) };
        tables.push_name(signature);
        match &signature {
            b"FACP" if fadt.is_none() => fadt = Some((addr, len)),
            b"APIC" if madt.is_none() => madt = Some((addr, len)),
            _ => {}
        }
    }
    let (fadt_addr, fadt_len) = fadt.ok_or(AcpiError::NoFadt)?;
    let (madt_addr, madt_len) = madt.ok_or(AcpiError::NoMadt)?;
    let (fadt, dsdt) = read_fadt(fadt_addr, fadt_len)?;
    read_table_header(dsdt)?;
    tables.push_name(*b"DSDT");
    tables.fadt = fadt;
    tables.dsdt = dsdt;
    read_madt(madt_addr, madt_len, &mut tables.madt)?;
    Ok(tables)
}

/// Whether `addr..addr + len` is a nonzero range inside the identity map.
fn mapped(addr: u64, len: u64) -> bool {
    addr != 0 && addr < MAPPED_LIMIT && len <= MAPPED_LIMIT - addr
}

/// Byte sum of `len` bytes at `addr` (0 for a valid ACPI structure).
///
/// # Safety
/// `addr..addr + len` must be [`mapped`].
unsafe fn checksum(addr: u64, len: u64) -> u8 {
    (addr..addr + len).fold(0u8, |sum, a| {
        // SAFETY: within the range guaranteed by the caller.
        sum.wrapping_add(unsafe { phys::read::<u8>(a) })
    })
}

/// Scans the BIOS area on 16-byte boundaries for an RSDP with a valid
/// ACPI 1.0 checksum, as Linux's `acpi_find_root_pointer`.
fn scan_for_rsdp() -> Option<u64> {
    (RSDP_SCAN.0..RSDP_SCAN.1 - RSDP_V1_LEN)
        .step_by(16)
        .find(|&addr| {
            // SAFETY: 20 bytes inside the BIOS area (below 1 MiB,
            // identity-mapped), nonzero.
            let (signature, sum): ([u8; 8], u8) =
                unsafe { (phys::read(addr), checksum(addr, RSDP_V1_LEN)) };
            &signature == RSDP_SIGNATURE && sum == 0
        })
}

/// Validates the RSDP at `addr`; returns the root table's address and its
/// entry size (XSDT: 8, RSDT: 4).
fn read_rsdp(addr: u64) -> Result<(u64, u64), AcpiError> {
    let bad = AcpiError::BadRsdp(addr);
    if !mapped(addr, RSDP_V1_LEN) {
        return Err(bad);
    }
    // SAFETY: the 20-byte ACPI 1.0 part, checked to be mapped.
    let (signature, revision, rsdt): ([u8; 8], u8, u32) = unsafe {
        (
            phys::read(addr),
            phys::read(addr + RSDP_REVISION),
            phys::read(addr + RSDP_RSDT_ADDR),
        )
    };
    // SAFETY: as above.
    if &signature != RSDP_SIGNATURE || unsafe { checksum(addr, RSDP_V1_LEN) } != 0 {
        return Err(bad);
    }
    if revision >= 2 {
        // SAFETY: the length field is inside the first 24 bytes of a v2
        // RSDP; the range is checked before the rest is read.
        let length: u32 = unsafe { phys::read(addr + RSDP_LENGTH) };
        if !(RSDP_V2_MIN_LEN..=1024).contains(&length) || !mapped(addr, u64::from(length)) {
            return Err(bad);
        }
        // SAFETY: `length` bytes at `addr`, checked to be mapped.
        if unsafe { checksum(addr, u64::from(length)) } != 0 {
            return Err(bad);
        }
        // SAFETY: inside the checked RSDP.
        let xsdt: u64 = unsafe { phys::read(addr + RSDP_XSDT_ADDR) };
        if xsdt != 0 {
            return Ok((xsdt, 8));
        }
    }
    Ok((u64::from(rsdt), 4))
}

/// Validates the table header and checksum at `addr`; returns its length.
fn read_table_header(addr: u64) -> Result<u32, AcpiError> {
    let bad = |signature, why| AcpiError::BadTable {
        signature,
        addr,
        why,
    };
    if !mapped(addr, SDT_HEADER_LEN) {
        return Err(bad(*b"????", "unmapped"));
    }
    // SAFETY: the 36-byte header, checked to be mapped.
    let (signature, length): ([u8; 4], u32) = unsafe { (phys::read(addr), phys::read(addr + 4)) };
    if u64::from(length) < SDT_HEADER_LEN || length > SDT_MAX_LEN {
        return Err(bad(signature, "length"));
    }
    if !mapped(addr, u64::from(length)) {
        return Err(bad(signature, "unmapped"));
    }
    // SAFETY: `length` bytes at `addr`, checked to be mapped.
    if unsafe { checksum(addr, u64::from(length)) } != 0 {
        return Err(bad(signature, "checksum"));
    }
    Ok(length)
}

/// Reads a Generic Address Structure at `addr`.
///
/// # Safety
/// `addr..addr + 12` must be [`mapped`].
unsafe fn read_gas(addr: u64) -> Gas {
    // SAFETY: guaranteed by the caller.
    unsafe {
        Gas {
            space: phys::read(addr),
            address: phys::read(addr + 4),
        }
    }
}

/// Reads the FADT fields used here; returns them and the DSDT's address
/// (X_DSDT if present and nonzero, else DSDT).
fn read_fadt(addr: u64, len: u32) -> Result<(Fadt, u64), AcpiError> {
    let len = u64::from(len);
    if len < FADT_DSDT + 4 {
        return Err(AcpiError::FadtTooShort(len as u32));
    }
    // Every field is read only if the (checksummed, mapped) table covers it.
    let covers = |offset: u64, size: u64| offset + size <= len;
    // SAFETY: covered by the table's length.
    let mut dsdt = u64::from(unsafe { phys::read::<u32>(addr + FADT_DSDT) });
    let mut fadt = Fadt::default();
    if covers(FADT_FLAGS, 4) {
        // SAFETY: covered by the table's length.
        fadt.flags = unsafe { phys::read(addr + FADT_FLAGS) };
    }
    if covers(FADT_RESET_VALUE, 1) {
        // SAFETY: covered by the table's length.
        fadt.reset = Some(unsafe {
            (
                read_gas(addr + FADT_RESET_REG),
                phys::read(addr + FADT_RESET_VALUE),
            )
        });
    }
    if covers(FADT_X_DSDT, 8) {
        // SAFETY: covered by the table's length.
        let x_dsdt: u64 = unsafe { phys::read(addr + FADT_X_DSDT) };
        if x_dsdt != 0 {
            dsdt = x_dsdt;
        }
    }
    if covers(FADT_SLEEP_STATUS_REG, GAS_LEN) {
        // SAFETY: covered by the table's length.
        unsafe {
            fadt.sleep_control = Some(read_gas(addr + FADT_SLEEP_CONTROL_REG));
            fadt.sleep_status = Some(read_gas(addr + FADT_SLEEP_STATUS_REG));
        }
    }
    Ok((fadt, dsdt))
}

/// Collects the enabled local APIC (type 0) and x2APIC (type 9) entries.
fn read_madt(addr: u64, len: u32, cpus: &mut MadtCpus) -> Result<(), AcpiError> {
    let end = u64::from(len);
    let mut offset = MADT_ENTRIES;
    while offset + 2 <= end {
        // SAFETY: the two-byte structure header, inside the table.
        let (kind, entry_len): (u8, u8) =
            unsafe { (phys::read(addr + offset), phys::read(addr + offset + 1)) };
        let min_len = match kind {
            MADT_LOCAL_APIC => MADT_LAPIC_LEN,
            MADT_LOCAL_X2APIC => MADT_X2APIC_LEN,
            _ => 2,
        };
        if entry_len < min_len || offset + u64::from(entry_len) > end {
            return Err(AcpiError::BadMadtEntry { offset });
        }
        let at = addr + offset;
        // SAFETY: the structure's fields, inside the table (length checked).
        let cpu: Option<(u32, u32)> = unsafe {
            match kind {
                MADT_LOCAL_APIC => Some((phys::read::<u8>(at + 3).into(), phys::read(at + 4))),
                MADT_LOCAL_X2APIC => Some((phys::read(at + 4), phys::read(at + 8))),
                _ => None,
            }
        };
        if let Some((apic_id, flags)) = cpu {
            if flags & MADT_CPU_ENABLED != 0 && cpus.count < MAX_MADT_CPUS {
                cpus.apic_ids[cpus.count] = apic_id;
                cpus.count += 1;
            }
        }
        offset += u64::from(entry_len);
    }
    if offset != end {
        return Err(AcpiError::BadMadtEntry { offset });
    }
    Ok(())
}

/// Why `\_S5_` gave no sleep type.
#[derive(Clone, Copy, Debug)]
pub enum S5Error {
    /// No `Name(_S5_, Package(){...})` in the DSDT.
    NoPackage,
    /// The package's first element is not an integer constant.
    NotAnInteger(u8),
    /// The value does not fit the 3-bit `SLP_TYP` field.
    OutOfRange(u64),
}

impl fmt::Display for S5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            S5Error::NoPackage => f.write_str("no-s5-package"),
            S5Error::NotAnInteger(op) => write!(f, "s5-not-an-integer(op={op:#04x})"),
            S5Error::OutOfRange(v) => write!(f, "s5-slp-typ-out-of-range({v})"),
        }
    }
}

/// `SLP_TYP` for S5: the first element of the DSDT's `\_S5_` package.
pub fn s5_sleep_type(dsdt: u64) -> Result<u8, S5Error> {
    // SAFETY: the caller passes the DSDT `read_tables` validated: mapped,
    // and its length field is its size.
    let len: u32 = unsafe { phys::read(dsdt + 4) };
    // SAFETY: the checksummed, mapped table; nothing in this image aliases it.
    let aml = unsafe {
        core::slice::from_raw_parts(
            (dsdt + SDT_HEADER_LEN) as *const u8,
            (u64::from(len) - SDT_HEADER_LEN) as usize,
        )
    };
    // Every `_S5_` that is named by NameOp and holds a Package: the first
    // one whose first element is an integer wins.
    let mut error = S5Error::NoPackage;
    for at in 1..aml.len().saturating_sub(4) {
        if &aml[at..at + 4] != b"_S5_" || !matches!(aml[at - 1], AML_NAME_OP | b'\\') {
            continue;
        }
        match s5_package_first_integer(&aml[at + 4..]) {
            Some(Ok(value)) if value <= SLP_TYP_MAX => return Ok(value as u8),
            Some(Ok(value)) => error = S5Error::OutOfRange(value),
            Some(Err(op)) => error = S5Error::NotAnInteger(op),
            None => {}
        }
    }
    Err(error)
}

/// Given the bytes after a `_S5_` name: `None` if no package follows,
/// else the first element's value or, if it is not an integer constant,
/// its opcode.
fn s5_package_first_integer(aml: &[u8]) -> Option<Result<u64, u8>> {
    let (&op, rest) = aml.split_first()?;
    if op != AML_PACKAGE_OP {
        return None;
    }
    // PkgLength: bits 7:6 of the lead byte count the bytes that follow it.
    let (&lead, _) = rest.split_first()?;
    let rest = rest.get(1 + usize::from(lead >> 6)..)?;
    let (&num_elements, rest) = rest.split_first()?;
    if num_elements == 0 {
        return None;
    }
    let (&op, data) = rest.split_first()?;
    let le = |n: usize| -> Option<u64> {
        let bytes = data.get(..n)?;
        Some(bytes.iter().rev().fold(0, |v, &b| v << 8 | u64::from(b)))
    };
    let value = match op {
        AML_ZERO_OP => Some(0),
        AML_ONE_OP => Some(1),
        AML_ONES_OP => Some(u64::MAX),
        AML_BYTE_PREFIX => le(1),
        AML_WORD_PREFIX => le(2),
        AML_DWORD_PREFIX => le(4),
        AML_QWORD_PREFIX => le(8),
        _ => return Some(Err(op)),
    };
    Some(value.ok_or(op))
}

/// Displays a list of table signatures as `FACP,APIC,DSDT`.
pub struct Signatures<'a>(pub &'a [[u8; 4]]);

impl fmt::Display for Signatures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, signature) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", Bytes(signature))?;
        }
        Ok(())
    }
}
