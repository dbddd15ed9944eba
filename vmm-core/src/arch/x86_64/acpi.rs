//! ACPI tables for a hardware-reduced ACPI platform (as Cloud Hypervisor and
//! Firecracker): what lets an x86 guest power off, and tells it about its
//! CPUs, its interrupt controllers and the few devices it cannot probe.
//!
//! ```text
//! ACPI_RSDP_ADDR  RSDP ──▶ XSDT ──┬─▶ FADT ──▶ DSDT  \_S5_, \_SB_.COM1, \_SB_.PEVT,
//!                                 │                 \_SB_.GED_, \_SB_.PWRB, \_SB_.VRnn
//!                                 └─▶ MADT  local APIC per vCPU, IOAPIC, LINT1 NMI
//! ```
//! All of them sit in the BIOS area, from [`ACPI_RSDP_ADDR`] up to
//! [`ACPI_TABLES_END`], which e820 does not report as RAM.
//!
//! Hardware-reduced means no PM1 blocks, no SCI, no PM timer: the FADT points
//! the sleep control, sleep status and reset registers at one I/O port
//! ([`ACPI_POWER_PORT`], the `devices::legacy::AcpiPowerControl` device),
//! and `\_S5_` gives the `SLP_TYP` Linux writes there to power off. Linux
//! then also drops the legacy PIC and with it the fixed ISA IRQ numbers, so
//! every device with an interrupt must be described here to get one: COM1
//! is (IRQ 4 as an ACPI GSI; Linux binds it with `SERIAL_8250_PNP`).
//! pvpanic ("QEMU0001") is found only through the DSDT.
//!
//! Without an SCI, ACPI events reach the guest through a Generic Event
//! Device (`ACPI0013`, [`devices::acpi_ged::AcpiGed`] at [`GED_ADDR`] on
//! [`GED_IRQ`]): its `_EVT` method reads the event register and notifies
//! the control-method power button (`PNP0C0C`), which the host presses for
//! a graceful power-off.

use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile, FADT};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};

use crate::resources::DeviceSlot;
use devices::acpi_ged::AcpiGed;
use devices::legacy::AcpiPowerControl;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    ACPI_POWER_PORT, ACPI_RSDP_ADDR, ACPI_TABLES_END, APIC_ADDR, COM1_IRQ, COM1_PORT, GED_ADDR,
    GED_IRQ, GED_SIZE, IOAPIC_ADDR, PVPANIC_PORT, PVPANIC_PORT_SIZE, SERIAL_PORT_SIZE,
};
use super::ArchError;

/// OEM id in every table header.
const OEM_ID: [u8; 6] = *b"MRCURY";
/// OEM revision in every table header.
const OEM_REVISION: u32 = 1;
/// FADT `hypervisor_vendor_identity`.
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"MERCURY ";
/// Tables start on this alignment (the RSDP needs 16 for a guest's scan).
const TABLE_ALIGN: u64 = 16;

/// FADT IA-PC boot architecture flags: what the platform lacks. No 8042 flag
/// either: the i8042 is only a reset line, nothing for a keyboard driver.
const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
/// See [`IAPC_BOOT_ARCH_VGA_NOT_PRESENT`].
const IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED: u16 = 1 << 3;
/// See [`IAPC_BOOT_ARCH_VGA_NOT_PRESENT`].
const IAPC_BOOT_ARCH_PCIE_ASPM_CONTROLS: u16 = 1 << 4;
/// See [`IAPC_BOOT_ARCH_VGA_NOT_PRESENT`].
const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// MADT revision (ACPI 6.3+).
const MADT_REVISION: u8 = 5;
/// MADT length before its interrupt controller structures.
const MADT_HEADER_LEN: u32 = 44;
/// MADT flag: the platform also has dual 8259 PICs (KVM's irqchip does).
const MADT_PCAT_COMPAT: u32 = 1;
/// MADT structure type: local APIC NMI.
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// Local APIC NMI: applies to every processor.
const ALL_PROCESSORS: u8 = 0xff;
/// Local APIC NMI: polarity and trigger conform to the bus.
const NMI_FLAGS_CONFORMING: u16 = 0;
/// The LAPIC pin the NMI is wired to (LINT1, as the vCPUs' LAPICs are set up).
const NMI_LINT: u8 = 1;

