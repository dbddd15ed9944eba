//! The Intel MultiProcessor Specification 1.4 table, which tells the guest
//! about its CPUs, the IOAPIC and how ISA IRQs are wired (until ACPI does).
//!
//! At [`MPTABLE_START`] (the first KiB of the EBDA, where Linux looks): the
//! 16-byte floating pointer, then the configuration table: header, one
//! processor entry per vCPU, the ISA bus, the IOAPIC, one I/O interrupt entry
//! per IOAPIC pin (ISA IRQ n → pin n) and the two local interrupt entries
//! (ExtINT on LINT0, NMI on LINT1).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{APIC_ADDR, IOAPIC_ADDR, IOAPIC_PINS, MPTABLE_START};
use super::ArchError;

/// The MP table must end below the legacy VGA hole.
const MPTABLE_LIMIT: u64 = 0xa0000;
/// Floating pointer signature.
const MPF_SIGNATURE: &[u8; 4] = b"_MP_";
/// Configuration table signature.
const MPC_SIGNATURE: &[u8; 4] = b"PCMP";
/// MP specification revision 1.4.
const MP_SPEC_REV: u8 = 4;
/// OEM id in the configuration table header (8 bytes, space padded).
const MPC_OEM: &[u8; 8] = b"MERCURY ";
/// Product id in the configuration table header (12 bytes, space padded).
const MPC_PRODUCT_ID: &[u8; 12] = b"VMM         ";

/// Size of the floating pointer structure.
const MPF_SIZE: usize = 16;
/// Size of the configuration table header.
const MPC_HEADER_SIZE: usize = 44;
/// Size of a processor entry.
const MPC_CPU_SIZE: usize = 20;
/// Size of every other entry type.
const MPC_SMALL_ENTRY_SIZE: usize = 8;

/// Entry types.
const MP_PROCESSOR: u8 = 0;
/// See [`MP_PROCESSOR`].
const MP_BUS: u8 = 1;
/// See [`MP_PROCESSOR`].
const MP_IOAPIC: u8 = 2;
/// See [`MP_PROCESSOR`].
const MP_INTSRC: u8 = 3;
/// See [`MP_PROCESSOR`].
const MP_LINTSRC: u8 = 4;

/// Local APIC version reported for every processor (integrated APIC).
const APIC_VERSION: u8 = 0x14;
/// IOAPIC version (82093AA-compatible).
const IOAPIC_VERSION: u8 = 0x11;
/// Processor flag: enabled.
const CPU_ENABLED: u8 = 1 << 0;
/// Processor flag: bootstrap processor.
const CPU_BOOTPROCESSOR: u8 = 1 << 1;
/// CPU signature for processor entries: family 6 (the value only matters to
/// ancient kernels; the real one is in CPUID).
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags for processor entries: FPU and on-chip APIC.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
/// IOAPIC flag: usable.
const IOAPIC_ENABLED: u8 = 1;
/// Bus id of the one ISA bus.
const ISA_BUS_ID: u8 = 0;
/// Bus type string of the ISA bus (6 bytes, space padded).
const ISA_BUS_TYPE: &[u8; 6] = b"ISA   ";
/// Interrupt type: vectored interrupt from the IOAPIC.
const MP_INT: u8 = 0;
/// Interrupt type: NMI.
const MP_NMI: u8 = 1;
/// Interrupt type: external (8259) interrupt.
const MP_EXTINT: u8 = 3;
/// Polarity and trigger mode conform to the bus (ISA: active high, edge).
const MP_IRQ_DEFAULT: u16 = 0;
/// Local interrupt destination: every local APIC.
const ALL_LAPICS: u8 = 0xff;
/// LAPIC LINT pins.
const LINT0: u8 = 0;
/// See [`LINT0`].
const LINT1: u8 = 1;

/// Bytes of the whole MP table for `num_cpus` vCPUs.
fn mptable_size(num_cpus: u8) -> usize {
    MPF_SIZE
        + MPC_HEADER_SIZE
        + usize::from(num_cpus) * MPC_CPU_SIZE
        + MPC_SMALL_ENTRY_SIZE * (2 + usize::from(IOAPIC_PINS) + 2)
}

