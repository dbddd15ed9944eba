//! The guest's own identity map of 0..4 GiB with 2 MiB pages, used by both
//! entry paths (so the guest never depends on the VMM's 1 GiB map).
//!
//! The tables are static data assembled into the image (.data, 24 KiB), so
//! the 32-bit PVH path can load them into CR3 before long mode exists:
//! `boot_pml4[0]` -> `boot_pdpt[0..4]` -> `boot_pd` (4 x 512 entries).
//! Below the MMIO gap (0xd000_0000) pages are write-back; the gap (boot
//! timer, device windows, IOAPIC, LAPIC) is mapped uncached (PCD | PWT).

use core::arch::global_asm;

/// Present | writable | 2 MiB page.
const PDE_RAM: u64 = 0x83;
/// [`PDE_RAM`] | PWT | PCD: uncached, for MMIO.
const PDE_MMIO: u64 = PDE_RAM | 0x18;
/// Present | writable, for PML4 and PDPT entries.
const TABLE: u64 = 0x3;
/// Number of 2 MiB pages below the MMIO gap at 0xd000_0000.
const RAM_PAGES: u64 = 0xd000_0000 >> 21;
/// Number of 2 MiB pages from the gap to 4 GiB.
const MMIO_PAGES: u64 = 2048 - RAM_PAGES;

global_asm!(
    ".section .data.pagetables, \"aw\"",
    ".balign 4096",
    ".globl boot_pml4",
    "boot_pml4:",
    "    .quad boot_pdpt + {table}",
    "    .fill 511, 8, 0",
    "boot_pdpt:",
    "    .quad boot_pd + {table}",
    "    .quad boot_pd + 0x1000 + {table}",
    "    .quad boot_pd + 0x2000 + {table}",
    "    .quad boot_pd + 0x3000 + {table}",
    "    .fill 508, 8, 0",
    "boot_pd:",
    "    .set page, 0",
    "    .rept {ram_pages}",
    "    .quad (page << 21) | {ram}",
    "    .set page, page + 1",
    "    .endr",
    "    .rept {mmio_pages}",
    "    .quad (page << 21) | {mmio}",
    "    .set page, page + 1",
    "    .endr",
    ".text",
    table = const TABLE,
    ram = const PDE_RAM,
    mmio = const PDE_MMIO,
    ram_pages = const RAM_PAGES,
    mmio_pages = const MMIO_PAGES,
    options(att_syntax)
);