/// DSDT revision: 2 and above means 64-bit AML integers.
const DSDT_REVISION: u8 = 6;

/// The ports the DSDT names, as the 16-bit values AML resources hold.
const COM1_PORT_U16: u16 = COM1_PORT as u16;
const PVPANIC_PORT_U16: u16 = PVPANIC_PORT as u16;
const _: () = assert!(COM1_PORT <= 0xffff && PVPANIC_PORT <= 0xffff);
const _: () = assert!(SERIAL_PORT_SIZE <= 0xff && PVPANIC_PORT_SIZE <= 0xff);
/// The GED's window, as the 32-bit value AML regions hold.
const GED_ADDR_U32: u32 = GED_ADDR as u32;
const _: () = assert!(GED_ADDR + GED_SIZE <= 1 << 32);
/// The GED event register's address and size in the DSDT's operation region.
const GED_EVENT_REGISTER_ADDR: u32 = GED_ADDR_U32 + AcpiGed::EVENT_REGISTER as u32;
const GED_EVENT_REGISTER_SIZE: u8 = AcpiGed::EVENT_REGISTER_SIZE as u8;
const _: () = assert!(AcpiGed::EVENT_REGISTER + AcpiGed::EVENT_REGISTER_SIZE as u64 <= GED_SIZE);

/// One table and where it goes.
#[derive(Debug)]
pub(super) struct Table {
    pub(super) addr: u64,
    pub(super) bytes: Vec<u8>,
}

/// Builds and writes every table; returns the RSDP's address.
pub(super) fn setup_acpi(
    mem: &GuestMemoryMmap,
    num_cpus: u8,
    virtio: &[DeviceSlot],
) -> Result<GuestAddress, ArchError> {
    for table in build_tables(num_cpus, virtio)? {
        mem.write_slice(&table.bytes, GuestAddress(table.addr))
            .map_err(|source| ArchError::GuestMemory {
                what: "ACPI tables",
                addr: table.addr,
                source,
            })?;
    }
    Ok(GuestAddress(ACPI_RSDP_ADDR))
}

/// Places tables one after the other from the RSDP on, within the BIOS area.
struct Placer {
    next: u64,
    tables: Vec<Table>,
}

impl Placer {
    fn place(&mut self, bytes: Vec<u8>) -> Result<u64, ArchError> {
        let addr = self.next;
        let end = addr + bytes.len() as u64;
        if end > ACPI_TABLES_END {
            return Err(ArchError::AcpiTablesDoNotFit {
                end,
                limit: ACPI_TABLES_END,
            });
        }
        self.next = end.next_multiple_of(TABLE_ALIGN);
        self.tables.push(Table { addr, bytes });
        Ok(addr)
    }
}

/// All tables for `num_cpus` vCPUs and the `virtio` devices, the RSDP
/// first at [`ACPI_RSDP_ADDR`].
pub(super) fn build_tables(num_cpus: u8, virtio: &[DeviceSlot]) -> Result<Vec<Table>, ArchError> {
    let mut placer = Placer {
        next: ACPI_RSDP_ADDR,
        tables: Vec::new(),
    };
    // The RSDP's place is fixed; its content needs the XSDT's address.
    placer.place(vec![0; Rsdp::len()])?;
    let dsdt = placer.place(dsdt(virtio))?;
    let fadt = placer.place(aml_bytes(&fadt(dsdt)))?;
    let madt = placer.place(madt(num_cpus))?;
    let mut xsdt = XSDT::new(OEM_ID, *b"MRCYXSDT", OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = placer.place(aml_bytes(&xsdt))?;
    placer.tables[0].bytes = aml_bytes(&Rsdp::new(OEM_ID, xsdt));
    Ok(placer.tables)
}

fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// FADT: hardware-reduced, with the power-control port as sleep control,
/// sleep status and reset register.
fn fadt(dsdt: u64) -> FADT {
    let power_control = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        ACPI_POWER_PORT,
    );
    let mut fadt = FADTBuilder::new(OEM_ID, *b"MRCYFACP", OEM_REVISION)
        .dsdt_64(dsdt)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // PWR_BUTTON set: the power button is not the fixed-feature one but
        // a control-method device (the DSDT's PNP0C0C, notified by the GED).
        // SLP_BUTTON set: no fixed sleep button, and no sleep button device.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .preferred_pm_profile(PmProfile::EnterpriseServer);
    fadt.sleep_control_reg = power_control;
    fadt.sleep_status_reg = power_control;
    fadt.reset_reg = power_control;
    fadt.reset_value = AcpiPowerControl::RESET_VALUE;
    fadt.iapc_boot_arch = (IAPC_BOOT_ARCH_VGA_NOT_PRESENT
        | IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED
        | IAPC_BOOT_ARCH_PCIE_ASPM_CONTROLS
        | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT)
        .into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    fadt.finalize()
}

