//! The checks named by `checks=a,b,c` on the command line, run in order,
//! each printing exactly one `CHECK <name> PASS|FAIL <detail>` line (except
//! `heartbeat` and `halt`, which never return, `poweroff` and `pvpanic`,
//! which add a FAIL line if the VM survives their PASS line, and
//! `triple-fault`, which prints only a FAIL line, if it survives its fault).
//!
//! A check PASSes only on what it observed: a value read back from the VMM's
//! device, or the platform compared with what the command line announced.

use core::arch::asm;

use crate::acpi_checks;
use crate::bootinfo::BootInfo;
use crate::cpu::{self, cpuid, inb, outb, CPUID_1_ECX_HYPERVISOR};
use crate::phys;
use crate::serial::{println, Bytes};
use crate::smp;
use crate::virtio;

/// The boot-timer MMIO register and the value that stops the VMM's timer.
/// Reading 8 bytes there returns the recorded boot time in µs (mercury).
const BOOT_TIMER_ADDR: u64 = 0xd000_0000;
const BOOT_TIMER_MAGIC: u8 = 123;
/// `cpuid`: the BSP's local APIC ID register (bits 31:24).
const LAPIC_ID_REG: u64 = 0xfee0_0020;
/// `serial`: COM1's registers (DLAB clear) and the bits the check uses.
const COM1_DATA: u16 = 0x3f8;
const COM1_MCR: u16 = 0x3fc;
const COM1_LSR: u16 = 0x3fd;
const COM1_SCR: u16 = 0x3ff;
const MCR_LOOPBACK: u8 = 1 << 4;
const LSR_DATA_READY: u8 = 1 << 0;
/// LSR: transmit holding register empty | transmitter idle.
const LSR_TX_IDLE: u8 = (1 << 5) | (1 << 6);
/// `serial`: values written to, and read back from, the scratch register.
const SCRATCH_PATTERNS: [u8; 2] = [0x5a, 0xa5];
/// `serial`: bytes sent through the UART in loopback mode (fits its FIFO).
const LOOPBACK_TOKEN: &[u8] = b"mercury";
/// `serial`: most bytes read out of the receive FIFO before or after the
/// loopback transfer (more than a 16550's or vm-superio's FIFO holds).
const RX_DRAIN_LIMIT: usize = 256;
/// `heartbeat`: interval between lines, in µs of TSC time.
const HEARTBEAT_US: u64 = 200_000;

/// Runs every requested check in order.
pub fn run_all(boot: &BootInfo) {
    for name in crate::cmdline::requested(boot.cmdline()) {
        run(name, boot);
    }
}

fn run(name: &[u8], boot: &BootInfo) {
    match name {
        b"serial" => serial(),
        b"memory" => memory(boot),
        b"smp" => smp::check(),
        b"cpuid" => cpuid_check(),
        b"timer" => timer(),
        b"acpi" => acpi_checks::acpi(boot, false),
        b"acpi-scan" => acpi_checks::acpi(boot, true),
        b"poweroff" => acpi_checks::poweroff(boot),
        b"pvpanic" => acpi_checks::pvpanic(),
        b"power-button" => acpi_checks::power_button(boot),
        b"compute" => compute(),
        b"triple-fault" => triple_fault(),
        b"heartbeat" => heartbeat(),
        b"halt" => cpu::halt_forever(),
        b"virtio-acpi" => virtio::check_acpi(boot),
        b"virtio-rng" | b"virtio-blk" | b"virtio-blk-ro" | b"virtio-net" | b"virtio-vsock"
        | b"virtio-attack" => virtio_check(name, boot),
        _ => println!("CHECK {} FAIL unknown-check", Bytes(name)),
    }
}

/// The virtio device checks, on the devices found by the route the
/// command line picks (`virtio_route=acpi`, else `virtio_mmio.device=`).
fn virtio_check(name: &[u8], boot: &BootInfo) {
    let found = match virtio::devices(boot) {
        Ok(found) => found,
        Err(why) => {
            println!("CHECK {} FAIL {why}", Bytes(name));
            return;
        }
    };
    match name {
        b"virtio-rng" => virtio::rng::check(&found),
        b"virtio-blk" => virtio::blk::check(&found),
        b"virtio-blk-ro" => virtio::blk::check_read_only(&found),
        b"virtio-net" => virtio::net::check(&found),
        b"virtio-attack" => virtio::attack::check(&found, boot.ram_bytes.unwrap_or(0)),
        _ => virtio::vsock::check(&found, boot.cmdline()),
    }
}

/// COM1 as the guest can observe it without host help: the scratch register
/// keeps what was written, the transmitter reports idle, and in loopback mode
/// (MCR bit 4) the bytes written come back through the receive FIFO, in
/// order, and nothing more. Host input already queued (e.g. mercury's stdin)
/// is read out and counted first; in loopback mode no new input arrives.
fn serial() {
    let mut scratch = [0u8; SCRATCH_PATTERNS.len()];
    for (seen, &pattern) in scratch.iter_mut().zip(&SCRATCH_PATTERNS) {
        outb(COM1_SCR, pattern);
        *seen = inb(COM1_SCR);
    }
    let lsr = inb(COM1_LSR);

    // Nothing may be printed while in loopback mode: it would come back as
    // input instead of reaching the host.
    let mcr = inb(COM1_MCR);
    outb(COM1_MCR, mcr | MCR_LOOPBACK);
    let mut discarded = 0;
    while discarded < RX_DRAIN_LIMIT && inb(COM1_LSR) & LSR_DATA_READY != 0 {
        inb(COM1_DATA);
        discarded += 1;
    }
    for &byte in LOOPBACK_TOKEN {
        outb(COM1_DATA, byte);
    }
    let mut echo = [0u8; LOOPBACK_TOKEN.len()];
    let mut echoed = 0;
    while echoed < RX_DRAIN_LIMIT && inb(COM1_LSR) & LSR_DATA_READY != 0 {
        let byte = inb(COM1_DATA);
        if let Some(slot) = echo.get_mut(echoed) {
            *slot = byte;
        }
        echoed += 1;
    }
    outb(COM1_MCR, mcr);

    let echo = &echo[..echoed.min(echo.len())];
    let verdict = if scratch == SCRATCH_PATTERNS
        && lsr & LSR_TX_IDLE == LSR_TX_IDLE
        && echoed == LOOPBACK_TOKEN.len()
        && echo == LOOPBACK_TOKEN
    {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "CHECK serial {verdict} scratch={:02x},{:02x} lsr={lsr:#04x} loopback={} loopback_bytes={echoed} rx_discarded={discarded}",
        scratch[0],
        scratch[1],
        Bytes(echo)
    );
}

