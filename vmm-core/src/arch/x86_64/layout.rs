//! x86_64 guest physical memory layout. Every fixed address the VMM uses.
//!
//! ```text
//! 0x0000_0000  real-mode IVT / BDA (untouched)
//! 0x0000_0500  GDT                      (GDT_ADDR)
//! 0x0000_0520  IDT (empty)              (IDT_ADDR)
//! 0x0000_6000  PVH hvm_start_info       (PVH_INFO_START)
//! 0x0000_6040  PVH module list          (PVH_MODLIST_START)
//! 0x0000_7000  Linux zero page          (ZERO_PAGE_START)
//! 0x0000_7040  PVH memory map           (PVH_MEMMAP_START)
//! 0x0000_8ff0  boot stack pointer       (BOOT_STACK_POINTER)
//! 0x0000_9000  PML4                     (PML4_START)
//! 0x0000_a000  PDPTE                    (PDPTE_START)
//! 0x0000_b000  PDE                      (PDE_START)
//! 0x0002_0000  kernel command line      (CMDLINE_START)
//! 0x0009_fc00  EBDA: MP table           (MPTABLE_START)
//! 0x000a_0000  legacy VGA/ROM hole, not RAM in e820
//! 0x000e_0000  ACPI RSDP, then XSDT, FADT, MADT, DSDT (ACPI_RSDP_ADDR ..
//!              ACPI_TABLES_END), in the BIOS area the guest may scan
//! 0x0010_0000  kernel (HIMEM_START)     ... initrd at the top of low RAM
//! 0xd000_0000  MMIO gap start: boot timer page
//! 0xd000_1000  virtio-mmio windows, one page each (VIRTIO_MMIO_START ..
//!              VIRTIO_MMIO_END), handed out by `resources::DeviceSlots`
//! 0xd010_0000  ACPI Generic Event Device (GED_ADDR): the power button
//! 0xfec0_0000  IOAPIC, 0xfee0_0000 local APIC (inside the gap)
//! 0x1_0000_0000 RAM above the gap, when memory > MMIO_GAP_START
//! ```