/// MADT: one enabled local APIC per vCPU (ACPI processor UID = APIC ID =
/// vCPU index, as CPUID reports), the IOAPIC with GSIs from 0, and NMI on
/// every LAPIC's LINT1.
fn madt(num_cpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        *b"MRCYAPIC",
        OEM_REVISION,
    );
    madt.write_u32(36, APIC_ADDR as u32);
    madt.write_u32(40, MADT_PCAT_COMPAT);
    for id in 0..num_cpus {
        madt.append_slice(&aml_bytes(&ProcessorLocalApic::new(
            id,
            id,
            EnabledStatus::Enabled,
        )));
    }
    // The IOAPIC id the MP table gives it: the first one after the CPUs'.
    let ioapic_id = num_cpus;
    madt.append_slice(&aml_bytes(&IoApic::new(ioapic_id, IOAPIC_ADDR as u32, 0)));
    let [flags_lo, flags_hi] = NMI_FLAGS_CONFORMING.to_le_bytes();
    madt.append_slice(&[
        MADT_LOCAL_APIC_NMI,
        6,
        ALL_PROCESSORS,
        flags_lo,
        flags_hi,
        NMI_LINT,
    ]);
    madt.as_slice().to_vec()
}

/// DSDT: the S5 sleep type, COM1, pvpanic, the GED and its power button,
/// and the virtio-mmio devices.
fn dsdt(virtio: &[DeviceSlot]) -> Vec<u8> {
    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        *b"MRCYDSDT",
        OEM_REVISION,
    );
    dsdt.append_slice(&aml_bytes(&aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&AcpiPowerControl::SLEEP_TYPE_S5, &0u8, &0u8, &0u8]),
    )));
    let mut system_bus = com1();
    system_bus.extend(pvpanic());
    system_bus.extend(generic_event_device());
    system_bus.extend(power_button());
    for (index, slot) in virtio.iter().enumerate() {
        system_bus.extend(virtio_mmio(index, slot));
    }
    dsdt.append_slice(&aml::Scope::raw("\\_SB_".into(), system_bus));
    dsdt.as_slice().to_vec()
}

/// COM1: a 16550 (PNP0501) at its ports, on GSI 4 (edge, active high).
fn com1() -> Vec<u8> {
    aml_bytes(&aml::Device::new(
        "COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &1u8),
            &aml::Name::new("_DDN".into(), &"COM1"),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::Interrupt::new(true, true, false, false, COM1_IRQ),
                    &aml::IO::new(COM1_PORT_U16, COM1_PORT_U16, 1, SERIAL_PORT_SIZE as u8),
                ]),
            ),
        ],
    ))
}

/// A virtio-mmio device: "LNRO0005" (what Linux's virtio_mmio driver
/// matches in ACPI, as QEMU and Firecracker describe it) with its MMIO
/// window and its interrupt line (edge, active high, exclusive). A kernel
/// without `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` finds its disks and NICs
/// this way.
fn virtio_mmio(index: usize, slot: &DeviceSlot) -> Vec<u8> {
    let name = format!("VR{index:02X}");
    let uid = index as u32;
    aml_bytes(&aml::Device::new(
        name.as_str().into(),
        vec![
            &aml::Name::new("_HID".into(), &"LNRO0005"),
            &aml::Name::new("_UID".into(), &uid),
            &aml::Name::new("_CCA".into(), &aml::ONE),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::Memory32Fixed::new(true, slot.addr as u32, slot.len as u32),
                    &aml::Interrupt::new(true, true, false, false, slot.irq),
                ]),
            ),
        ],
    ))
}