/// Total RAM from the memory map, rounded to the nearest MiB, against the
/// `expect_mib=<n>` the command line announced (the last one wins).
fn memory(boot: &BootInfo) {
    let announced = crate::cmdline::expect_mib(boot.cmdline());
    let expected = announced.map(parse_decimal);
    let mib = match boot.ram_bytes {
        Some(bytes) if bytes > 0 => (bytes + (1 << 19)) >> 20,
        _ => {
            let expect = Bytes(announced.unwrap_or(b"none"));
            println!("CHECK memory FAIL no-memory-map expect_mib={expect}");
            return;
        }
    };
    match (announced, expected) {
        (Some(_), Some(Some(expected))) if expected == mib => {
            println!("CHECK memory PASS mib={mib} expect_mib={expected}")
        }
        (Some(_), Some(Some(expected))) => {
            println!("CHECK memory FAIL mib={mib} expect_mib={expected} reason=mismatch")
        }
        (Some(raw), _) => println!(
            "CHECK memory FAIL mib={mib} expect_mib={} reason=bad-expect_mib",
            Bytes(raw)
        ),
        (None, _) => println!(
            "CHECK memory FAIL mib={mib} expect_mib=none reason=no-expected-size-announced"
        ),
    }
}

/// A decimal number of at most 18 digits, or `None`.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// APIC ID, hypervisor bit and KVM signature as the BSP sees them; the CPUID
/// APIC ID must be the local APIC's own (the VMM's per-vCPU CPUID).
fn cpuid_check() {
    let leaf1 = cpuid(1, 0);
    let apic_id = leaf1.ebx >> 24;
    // SAFETY: the local APIC ID register, read-only.
    let lapic_id = unsafe { phys::mmio_read32(LAPIC_ID_REG) } >> 24;
    let hypervisor = leaf1.ecx & CPUID_1_ECX_HYPERVISOR != 0;
    let kvm = cpu::is_kvm();
    let verdict = if hypervisor && apic_id == lapic_id {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "CHECK cpuid {verdict} apic_id={apic_id} lapic_id={lapic_id} hypervisor={} kvm={}",
        u8::from(hypervisor),
        u8::from(kvm)
    );
}

/// Tells the VMM's boot timer that the guest is up, and reads back what it
/// recorded: PASS only for a nonzero value. The write comes first, so the
/// recorded time is not delayed by the read (benches boot with `checks=timer`).
fn timer() {
    // SAFETY: the boot-timer register in the MMIO gap (mapped uncached); the
    // write has no effect on guest memory. Without the device it is ignored.
    unsafe { phys::mmio_write8(BOOT_TIMER_ADDR, BOOT_TIMER_MAGIC) };
    // SAFETY: the same register; its read has no side effect. Without the
    // device it returns whatever the VMM gives (then the check FAILs).
    let recorded = unsafe { phys::mmio_read64(BOOT_TIMER_ADDR) };
    let verdict = if recorded != 0 { "PASS" } else { "FAIL" };
    println!("CHECK timer {verdict} boot_timer_us={recorded}");
}

/// Deterministic integer work with known answers ([`crate::compute`]).
fn compute() {
    let c = crate::compute::run();
    let verdict = if c.ok() { "PASS" } else { "FAIL" };
    println!(
        "CHECK compute {verdict} primes={} fnv1a={:016x}",
        c.primes, c.fnv1a
    );
}

/// Announces itself, then triple-faults: with an empty IDT (limit 0) the
/// #UD from `ud2` cannot be delivered (#GP), nor can that (#DF), so the CPU
/// shuts down and the VMM sees KVM_EXIT_SHUTDOWN. There is no PASS line: the
/// guest cannot observe its own shutdown, the VMM's exit reason is the
/// result. Should execution ever continue past the fault, the check FAILs.
fn triple_fault() {
    println!("TEST-GUEST TRIPLE-FAULT about to fault (lidt limit 0, ud2)");
    let empty_idt = [0u16; 5];
    // SAFETY: deliberately ends the VM; the IDT is left empty only if the
    // CPU somehow runs on, and then nothing can take an exception anyway.
    unsafe {
        asm!("cli", "lidt [{}]", "ud2", in(reg) empty_idt.as_ptr(), options(nostack));
    }
    println!("CHECK triple-fault FAIL survived");
}

/// Prints `HEARTBEAT <n>` (n = 1, 2, ...) about every 0.2 s, forever.
fn heartbeat() -> ! {
    let mut beat: u64 = 1;
    loop {
        println!("HEARTBEAT {beat}");
        beat += 1;
        cpu::delay_us(HEARTBEAT_US);
    }
}
