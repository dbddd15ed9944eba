//! The boot GDT and IDT, and the KVM segments the GDT entries describe.
//!
//! Both protocols use the same four slots at [`GDT_ADDR`]: null, code, data,
//! TSS; so the selectors are the same (0x08, 0x10, 0x18). Linux64 gets
//! 64-bit code; PVH gets flat 32-bit code, as the PVH ABI requires.

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{GDT_ADDR, IDT_ADDR};
use super::{ArchError, BootProtocol};

// A descriptor's attributes as one `u16`: bits 15:12 are the flags nibble
// (G granularity, D/B default size, L long mode, AVL) and bits 7:0 the access
// byte (P present, DPL, S code/data, 4-bit type).

/// 64-bit code: G, L; present, DPL 0, execute/read, accessed.
const CODE_64: u16 = 0xa09b;
/// 32-bit code: G, D; present, DPL 0, execute/read, accessed.
const CODE_32: u16 = 0xc09b;
/// Data: G, B; present, DPL 0, read/write, accessed.
const DATA: u16 = 0xc093;
/// 64-bit busy TSS, page granular (the Linux64 boot TSS, as Firecracker).
const TSS_64_BUSY: u16 = 0x808b;
/// 32-bit busy TSS, byte granular (what the PVH ABI asks for).
const TSS_32_BUSY: u16 = 0x008b;
/// Largest 20-bit descriptor limit: with G set, the whole 4 GiB.
const FLAT_LIMIT: u32 = 0xf_ffff;
/// Limit of a 104-byte 32-bit TSS, as PVH asks for.
const TSS_32_LIMIT: u32 = 0x67;

/// GDT slot of the code segment.
pub(super) const CODE_INDEX: usize = 1;
/// GDT slot of the data segment.
pub(super) const DATA_INDEX: usize = 2;
/// GDT slot of the TSS.
pub(super) const TSS_INDEX: usize = 3;
/// Entries in the boot GDT.
const GDT_ENTRIES: usize = 4;
/// Bytes per GDT entry (and of the one empty IDT entry we write).
const ENTRY_SIZE: u64 = 8;