/// Where the GDT is written.
pub const GDT_ADDR: u64 = 0x500;
/// Where the (empty) boot IDT is written.
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info` structure; its address goes to the guest in RBX.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (one entry: the initrd).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map entries.
pub const PVH_MEMMAP_START: u64 = 0x7040;
/// Linux boot protocol zero page (`boot_params`); its address goes in RSI.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables for 64-bit boot: PML4, PDPTE and one PDE page
/// of 2 MiB pages mapping the first 1 GiB.
pub const PML4_START: u64 = 0x9000;
/// See [`PML4_START`].
pub const PDPTE_START: u64 = 0xa000;
/// See [`PML4_START`].
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we pass, NUL included (Linux x86 COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the EBDA, where the MP table goes; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// The MP floating pointer and configuration table.
pub const MPTABLE_START: u64 = EBDA_START;
/// The ACPI RSDP (as Firecracker), in the BIOS read-only area where a guest
/// without a boot-protocol pointer scans for it; the other ACPI tables
/// follow it. Inside the legacy hole: not RAM in e820.
pub const ACPI_RSDP_ADDR: u64 = 0x000e_0000;
/// End (exclusive) of the room for ACPI tables: the end of the BIOS area.
pub const ACPI_TABLES_END: u64 = HIMEM_START;
/// First byte of memory above the legacy hole; kernels load here.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap (768 MiB below 4 GiB, as Firecracker).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The boot-timer device: the guest writes `devices::legacy::BOOT_TIMER_MAGIC` (123) here.
pub const BOOT_TIMER_ADDR: u64 = MMIO_GAP_START;
/// Size of the boot-timer MMIO window.
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
/// First virtio-mmio window, right after the boot timer's page.
pub const VIRTIO_MMIO_START: u64 = BOOT_TIMER_ADDR + BOOT_TIMER_SIZE;
/// End (exclusive) of the virtio-mmio windows: room for 255 devices, far
/// more than there are interrupt lines for them.
pub const VIRTIO_MMIO_END: u64 = MMIO_GAP_START + 0x10_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_WINDOW: u64 = 0x1000;
/// IOAPIC pins for virtio devices, one each (edge-triggered, as QEMU's
/// microvm and Firecracker): 5..=22; 0-4 are the PC's timer, keyboard,
/// cascade and COM2/COM1 lines, 23 is the GED's.
pub const VIRTIO_IRQ_FIRST: u32 = 5;
/// See [`VIRTIO_IRQ_FIRST`].
pub const VIRTIO_IRQ_LAST: u32 = GED_IRQ - 1;
/// The ACPI Generic Event Device (`devices::acpi_ged::AcpiGed`, the power
/// button): one page after the virtio windows; its event register is at
/// offset 0.
pub const GED_ADDR: u64 = VIRTIO_MMIO_END;
/// Size of the GED's MMIO window.
pub const GED_SIZE: u64 = 0x1000;
/// The GED's interrupt line (edge, active high): the last IOAPIC pin.
pub const GED_IRQ: u32 = IOAPIC_PINS as u32 - 1;
/// IOAPIC base (fixed by the PC platform; inside the MMIO gap).
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Local APIC base (fixed by the PC platform; inside the MMIO gap).
pub const APIC_ADDR: u64 = 0xfee0_0000;
/// KVM's real-mode TSS: three pages from here, inside the MMIO gap.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// KVM's identity-map page (real-mode emulation support), the page just
/// below the TSS.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// Number of IOAPIC pins (legacy IRQs 0..=23).
pub const IOAPIC_PINS: u8 = 24;
/// COM1 I/O ports and IRQ.
pub const COM1_PORT: u64 = 0x3f8;
/// See [`COM1_PORT`].
pub const COM1_IRQ: u32 = 4;
/// Size of a 16550 register window.
pub const SERIAL_PORT_SIZE: u64 = 8;
/// i8042 controller: data port 0x60 .. command port 0x64.
pub const I8042_PORT: u64 = 0x60;
/// See [`I8042_PORT`].
pub const I8042_PORT_SIZE: u64 = 5;
/// The hardware-reduced ACPI power-control register: the FADT's sleep
/// control, sleep status and reset registers share this one byte-wide port
/// (as Cloud Hypervisor). The VGA range is free: the FADT says no VGA.
pub const ACPI_POWER_PORT: u64 = 0x3c0;
/// See [`ACPI_POWER_PORT`].
pub const ACPI_POWER_PORT_SIZE: u64 = 1;
/// The pvpanic port (QEMU's default for its ISA pvpanic device).
pub const PVPANIC_PORT: u64 = 0x505;
/// See [`PVPANIC_PORT`].
pub const PVPANIC_PORT_SIZE: u64 = 1;

// The platform devices where shared code places them (`arch::PlatformDevice`).
use crate::arch::{BusKind, PlatformDevice, PowerButtonDevice, PowerButtonKind};

/// COM1, the console.
pub const SERIAL: PlatformDevice = PlatformDevice {
    bus: BusKind::Pio,
    base: COM1_PORT,
    len: SERIAL_PORT_SIZE,
};
/// The console's interrupt line.
pub const SERIAL_IRQ: u32 = COM1_IRQ;
/// The i8042 (its reset line resets the VM).
pub const I8042: Option<PlatformDevice> = Some(PlatformDevice {
    bus: BusKind::Pio,
    base: I8042_PORT,
    len: I8042_PORT_SIZE,
});
/// The ACPI power-control register.
pub const ACPI_POWER: Option<PlatformDevice> = Some(PlatformDevice {
    bus: BusKind::Pio,
    base: ACPI_POWER_PORT,
    len: ACPI_POWER_PORT_SIZE,
});
/// pvpanic, on its ISA port.
pub const PVPANIC: PlatformDevice = PlatformDevice {
    bus: BusKind::Pio,
    base: PVPANIC_PORT,
    len: PVPANIC_PORT_SIZE,
};
/// No RTC device: the guest's CMOS clock reads are unanswered (as before).
pub const RTC: Option<PlatformDevice> = None;
/// The power button: the ACPI GED, on MMIO.
pub const POWER_BUTTON: PowerButtonDevice = PowerButtonDevice {
    kind: PowerButtonKind::AcpiGed,
    at: PlatformDevice {
        bus: BusKind::Mmio,
        base: GED_ADDR,
        len: GED_SIZE,
    },
    irq: GED_IRQ,
};