/// pvpanic: QEMU's "QEMU0001" with its one I/O port, which Linux's
/// pvpanic-mmio driver (`CONFIG_PVPANIC_MMIO`) binds to.
fn pvpanic() -> Vec<u8> {
    aml_bytes(&aml::Device::new(
        "PEVT".into(),
        vec![
            &aml::Name::new("_HID".into(), &"QEMU0001"),
            &aml::Name::new("_UID".into(), &0u8),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::IO::new(
                    PVPANIC_PORT_U16,
                    PVPANIC_PORT_U16,
                    1,
                    PVPANIC_PORT_SIZE as u8,
                )]),
            ),
        ],
    ))
}

/// The Generic Event Device ("ACPI0013", which Linux's evged driver binds):
/// its interrupt line (edge, active high, exclusive), its event register as
/// an operation region, and
/// `_EVT`, which the driver runs on each interrupt: read the event
/// register (the read clears it) and, for a power-button event, notify
/// `\_SB_.PWRB` that it was pressed.
fn generic_event_device() -> Vec<u8> {
    let events = aml::Path::new("GDAT");
    let pending = aml::Local(0);
    let power = aml::Local(1);
    let store = aml::Store::new(&pending, &events);
    let and = aml::And::new(&power, &pending, &AcpiGed::POWER_BUTTON);
    let pressed = aml::Equal::new(&power, &AcpiGed::POWER_BUTTON);
    let button = aml::Path::new("\\_SB_.PWRB");
    let notify = aml::Notify::new(&button, &AcpiGed::NOTIFY_PRESSED);
    let on_press = aml::If::new(&pressed, vec![&notify]);
    aml_bytes(&aml::Device::new(
        "GED_".into(),
        vec![
            &aml::Name::new("_HID".into(), &"ACPI0013"),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            // Interrupts only: Linux's evged fails its probe ("unable to
            // parse IRQ resource") on any other resource in `_CRS`. The
            // register window is the operation region's.
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::Interrupt::new(
                    true, true, false, false, GED_IRQ,
                )]),
            ),
            &aml::OpRegion::new(
                "GDST".into(),
                aml::OpRegionSpace::SystemMemory,
                &GED_EVENT_REGISTER_ADDR,
                &GED_EVENT_REGISTER_SIZE,
            ),
            &aml::Field::new(
                "GDST".into(),
                aml::FieldAccessType::DWord,
                aml::FieldLockRule::NoLock,
                aml::FieldUpdateRule::WriteAsZeroes,
                vec![aml::FieldEntry::Named(*b"GDAT", 32)],
            ),
            &aml::Method::new("_EVT".into(), 1, true, vec![&store, &and, &on_press]),
        ],
    ))
}