/// Two's-complement checksum: the bytes plus it sum to 0 (mod 256).
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the table as it goes at [`MPTABLE_START`].
pub(super) fn build_mptable(num_cpus: u8) -> Result<Vec<u8>, ArchError> {
    if num_cpus == 0 {
        return Err(ArchError::NoVcpus);
    }
    let size = mptable_size(num_cpus);
    let available = (MPTABLE_LIMIT - MPTABLE_START) as usize;
    if size > available {
        return Err(ArchError::MpTableDoesNotFit {
            num_cpus,
            size,
            available,
        });
    }
    let config_addr = MPTABLE_START + MPF_SIZE as u64;
    let ioapic_id = num_cpus;

    // Entries after the header.
    let mut entries = Vec::with_capacity(size);
    for apic_id in 0..num_cpus {
        let boot = if apic_id == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.extend_from_slice(&[MP_PROCESSOR, apic_id, APIC_VERSION, CPU_ENABLED | boot]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]); // reserved
    }
    entries.extend_from_slice(&[MP_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(ISA_BUS_TYPE);
    entries.extend_from_slice(&[MP_IOAPIC, ioapic_id, IOAPIC_VERSION, IOAPIC_ENABLED]);
    entries.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[MP_INTSRC, MP_INT]);
        entries.extend_from_slice(&MP_IRQ_DEFAULT.to_le_bytes());
        entries.extend_from_slice(&[ISA_BUS_ID, irq, ioapic_id, irq]);
    }
    for (kind, dest, pin) in [(MP_EXTINT, 0, LINT0), (MP_NMI, ALL_LAPICS, LINT1)] {
        entries.extend_from_slice(&[MP_LINTSRC, kind]);
        entries.extend_from_slice(&MP_IRQ_DEFAULT.to_le_bytes());
        entries.extend_from_slice(&[ISA_BUS_ID, 0, dest, pin]);
    }
    let entry_count = u16::from(num_cpus) + 2 + u16::from(IOAPIC_PINS) + 2;

    // Configuration table header, checksummed over header and entries.
    let mut config = Vec::with_capacity(MPC_HEADER_SIZE + entries.len());
    config.extend_from_slice(MPC_SIGNATURE);
    config.extend_from_slice(&((MPC_HEADER_SIZE + entries.len()) as u16).to_le_bytes());
    config.extend_from_slice(&[MP_SPEC_REV, 0]); // checksum filled below
    config.extend_from_slice(MPC_OEM);
    config.extend_from_slice(MPC_PRODUCT_ID);
    config.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    config.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    config.extend_from_slice(&entry_count.to_le_bytes());
    config.extend_from_slice(&(APIC_ADDR as u32).to_le_bytes());
    config.extend_from_slice(&[0, 0, 0, 0]); // no extended table; reserved
    debug_assert_eq!(config.len(), MPC_HEADER_SIZE);
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    // Floating pointer: where the configuration table is.
    let mut table = Vec::with_capacity(size);
    table.extend_from_slice(MPF_SIGNATURE);
    table.extend_from_slice(&(config_addr as u32).to_le_bytes());
    // Length in 16-byte units, revision, checksum (below), then feature
    // bytes 1..5 all 0: a configuration table is present, no IMCR.
    table.extend_from_slice(&[1, MP_SPEC_REV, 0, 0, 0, 0, 0, 0]);
    table[10] = checksum(&table);
    debug_assert_eq!(table.len(), MPF_SIZE);
    table.extend_from_slice(&config);
    debug_assert_eq!(table.len(), size);
    Ok(table)
}

