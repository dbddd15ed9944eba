//! The checks on the VMM's ACPI platform: `acpi` / `acpi-scan` (the tables),
//! `poweroff` (S5 through the FADT's sleep control register), `pvpanic` and
//! `power-button` (the GED's event register, when the host presses it).
//!
//! `poweroff` and `pvpanic` print their PASS line *before* the write that
//! should end the VM, so a VMM that honours it leaves that line last on the
//! console; one that does not gets a FAIL line [`STILL_RUNNING_US`] later.

use crate::acpi::{self, Gas, Signatures, Tables};
use crate::bootinfo::BootInfo;
use crate::cpu::{self, cpuid, inb, outb};
use crate::mptable;
use crate::phys;
use crate::serial::{println, CommaList};

/// Sleep control register: `SLP_EN`, and where `SLP_TYP` goes.
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
/// Sleep status register: `WAK_STS`, written (to clear it) before sleeping.
const WAK_STS: u8 = 1 << 7;
/// QEMU's pvpanic I/O port and its "guest panicked" event bit.
const PVPANIC_PORT: u16 = 0x505;
const PVPANIC_PANICKED: u8 = 1 << 0;
/// What a read of a port without a device returns.
const NO_DEVICE: u8 = 0xff;
/// The MMIO gap, identity-mapped uncached: where a memory-space sleep
/// register may be (QEMU's microvm puts it there).
const MMIO_GAP: (u64, u64) = (0xd000_0000, 0x1_0000_0000);
/// How long a check waits for the VM to end after asking for it, in µs of
/// TSC time, before reporting that it is still running.
const STILL_RUNNING_US: u64 = 5_000_000;
/// `power-button`: the Generic Event Device's and the power button's ids
/// in the DSDT (a string `_HID`; an EISA id, PNP0C0C, after `_HID`).
const GED_HID: &[u8] = b"ACPI0013";
const PWRB_HID: &[u8] = &[b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x0c, 0x0c];
/// `power-button`: the GED's power-button event bit.
const GED_POWER_BUTTON: u32 = 1 << 0;
/// `power-button`: how long to wait for the host's press, and how often to
/// read the event register meanwhile (each read is a VM exit).
const PRESS_WAIT_US: u64 = 60_000_000;
const PRESS_POLL_US: u64 = 10_000;

/// The `acpi` check (`force_scan`: `acpi-scan`, which ignores the boot
/// protocol's RSDP pointer and scans the BIOS area for it).
pub fn acpi(boot: &BootInfo, force_scan: bool) {
    let name = if force_scan { "acpi-scan" } else { "acpi" };
    let tables = match acpi::read_tables(boot, force_scan) {
        Ok(tables) => tables,
        Err(err) => {
            println!("CHECK {name} FAIL {err}");
            return;
        }
    };
    let madt_ids = tables.madt.apic_ids();
    let bsp_id = cpuid(1, 0).ebx >> 24;
    // The CPUs the VMM was given, as its MP table lists them.
    let (expected, reason) = match mptable::read_cpus() {
        Ok(mp) => {
            let mp_ids = mp.apic_ids();
            let same = mp_ids.len() == madt_ids.len()
                && mp_ids.iter().all(|&id| madt_ids.contains(&u32::from(id)));
            let reason = if !same {
                Some("madt-mp-mismatch")
            } else if !madt_ids.contains(&bsp_id) {
                Some("bsp-not-in-madt")
            } else {
                None
            };
            (Some(mp_ids.len()), reason)
        }
        Err(err) => (None, Some(err.reason())),
    };
    let verdict = if reason.is_some() { "FAIL" } else { "PASS" };
    println!(
        "CHECK {name} {verdict} rsdp={:#x} from={} root={} tables={} lapics={} expected={} \
         apic_ids={} {} s5={}{}{}",
        tables.rsdp,
        tables.source,
        Signatures(&[tables.root]),
        Signatures(tables.names()),
        madt_ids.len(),
        Optional(expected),
        CommaList(madt_ids),
        FadtReport(&tables),
        S5Report(acpi::s5_sleep_type(tables.dsdt)),
        if reason.is_some() { " reason=" } else { "" },
        reason.unwrap_or(""),
    );
}

