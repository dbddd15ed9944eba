//! The checks named by `checks=a,b,c` on the command line, run in order,
//! each printing exactly one `CHECK <name> PASS|FAIL <detail>` line (except
//! `heartbeat` and `halt`, which never return, and `poweroff` and `pvpanic`,
//! which add a FAIL line if the VM survives their PASS line).

use core::arch::asm;
use core::hint::black_box;

use crate::acpi_checks;
use crate::bootinfo::BootInfo;
use crate::cpu::{self, cpuid, CPUID_1_ECX_HYPERVISOR};
use crate::phys;
use crate::serial::{println, Bytes};
use crate::smp;

/// Checks run when the command line has no `checks=`.
const DEFAULT_CHECKS: &[u8] = b"serial";
/// The boot-timer MMIO register and the value that stops the VMM's timer.
const BOOT_TIMER_ADDR: u64 = 0xd000_0000;
const BOOT_TIMER_MAGIC: u8 = 123;
/// `compute`: sieve bound and its expected prime count.
const SIEVE_LIMIT: usize = 4096;
const EXPECTED_PRIMES: u32 = 564;
/// `compute`: FNV-1a (64-bit) of the 1 KiB pattern `byte[i] = i * 7 + 3 (mod 256)`.
const HASH_LEN: usize = 1024;
const EXPECTED_FNV1A: u64 = 0x2288_1ee4_7abb_6b25;
/// `heartbeat`: interval between lines, in µs of TSC time.
const HEARTBEAT_US: u64 = 200_000;

/// The check names requested by `cmdline` (the last `checks=` wins).
pub fn requested(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    let list = cmdline
        .split(|b| b.is_ascii_whitespace())
        .filter_map(|word| word.strip_prefix(b"checks="))
        .next_back()
        .unwrap_or(DEFAULT_CHECKS);
    list.split(|&b| b == b',').filter(|name| !name.is_empty())
}

/// Runs every requested check in order.
pub fn run_all(boot: &BootInfo) {
    for name in requested(boot.cmdline()) {
        run(name, boot);
    }
}

fn run(name: &[u8], boot: &BootInfo) {
    match name {
        b"serial" => println!("CHECK serial PASS hello"),
        b"memory" => memory(boot),
        b"smp" => smp::check(),
        b"cpuid" => cpuid_check(),
        b"timer" => timer(),
        b"acpi" => acpi_checks::acpi(boot, false),
        b"acpi-scan" => acpi_checks::acpi(boot, true),
        b"poweroff" => acpi_checks::poweroff(boot),
        b"pvpanic" => acpi_checks::pvpanic(),
        b"compute" => compute(),
        b"triple-fault" => triple_fault(),
        b"heartbeat" => heartbeat(),
        b"halt" => cpu::halt_forever(),
        _ => println!("CHECK {} FAIL unknown-check", Bytes(name)),
    }
}

/// Total RAM from the memory map, rounded to the nearest MiB.
fn memory(boot: &BootInfo) {
    match boot.ram_bytes {
        Some(bytes) if bytes > 0 => {
            println!("CHECK memory PASS mib={}", (bytes + (1 << 19)) >> 20)
        }
        _ => println!("CHECK memory FAIL no-memory-map"),
    }
}

/// APIC ID, hypervisor bit and KVM signature as the BSP sees them.
fn cpuid_check() {
    let leaf1 = cpuid(1, 0);
    let apic_id = leaf1.ebx >> 24;
    let hypervisor = leaf1.ecx & CPUID_1_ECX_HYPERVISOR != 0;
    let kvm = cpu::is_kvm();
    let verdict = if hypervisor { "PASS" } else { "FAIL" };
    println!(
        "CHECK cpuid {verdict} apic_id={apic_id} hypervisor={} kvm={}",
        u8::from(hypervisor),
        u8::from(kvm)
    );
}

/// Tells the VMM's boot timer that the guest is up.
fn timer() {
    // SAFETY: the boot-timer register in the MMIO gap (mapped uncached); the
    // write has no effect on guest memory. Without the device it is ignored.
    unsafe { phys::mmio_write8(BOOT_TIMER_ADDR, BOOT_TIMER_MAGIC) };
    println!("CHECK timer PASS written");
}

/// Deterministic integer work with known answers.
fn compute() {
    let primes = count_primes(black_box(SIEVE_LIMIT));
    let hash = fnv1a_pattern(black_box(HASH_LEN));
    let verdict = if primes == EXPECTED_PRIMES && hash == EXPECTED_FNV1A {
        "PASS"
    } else {
        "FAIL"
    };
    println!("CHECK compute {verdict} primes={primes} fnv1a={hash:016x}");
}

/// Number of primes below `limit` (at most [`SIEVE_LIMIT`]), by sieve.
fn count_primes(limit: usize) -> u32 {
    let limit = limit.min(SIEVE_LIMIT);
    let mut composite = [false; SIEVE_LIMIT];
    let mut count = 0;
    for n in 2..limit {
        if composite[n] {
            continue;
        }
        count += 1;
        let mut multiple = n * n;
        while multiple < limit {
            composite[multiple] = true;
            multiple += n;
        }
    }
    count
}

/// FNV-1a (64-bit) of `len` bytes of the pattern `i * 7 + 3 (mod 256)`.
fn fnv1a_pattern(len: usize) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    (0..len).fold(OFFSET_BASIS, |hash, i| {
        let byte = (i as u8).wrapping_mul(7).wrapping_add(3);
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// Announces itself, then triple-faults: with an empty IDT (limit 0) the
/// #UD from `ud2` cannot be delivered (#GP), nor can that (#DF), so the CPU
/// shuts down and the VMM sees KVM_EXIT_SHUTDOWN.
fn triple_fault() -> ! {
    println!("CHECK triple-fault PASS faulting");
    let empty_idt = [0u16; 5];
    // SAFETY: deliberately ends the VM: nothing runs after the fault.
    unsafe {
        asm!("cli", "lidt [{}]", "ud2", in(reg) empty_idt.as_ptr(), options(noreturn, nostack));
    }
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