/// The power button: a control-method button device ("PNP0C0C"), which
/// Linux's ACPI button driver (`CONFIG_ACPI_BUTTON`) binds and turns each
/// `Notify(PWRB, 0x80)` into a `KEY_POWER` press on an input device.
fn power_button() -> Vec<u8> {
    aml_bytes(&aml::Device::new(
        "PWRB".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;
    use crate::arch::x86_64::layout::{ACPI_POWER_PORT, HIMEM_START};
    use crate::arch::x86_64::memory::{memory_regions, ram_ranges};

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
    }
    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The tables by signature ("RSD PTR " for the RSDP).
    fn by_signature(tables: &[Table]) -> std::collections::BTreeMap<String, &Table> {
        tables
            .iter()
            .map(|t| {
                let sig = if t.bytes.starts_with(b"RSD PTR ") {
                    8
                } else {
                    4
                };
                (String::from_utf8_lossy(&t.bytes[..sig]).into_owned(), t)
            })
            .collect()
    }

    #[test]
    fn checksums_signatures_and_lengths() {
        let tables = build_tables(2, &[]).unwrap();
        let named = by_signature(&tables);
        let names: Vec<_> = named.keys().cloned().collect();
        assert_eq!(names, ["APIC", "DSDT", "FACP", "RSD PTR ", "XSDT"]);
        let rsdp = &named["RSD PTR "];
        assert_eq!(rsdp.addr, ACPI_RSDP_ADDR);
        assert_eq!(rsdp.bytes.len(), 36);
        assert_eq!(sum(&rsdp.bytes[..20]), 0, "RSDP v1 checksum");
        assert_eq!(sum(&rsdp.bytes), 0, "RSDP extended checksum");
        assert_eq!(rsdp.bytes[15], 2, "revision 2: XSDT");
        for name in ["APIC", "DSDT", "FACP", "XSDT"] {
            let t = &named[name];
            assert_eq!(u32_at(&t.bytes, 4) as usize, t.bytes.len(), "{name} length");
            assert_eq!(sum(&t.bytes), 0, "{name} checksum");
            assert_eq!(&t.bytes[10..16], b"MRCURY", "{name} OEM id");
        }
    }

    #[test]
    fn rsdp_xsdt_and_fadt_point_at_each_other() {
        let tables = build_tables(1, &[]).unwrap();
        let named = by_signature(&tables);
        let xsdt = &named["XSDT"];
        assert_eq!(u64_at(&named["RSD PTR "].bytes, 24), xsdt.addr);
        let entries: Vec<u64> = xsdt.bytes[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
        assert_eq!(entries, [named["FACP"].addr, named["APIC"].addr]);
        assert_eq!(
            u64_at(&named["FACP"].bytes, 140),
            named["DSDT"].addr,
            "X_DSDT"
        );
    }

    #[test]
    fn fadt_is_hardware_reduced_with_power_registers_on_one_port() {
        let tables = build_tables(1, &[]).unwrap();
        let fadt = &by_signature(&tables)["FACP"].bytes;
        assert_eq!(fadt.len(), 276);
        assert_eq!((fadt[8], fadt[131]), (6, 5), "FADT revision 6.5");
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(fadt[45], 4, "PM profile: enterprise server");
        assert_eq!(
            u16_at(fadt, 109),
            0b11_1100,
            "no VGA, MSI, ASPM, CMOS RTC; no 8042"
        );
        // GAS: system I/O, 8 bits at bit 0, byte access, the power-control port.
        let gas = |off: usize| {
            (
                fadt[off],
                fadt[off + 1],
                fadt[off + 2],
                fadt[off + 3],
                u64_at(fadt, off + 4),
            )
        };
        let port = (1, 8, 0, 1, ACPI_POWER_PORT);
        assert_eq!(gas(116), port, "reset register");
        assert_eq!(fadt[128], AcpiPowerControl::RESET_VALUE, "reset value");
        assert_eq!(gas(244), port, "sleep control register");
        assert_eq!(gas(256), port, "sleep status register");
        assert_eq!(&fadt[268..276], b"MERCURY ");
    }

    #[test]
    fn madt_has_one_enabled_lapic_per_vcpu_the_ioapic_and_lint1_nmi() {
        for num_cpus in [1u8, 3, 32] {
            let tables = build_tables(num_cpus, &[]).unwrap();
            let madt = &by_signature(&tables)["APIC"].bytes;
            assert_eq!(u64::from(u32_at(madt, 36)), APIC_ADDR);
            assert_eq!(u32_at(madt, 40), MADT_PCAT_COMPAT);
            let mut entries = Vec::new();
            let mut off = MADT_HEADER_LEN as usize;
            while off < madt.len() {
                let len = usize::from(madt[off + 1]);
                entries.push(&madt[off..off + len]);
                off += len;
            }
            assert_eq!(off, madt.len());
            let lapics: Vec<_> = entries.iter().filter(|e| e[0] == 0).collect();
            assert_eq!(lapics.len(), usize::from(num_cpus));
            for (i, lapic) in lapics.iter().enumerate() {
                assert_eq!(
                    (lapic[1], lapic[2], lapic[3]),
                    (8, i as u8, i as u8),
                    "uid and APIC id"
                );
                assert_eq!(u32_at(lapic, 4), 1, "enabled");
            }
            let ioapics: Vec<_> = entries.iter().filter(|e| e[0] == 1).collect();
            assert_eq!(ioapics.len(), 1);
            assert_eq!(ioapics[0][2], num_cpus, "IOAPIC id as in the MP table");
            assert_eq!(u64::from(u32_at(ioapics[0], 4)), IOAPIC_ADDR);
            assert_eq!(u32_at(ioapics[0], 8), 0, "GSI base");
            let nmis: Vec<_> = entries.iter().filter(|e| e[0] == 4).collect();
            assert_eq!(nmis.len(), 1);
            assert_eq!(nmis[0], &[4, 6, 0xff, 0, 0, 1]);
            assert_eq!(entries.len(), usize::from(num_cpus) + 2);
        }
    }

    #[test]
    fn dsdt_has_s5_com1_and_pvpanic() {
        let tables = build_tables(1, &[]).unwrap();
        let dsdt = &by_signature(&tables)["DSDT"].bytes;
        assert_eq!(dsdt[8], DSDT_REVISION);
        let aml = &dsdt[36..];
        // Name(_S5_, Package(4) { 5, 0, 0, 0 }).
        assert!(contains(
            aml,
            &[0x08, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0, 0, 0]
        ));
        assert!(contains(aml, b"\\_SB_"));
        // pvpanic: _HID "QEMU0001", IO(Decode16, 0x505, 0x505, 1, 1).
        assert!(contains(aml, b"PEVT"));
        assert!(contains(aml, b"_HID\x0dQEMU0001\0"));
        assert!(contains(
            aml,
            &[0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01]
        ));
        // COM1: PNP0501 (EISA id), IO 0x3f8 x 8, extended interrupt GSI 4
        // (consumer, edge, active high, exclusive).
        assert!(contains(
            aml,
            &[b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x05, 0x01]
        ));
        assert!(contains(
            aml,
            &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]
        ));
        assert!(contains(
            aml,
            &[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0, 0, 0]
        ));
    }

    #[test]
    fn dsdt_has_the_ged_with_its_event_method_and_the_power_button() {
        let tables = build_tables(1, &[]).unwrap();
        let aml = &by_signature(&tables)["DSDT"].bytes[36..];
        assert!(contains(aml, b"GED_"));
        assert!(contains(aml, b"_HID\x0dACPI0013\0"));
        // _CRS: a buffer holding Interrupt(ResourceConsumer, Edge,
        // ActiveHigh, Exclusive) { 23 } and the end tag, nothing else.
        assert!(contains(
            aml,
            &[
                b'_', b'C', b'R', b'S', 0x11, 0x0e, 0x0a, 0x0b, 0x89, 0x06, 0x00, 0x03, 0x01, 23,
                0, 0, 0, 0x79, 0x00
            ]
        ));
        // OperationRegion(GDST, SystemMemory, GED_ADDR, 4).
        let mut region = vec![0x5b, 0x80, b'G', b'D', b'S', b'T', 0x00, 0x0c];
        region.extend((GED_ADDR as u32).to_le_bytes());
        region.extend([0x0a, 0x04]);
        assert!(contains(aml, &region), "event register region");
        // Field(GDST, DWordAcc, NoLock, WriteAsZeros) { GDAT, 32 }.
        assert!(contains(aml, b"GDST\x43GDAT\x20"));
        // Method(_EVT, 1, Serialized) and Notify(\_SB_.PWRB, 0x80) in it.
        assert!(contains(aml, b"_EVT\x09"));
        assert!(contains(aml, b"\x86\\\x2e_SB_PWRB\x0a\x80"));
        // The button: Device(PWRB) { _HID EISAID("PNP0C0C") }.
        assert!(contains(aml, b"PWRB\x08_HID\x0c\x41\xd0\x0c\x0c"));
        assert_eq!(GED_IRQ, 23);
    }

    /// The DSDT as ACPICA's own disassembler reads it back: the GED, its
    /// `_EVT` notifying the power button, the button. `iasl` comes from
    /// Debian's acpica-tools (scripts/setup.sh installs it).
    #[test]
    fn iasl_disassembles_the_dsdt_with_the_ged_and_power_button() {
        let slot = DeviceSlot {
            addr: 0xd000_1000,
            len: 0x1000,
            irq: 5,
        };
        let tables = build_tables(2, &[slot]).unwrap();
        let dir = std::env::temp_dir().join(format!("mercury-dsdt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let aml_path = dir.join("dsdt.aml");
        std::fs::write(&aml_path, &by_signature(&tables)["DSDT"].bytes).unwrap();
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(&aml_path)
            .output()
            .expect("run iasl (Debian acpica-tools; scripts/setup.sh installs it)");
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "iasl -d: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let dsl = dsl.expect("iasl wrote dsdt.dsl");
        // Without iasl's comments, whitespace squeezed to single spaces.
        let mut code = String::new();
        for line in dsl.lines() {
            let mut line = line.split("//").next().unwrap_or_default();
            let mut kept = String::new();
            while let Some((before, after)) = line.split_once("/*") {
                kept.push_str(before.trim_end());
                line = after.split_once("*/").map_or("", |(_, rest)| rest);
            }
            kept.push_str(line);
            code.push_str(&kept);
            code.push(' ');
        }
        let squeezed = code.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            "Device (GED) {",
            "Name (_HID, \"ACPI0013\")",
            "OperationRegion (GDST, SystemMemory, 0xD0100000, 0x04)",
            "Field (GDST, DWordAcc, NoLock, WriteAsZeros) { GDAT, 32 }",
            "Method (_EVT, 1, Serialized) {",
            "Local0 = GDAT Local1 = (Local0 & One) If ((Local1 == One)) { Notify (\\_SB.PWRB, 0x80) }",
            "Device (PWRB) {",
            "Name (_HID, EisaId (\"PNP0C0C\"))",
            "Name (_CRS, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000017, } }) OperationRegion (GDST",
            "Device (VR00) {",
            "Device (COM1) {",
            "Device (PEVT) {",
        ] {
            assert!(squeezed.contains(want), "no `{want}` in\n{dsl}");
        }
    }

    #[test]
    fn dsdt_describes_each_virtio_device_with_its_window_and_line() {
        let slots = [
            DeviceSlot {
                addr: 0xd000_1000,
                len: 0x1000,
                irq: 5,
            },
            DeviceSlot {
                addr: 0xd000_2000,
                len: 0x1000,
                irq: 6,
            },
        ];
        let tables = build_tables(1, &slots).unwrap();
        let aml = &by_signature(&tables)["DSDT"].bytes[36..];
        for (name, slot) in [(b"VR00", &slots[0]), (b"VR01", &slots[1])] {
            assert!(contains(aml, name), "{}", String::from_utf8_lossy(name));
            // Memory32Fixed(ReadWrite, addr, len).
            let mut fixed = vec![0x86, 0x09, 0x00, 0x01];
            fixed.extend((slot.addr as u32).to_le_bytes());
            fixed.extend((slot.len as u32).to_le_bytes());
            assert!(contains(aml, &fixed), "window of {slot:?}");
            // Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { irq }.
            let mut interrupt = vec![0x89, 0x06, 0x00, 0x03, 0x01];
            interrupt.extend(slot.irq.to_le_bytes());
            assert!(contains(aml, &interrupt), "line of {slot:?}");
        }
        assert_eq!(aml.windows(8).filter(|w| *w == b"LNRO0005").count(), 2);
        assert!(!contains(
            &by_signature(&build_tables(1, &[]).unwrap())["DSDT"].bytes,
            b"LNRO0005"
        ));
    }

    #[test]
    fn tables_fit_in_the_bios_area_outside_e820_ram() {
        let mem = GuestMemoryMmap::from_ranges(&memory_regions(128 << 20)).unwrap();
        let ram = ram_ranges(&mem);
        for num_cpus in [1u8, crate::MAX_VCPUS] {
            let tables = build_tables(num_cpus, &[]).unwrap();
            let mut prev_end = ACPI_RSDP_ADDR;
            for t in &tables {
                let end = t.addr + t.bytes.len() as u64;
                assert!(t.addr >= prev_end, "tables do not overlap");
                assert_eq!(t.addr % TABLE_ALIGN, 0);
                assert!(end <= ACPI_TABLES_END && ACPI_TABLES_END == HIMEM_START);
                for r in &ram {
                    assert!(
                        end <= r.start || t.addr >= r.start + r.size,
                        "{:#x} is in e820 RAM {r:?}",
                        t.addr
                    );
                }
                prev_end = end;
            }
        }
    }

    #[test]
    fn setup_acpi_writes_the_tables_into_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&memory_regions(128 << 20)).unwrap();
        let rsdp = setup_acpi(&mem, 2, &[]).unwrap();
        assert_eq!(rsdp, GuestAddress(ACPI_RSDP_ADDR));
        for t in build_tables(2, &[]).unwrap() {
            let mut bytes = vec![0; t.bytes.len()];
            mem.read_slice(&mut bytes, GuestAddress(t.addr)).unwrap();
            assert_eq!(bytes, t.bytes);
        }
    }

    #[test]
    fn placer_refuses_tables_past_the_bios_area() {
        let mut placer = Placer {
            next: ACPI_TABLES_END - 8,
            tables: Vec::new(),
        };
        let e = placer.place(vec![0; 16]).unwrap_err();
        assert!(e.to_string().contains("0x100008"), "{e}");
    }
}