/// The `poweroff` check: writes `SLP_TYP(S5) << 2 | SLP_EN` to the FADT's
/// sleep control register, as Linux's `acpi_hw_extended_sleep`.
pub fn poweroff(boot: &BootInfo) {
    let tables = match acpi::read_tables(boot, false) {
        Ok(tables) => tables,
        Err(err) => {
            println!("CHECK poweroff FAIL {err}");
            return;
        }
    };
    let control = match tables.fadt.sleep_control {
        Some(gas) if gas.address != 0 => gas,
        _ => {
            println!("CHECK poweroff FAIL no-sleep-control-reg");
            return;
        }
    };
    let Some(control_reg) = Register::new(control) else {
        println!("CHECK poweroff FAIL sleep-control-unreachable({control})");
        return;
    };
    let slp_typ = match acpi::s5_sleep_type(tables.dsdt) {
        Ok(slp_typ) => slp_typ,
        Err(err) => {
            println!("CHECK poweroff FAIL {err}");
            return;
        }
    };
    // Clear WAK_STS first, as Linux does (the VMM ignores the write).
    if let Some(status) = tables.fadt.sleep_status.and_then(Register::new) {
        status.write(WAK_STS);
    }
    let value = slp_typ << SLP_TYP_SHIFT | SLP_EN;
    println!("CHECK poweroff PASS writing value={value:#04x} to={control} slp_typ={slp_typ}");
    control_reg.write(value);
    still_running("poweroff");
}

/// The `pvpanic` check: reads the supported events from the pvpanic port,
/// as Linux's driver does, and reports a panic through it.
pub fn pvpanic() {
    let events = inb(PVPANIC_PORT);
    if events == NO_DEVICE {
        println!("CHECK pvpanic FAIL events={events:#04x} no-device");
        return;
    }
    if events & PVPANIC_PANICKED == 0 {
        println!("CHECK pvpanic FAIL events={events:#04x} no-panicked-event");
        return;
    }
    println!(
        "CHECK pvpanic PASS writing value={PVPANIC_PANICKED:#04x} to=io:{PVPANIC_PORT:#x} \
         events={events:#04x}"
    );
    outb(PVPANIC_PORT, PVPANIC_PANICKED);
    still_running("pvpanic");
}

/// The `power-button` check: finds the GED (its window and line) and the
/// power button in the DSDT, says it is waiting, then polls the GED's event
/// register (offset 0, a 4-byte read that clears it) until the host
/// presses the button. No interrupt handler: this guest polls what Linux's
/// `_EVT` reads on the GED's interrupt.
pub fn power_button(boot: &BootInfo) {
    let tables = match acpi::read_tables(boot, false) {
        Ok(tables) => tables,
        Err(err) => {
            println!("CHECK power-button FAIL {err}");
            return;
        }
    };
    let Some((base, irq)) = ged_in_dsdt(tables.dsdt) else {
        println!("CHECK power-button FAIL no-ged-region-in-dsdt");
        return;
    };
    if !(MMIO_GAP.0..MMIO_GAP.1).contains(&base) || base % 4 != 0 {
        println!("CHECK power-button FAIL ged-unreachable({base:#x})");
        return;
    }
    let pwrb = dsdt_contains(tables.dsdt, PWRB_HID) as u8;
    println!("TEST-GUEST POWER-BUTTON WAITING ged={base:#x} irq={irq} pwrb={pwrb}");
    let mut deadline = cpu::Deadline::after_us(PRESS_WAIT_US);
    let mut reads: u64 = 0;
    loop {
        // SAFETY: a 4-byte aligned register in the identity-mapped MMIO gap
        // (checked above); reading it touches no memory.
        let events = unsafe { phys::mmio_read32(base) };
        reads += 1;
        if events != 0 {
            // A second read: the first one cleared the event.
            // SAFETY: as above.
            let after = unsafe { phys::mmio_read32(base) };
            let verdict = if events & GED_POWER_BUTTON != 0 && after == 0 && pwrb == 1 {
                "PASS"
            } else {
                "FAIL"
            };
            println!(
                "CHECK power-button {verdict} events={events:#x} after={after:#x} ged={base:#x} \
                 irq={irq} pwrb={pwrb} reads={reads}"
            );
            return;
        }
        if deadline.expired() {
            println!("CHECK power-button FAIL no-press ged={base:#x} reads={reads}");
            return;
        }
        cpu::delay_us(PRESS_POLL_US);
    }
}