/// Encodes a segment descriptor from its attributes, base and 20-bit limit.
pub(super) fn gdt_entry(attributes: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let access = u64::from(attributes & 0x00ff);
    let flags = u64::from(attributes >> 12);
    (limit & 0xffff)
        | ((base & 0x00ff_ffff) << 16)
        | (access << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (flags << 52)
        | (((base >> 24) & 0xff) << 56)
}

/// The KVM segment a descriptor in GDT slot `index` describes.
pub(super) fn segment_from_gdt(entry: u64, index: usize) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | (((entry >> 56) & 0xff) << 24);
    let raw_limit = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
    let granular = bit(55);
    // KVM takes the limit in bytes: page-granular limits cover whole pages.
    let limit = if granular == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = bit(47);
    kvm_segment {
        base,
        limit,
        selector: (index as u64 * ENTRY_SIZE) as u16,
        type_: ((entry >> 40) & 0xf) as u8,
        s: bit(44),
        dpl: ((entry >> 45) & 0x3) as u8,
        present,
        avl: bit(52),
        l: bit(53),
        db: bit(54),
        g: granular,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The boot GDT for `protocol`.
pub(super) fn boot_gdt(protocol: BootProtocol) -> [u64; GDT_ENTRIES] {
    match protocol {
        BootProtocol::Linux64 => [
            0,
            gdt_entry(CODE_64, 0, FLAT_LIMIT),
            gdt_entry(DATA, 0, FLAT_LIMIT),
            gdt_entry(TSS_64_BUSY, 0, FLAT_LIMIT),
        ],
        BootProtocol::Pvh => [
            0,
            gdt_entry(CODE_32, 0, FLAT_LIMIT),
            gdt_entry(DATA, 0, FLAT_LIMIT),
            gdt_entry(TSS_32_BUSY, 0, TSS_32_LIMIT),
        ],
    }
}

/// Where the tables went, for `sregs.gdt` / `sregs.idt`: (base, limit).
pub(super) struct DescriptorTables {
    /// GDT base and limit.
    pub gdt: (u64, u16),
    /// IDT base and limit.
    pub idt: (u64, u16),
}

/// Writes `gdt` at [`GDT_ADDR`] and one empty IDT entry at [`IDT_ADDR`]: the
/// kernel installs its own IDT before it enables interrupts.
pub(super) fn write_tables(
    mem: &GuestMemoryMmap,
    gdt: &[u64],
) -> Result<DescriptorTables, ArchError> {
    for (i, entry) in gdt.iter().enumerate() {
        let addr = GDT_ADDR + i as u64 * ENTRY_SIZE;
        mem.write_obj(*entry, GuestAddress(addr))
            .map_err(|source| ArchError::GuestMemory {
                what: "GDT",
                addr,
                source,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|source| ArchError::GuestMemory {
            what: "IDT",
            addr: IDT_ADDR,
            source,
        })?;
    Ok(DescriptorTables {
        gdt: (GDT_ADDR, (gdt.len() as u64 * ENTRY_SIZE - 1) as u16),
        idt: (IDT_ADDR, (ENTRY_SIZE - 1) as u16),
    })
}

// The GDT must not run into the IDT.
const _: () = assert!(GDT_ADDR + GDT_ENTRIES as u64 * ENTRY_SIZE <= IDT_ADDR);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_encode_as_the_canonical_descriptors() {
        // The flat descriptors every x86 boot loader uses.
        assert_eq!(gdt_entry(CODE_64, 0, FLAT_LIMIT), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA, 0, FLAT_LIMIT), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(CODE_32, 0, FLAT_LIMIT), 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt_entry(TSS_64_BUSY, 0, FLAT_LIMIT), 0x008f_8b00_0000_ffff);
        // Base bytes are split across the descriptor.
        assert_eq!(gdt_entry(DATA, 0x1234_5678, 0xabcde), 0x12ca_9334_5678_bcde);
    }

    #[test]
    fn segments_decode_what_was_encoded() {
        let code = segment_from_gdt(gdt_entry(CODE_64, 0, FLAT_LIMIT), CODE_INDEX);
        assert_eq!(code.selector, 0x08);
        assert_eq!(code.type_, 0xb);
        assert_eq!(
            (code.present, code.s, code.l, code.db, code.g),
            (1, 1, 1, 0, 1)
        );
        assert_eq!(code.limit, 0xffff_ffff);
        assert_eq!(code.unusable, 0);

        let data = segment_from_gdt(gdt_entry(DATA, 0x1234_5678, 0xabcde), DATA_INDEX);
        assert_eq!(data.selector, 0x10);
        assert_eq!(data.base, 0x1234_5678);
        assert_eq!(data.limit, 0xabcd_efff);
        assert_eq!((data.type_, data.db, data.l), (0x3, 1, 0));

        let tss = segment_from_gdt(gdt_entry(TSS_32_BUSY, 0, TSS_32_LIMIT), TSS_INDEX);
        assert_eq!(tss.selector, 0x18);
        assert_eq!((tss.type_, tss.s, tss.g, tss.limit), (0xb, 0, 0, 0x67));

        let null = segment_from_gdt(0, 0);
        assert_eq!((null.present, null.unusable), (0, 1));
    }

    #[test]
    fn pvh_gdt_is_flat_32_bit() {
        let gdt = boot_gdt(BootProtocol::Pvh);
        let code = segment_from_gdt(gdt[CODE_INDEX], CODE_INDEX);
        assert_eq!(
            (code.base, code.limit, code.db, code.l),
            (0, 0xffff_ffff, 1, 0)
        );
        let data = segment_from_gdt(gdt[DATA_INDEX], DATA_INDEX);
        assert_eq!((data.base, data.limit, data.db), (0, 0xffff_ffff, 1));
    }

    #[test]
    fn tables_are_written_where_layout_says() {
        let mem = super::super::memory::tests::guest_memory(1 << 20);
        let gdt = boot_gdt(BootProtocol::Linux64);
        let tables = write_tables(&mem, &gdt).unwrap();
        assert_eq!(tables.gdt, (GDT_ADDR, 31));
        assert_eq!(tables.idt, (IDT_ADDR, 7));
        for (i, entry) in gdt.iter().enumerate() {
            let read: u64 = mem.read_obj(GuestAddress(GDT_ADDR + 8 * i as u64)).unwrap();
            assert_eq!(read, *entry);
        }
    }
}