/// Writes the MP table for `num_cpus` vCPUs at [`MPTABLE_START`].
pub(super) fn setup_mptable(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), ArchError> {
    let table = build_mptable(num_cpus)?;
    mem.write_slice(&table, GuestAddress(MPTABLE_START))
        .map_err(|source| ArchError::GuestMemory {
            what: "MP table",
            addr: MPTABLE_START,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    /// Walks the entries of a table: (type, bytes) in order.
    fn entries(table: &[u8]) -> Vec<(u8, &[u8])> {
        let config = &table[MPF_SIZE..];
        let count = u16_at(config, 34);
        let mut at = MPC_HEADER_SIZE;
        let mut out = Vec::new();
        for _ in 0..count {
            let len = if config[at] == MP_PROCESSOR {
                MPC_CPU_SIZE
            } else {
                MPC_SMALL_ENTRY_SIZE
            };
            out.push((config[at], &config[at..at + len]));
            at += len;
        }
        assert_eq!(at, usize::from(u16_at(config, 4)), "base table length");
        out
    }

    fn check(num_cpus: u8) {
        let table = build_mptable(num_cpus).unwrap();
        assert!(MPTABLE_START + table.len() as u64 <= MPTABLE_LIMIT);

        // Floating pointer.
        assert_eq!(&table[..4], b"_MP_");
        assert_eq!(u64::from(u32_at(&table, 4)), MPTABLE_START + 16);
        assert_eq!((table[8], table[9]), (1, 4));
        assert_eq!(sum(&table[..MPF_SIZE]), 0);

        // Configuration table.
        let config = &table[MPF_SIZE..];
        assert_eq!(&config[..4], b"PCMP");
        assert_eq!(config[6], 4);
        assert_eq!(sum(config), 0);
        assert_eq!(u64::from(u32_at(config, 36)), APIC_ADDR);

        let entries = entries(&table);
        let of = |kind| entries.iter().filter(move |(t, _)| *t == kind);
        let cpus: Vec<_> = of(MP_PROCESSOR).collect();
        assert_eq!(cpus.len(), usize::from(num_cpus));
        for (id, (_, cpu)) in cpus.iter().enumerate() {
            assert_eq!(usize::from(cpu[1]), id, "APIC id");
            let flags = if id == 0 { 3 } else { 1 };
            assert_eq!(cpu[3], flags, "enabled, BSP on 0");
        }
        let buses: Vec<_> = of(MP_BUS).collect();
        assert_eq!(buses.len(), 1);
        assert_eq!(&buses[0].1[2..8], b"ISA   ");
        let ioapics: Vec<_> = of(MP_IOAPIC).collect();
        assert_eq!(ioapics.len(), 1);
        assert_eq!(ioapics[0].1[1], num_cpus, "IOAPIC id follows the CPUs");
        assert_eq!(u64::from(u32_at(ioapics[0].1, 4)), IOAPIC_ADDR);
        let irqs: Vec<_> = of(MP_INTSRC).collect();
        assert_eq!(irqs.len(), usize::from(IOAPIC_PINS));
        for (pin, (_, irq)) in irqs.iter().enumerate() {
            assert_eq!(
                (usize::from(irq[5]), irq[6], usize::from(irq[7])),
                (pin, num_cpus, pin)
            );
        }
        let lints: Vec<_> = of(MP_LINTSRC).collect();
        assert_eq!(lints.len(), 2);
        assert_eq!((lints[0].1[1], lints[0].1[7]), (MP_EXTINT, LINT0));
        assert_eq!((lints[1].1[1], lints[1].1[7]), (MP_NMI, LINT1));
    }

    #[test]
    fn tables_for_1_4_and_32_cpus() {
        for num_cpus in [1, 4, 32] {
            check(num_cpus);
        }
    }

    #[test]
    fn too_many_cpus_do_not_fit() {
        assert!(matches!(
            build_mptable(64),
            Err(ArchError::MpTableDoesNotFit { num_cpus: 64, .. })
        ));
        assert!(matches!(build_mptable(0), Err(ArchError::NoVcpus)));
    }

    #[test]
    fn table_is_written_at_mptable_start() {
        let mem = super::super::memory::tests::guest_memory(1 << 20);
        setup_mptable(&mem, 2).unwrap();
        let mut signature = [0u8; 4];
        mem.read_slice(&mut signature, GuestAddress(MPTABLE_START))
            .unwrap();
        assert_eq!(&signature, b"_MP_");
    }
}