/// After the GED's `_HID`: its event register, the address of the first
/// SystemMemory operation region (`OperationRegion(name, SystemMemory,
/// DWord)`, what `_EVT` reads), and its first interrupt.
fn ged_in_dsdt(dsdt: u64) -> Option<(u64, u32)> {
    let aml = dsdt_bytes(dsdt);
    let at = aml.windows(GED_HID.len()).position(|w| w == GED_HID)? + GED_HID.len();
    let rest = &aml[at..];
    let base = (0..rest.len().saturating_sub(12))
        .find(|&j| {
            rest[j] == 0x5b && rest[j + 1] == 0x80 && rest[j + 6] == 0 && rest[j + 7] == 0x0c
        })
        .map(|j| u32::from_le_bytes([rest[j + 8], rest[j + 9], rest[j + 10], rest[j + 11]]))?;
    let irq = (0..rest.len().saturating_sub(9))
        .find(|&j| rest[j] == 0x89 && rest[j + 1] == 0x06 && rest[j + 4] == 1)
        .map(|j| u32::from_le_bytes([rest[j + 5], rest[j + 6], rest[j + 7], rest[j + 8]]))?;
    Some((u64::from(base), irq))
}

fn dsdt_contains(dsdt: u64, needle: &[u8]) -> bool {
    dsdt_bytes(dsdt).windows(needle.len()).any(|w| w == needle)
}

/// The DSDT `read_tables` validated, header included.
fn dsdt_bytes(dsdt: u64) -> &'static [u8] {
    // SAFETY: a table `read_tables` validated: mapped, checksummed, its
    // length field its size; nothing in this image writes it.
    unsafe {
        let len: u32 = phys::read(dsdt + 4);
        core::slice::from_raw_parts(dsdt as *const u8, len as usize)
    }
}

/// Waits for the VMM to end the VM; if it does not, says so (and returns,
/// so the remaining checks run and the guest resets as usual).
fn still_running(name: &str) {
    cpu::delay_us(STILL_RUNNING_US);
    println!("CHECK {name} FAIL still-running");
}

/// A byte-wide FADT register this guest can write.
#[derive(Clone, Copy)]
enum Register {
    Port(u16),
    Mmio(u64),
}

impl Register {
    /// An I/O port, or an address in the identity-mapped MMIO gap.
    fn new(gas: Gas) -> Option<Register> {
        match gas.space {
            _ if gas.address == 0 => None,
            Gas::SYSTEM_IO => u16::try_from(gas.address).ok().map(Register::Port),
            Gas::SYSTEM_MEMORY if (MMIO_GAP.0..MMIO_GAP.1).contains(&gas.address) => {
                Some(Register::Mmio(gas.address))
            }
            _ => None,
        }
    }

    fn write(self, value: u8) {
        match self {
            Register::Port(port) => outb(port, value),
            // SAFETY: a register address the FADT gives, in the MMIO gap
            // (mapped uncached), where no RAM and no part of this image is.
            Register::Mmio(addr) => unsafe { phys::mmio_write8(addr, value) },
        }
    }
}

/// `<n>` or `none`.
struct Optional(Option<usize>);

impl core::fmt::Display for Optional {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("none"),
        }
    }
}

/// The FADT fields of the `acpi` report.
struct FadtReport<'a>(&'a Tables);

impl core::fmt::Display for FadtReport<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let fadt = &self.0.fadt;
        write!(
            f,
            "hw_reduced={} reset_reg_sup={}",
            u8::from(fadt.hw_reduced()),
            u8::from(fadt.reset_supported())
        )?;
        match fadt.sleep_control {
            Some(gas) => write!(f, " sleep_control={gas}")?,
            None => f.write_str(" sleep_control=none")?,
        }
        match fadt.sleep_status {
            Some(gas) => write!(f, " sleep_status={gas}")?,
            None => f.write_str(" sleep_status=none")?,
        }
        match fadt.reset {
            Some((gas, value)) => write!(f, " reset={gas} reset_value={value:#04x}"),
            None => f.write_str(" reset=none"),
        }
    }
}

/// `<SLP_TYP>` or the reason there is none.
struct S5Report(Result<u8, acpi::S5Error>);

impl core::fmt::Display for S5Report {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Ok(slp_typ) => write!(f, "{slp_typ}"),
            Err(err) => write!(f, "{err}"),
        }
    }
}
