//! The `smp` check: start every AP listed in the MP table with INIT-SIPI-SIPI
//! and collect what each one reports.
//!
//! AP path (no Rust code, no stack): real mode at 0x8000 (SIPI vector 0x08),
//! `lgdt` our GDT, protected mode, far jump into `ap_protected_entry` in the
//! image (flat 32-bit, paging off). There it reads its local APIC ID
//! (0xfee00020 bits 31:24) and CPUID.1 EBX[31:24], stores the latter in
//! `AP_CPUID_IDS[lapic_id]`, sets bit `lapic_id` of `AP_STARTED` with
//! `lock bts`, and halts (cli; hlt). The BSP polls the bitmap with a bounded
//! wait.

use core::arch::global_asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::cpu::{self, Deadline};
use crate::entry::{GDT, GDT_LIMIT, SEL_CODE32, SEL_DATA};
use crate::mptable::{self, MAX_CPUS};
use crate::phys;
use crate::serial::{println, CommaList};

/// Where the real-mode trampoline is copied; SIPI vector = page number.
const TRAMPOLINE_ADDR: u64 = 0x8000;
const SIPI_VECTOR: u32 = (TRAMPOLINE_ADDR >> 12) as u32;
/// Local APIC registers (xAPIC MMIO).
const LAPIC_BASE: u64 = 0xfee0_0000;
const LAPIC_ID: u64 = LAPIC_BASE + 0x20;
const LAPIC_SVR: u64 = LAPIC_BASE + 0xf0;
const LAPIC_ICR_LOW: u64 = LAPIC_BASE + 0x300;
const LAPIC_ICR_HIGH: u64 = LAPIC_BASE + 0x310;
/// SVR: APIC software enable, spurious vector 0xff.
const SVR_ENABLE: u32 = 0x1ff;
/// ICR: INIT, level triggered, assert / de-assert.
const ICR_INIT_ASSERT: u32 = 0x0000_c500;
const ICR_INIT_DEASSERT: u32 = 0x0000_8500;
/// ICR: Start-up IPI (the vector goes in bits 7:0).
const ICR_STARTUP: u32 = 0x0000_0600;
/// ICR: delivery status (send pending).
const ICR_SEND_PENDING: u32 = 1 << 12;
/// Delays of the universal start-up algorithm (MP spec B.4), in µs.
const INIT_DELAY_US: u64 = 10_000;
const SIPI_DELAY_US: u64 = 200;
/// How long the BSP waits for all APs, in µs of TSC time.
const AP_WAIT_US: u64 = 3_000_000;

/// Bit n set: the AP with local APIC ID n reached protected mode.
static AP_STARTED: [AtomicU32; MAX_CPUS / 32] = [const { AtomicU32::new(0) }; MAX_CPUS / 32];
/// `AP_CPUID_IDS[n]`: CPUID.1 EBX[31:24] seen by the AP with local APIC ID n.
static AP_CPUID_IDS: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

extern "C" {
    /// Start of the real-mode trampoline (position independent, copied).
    static ap_trampoline_start: u8;
    /// End of the real-mode trampoline.
    static ap_trampoline_end: u8;
}

global_asm!(
    // Real mode, CS = 0x0800, IP = 0; addresses are absolute below 64 KiB
    // with DS = 0. Copied to TRAMPOLINE_ADDR, so only label differences are
    // used inside it.
    ".section .rodata.ap_trampoline, \"a\"",
    ".code16",
    ".globl ap_trampoline_start",
    "ap_trampoline_start:",
    "    cli",
    "    cld",
    "    xorw %ax, %ax",
    "    movw %ax, %ds",
    "    lgdtl ({base} + ap_trampoline_gdt_ptr - ap_trampoline_start)",
    "    movl %cr0, %eax",
    "    orl $1, %eax",                   // CR0.PE
    "    movl %eax, %cr0",
    "    ljmpl ${code32}, $ap_protected_entry",
    ".balign 8",
    "ap_trampoline_gdt_ptr:",
    "    .word {gdt_limit}",
    "    .long {gdt}",
    ".globl ap_trampoline_end",
    "ap_trampoline_end:",
    ".code64",

    // Flat 32-bit protected mode, paging off, no stack.
    ".section .text.ap, \"ax\"",
    ".code32",
    "ap_protected_entry:",
    "    movl ${data}, %eax",
    "    movl %eax, %ds",
    "    movl %eax, %es",
    "    movl %eax, %ss",
    "    movl ({lapic_id}), %esi",
    "    shrl $24, %esi",                 // local APIC ID
    "    movl $1, %eax",
    "    xorl %ecx, %ecx",
    "    cpuid",
    "    shrl $24, %ebx",                 // CPUID initial APIC ID
    "    movb %bl, {cpuid_ids}(%esi)",
    "    lock btsl %esi, {started}",      // publish last (locked: full barrier)
    "1:  cli",
    "    hlt",
    "    jmp 1b",
    ".code64",
    ".text",
    base = const TRAMPOLINE_ADDR,
    code32 = const SEL_CODE32,
    data = const SEL_DATA,
    gdt_limit = const GDT_LIMIT,
    gdt = sym GDT,
    lapic_id = const LAPIC_ID,
    cpuid_ids = sym AP_CPUID_IDS,
    started = sym AP_STARTED,
    options(att_syntax)
);

/// Runs the `smp` check and prints its line.
pub fn check() {
    let cpus = match mptable::read_cpus() {
        Ok(cpus) => cpus,
        Err(err) => {
            println!("CHECK smp FAIL {}", err.reason());
            return;
        }
    };
    let expected = cpus.apic_ids();
    // SAFETY: the local APIC ID register, read-only.
    let bsp_id = (unsafe { phys::mmio_read32(LAPIC_ID) } >> 24) as u8;

    for word in &AP_STARTED {
        word.store(0, Ordering::SeqCst);
    }
    copy_trampoline();
    // SAFETY: software-enable our local APIC (needed to send IPIs reliably).
    unsafe { phys::mmio_write32(LAPIC_SVR, SVR_ENABLE) };
    for &apic_id in expected.iter().filter(|&&id| id != bsp_id) {
        start_ap(apic_id);
    }
    let all_started = wait_for_aps(expected, bsp_id);

    // Report: the BSP plus every AP that checked in, ascending APIC IDs.
    let mut seen = [0u8; MAX_CPUS];
    let mut count = 0;
    let mut mismatch = None;
    for id in 0..MAX_CPUS {
        let id = id as u8;
        if id == bsp_id || ap_started(id) {
            seen[count] = id;
            count += 1;
        }
        if id != bsp_id && ap_started(id) && mismatch.is_none() {
            let cpuid_id = AP_CPUID_IDS[usize::from(id)].load(Ordering::SeqCst);
            if cpuid_id != id {
                mismatch = Some((id, cpuid_id));
            }
        }
    }
    let mut reason = Reason::new();
    if !expected.contains(&bsp_id) {
        let _ = write!(reason, "bsp-not-in-mptable({bsp_id})");
    } else if cpus.bsp_apic_id != Some(bsp_id) {
        let _ = write!(reason, "bsp-flag-mismatch");
    } else if let Some((lapic, cpuid_id)) = mismatch {
        let _ = write!(
            reason,
            "cpuid-apic-id-mismatch(lapic={lapic},cpuid={cpuid_id})"
        );
    } else if !all_started {
        let _ = write!(reason, "timeout");
    } else if count != expected.len() {
        let _ = write!(reason, "unexpected-cpus");
    }
    let ids = CommaList(&seen[..count]);
    if reason.is_empty() {
        println!(
            "CHECK smp PASS cpus={count} expected={} apic_ids={ids}",
            expected.len()
        );
    } else {
        println!(
            "CHECK smp FAIL cpus={count} expected={} apic_ids={ids} reason={}",
            expected.len(),
            reason.as_str()
        );
    }
}

/// Copies the real-mode trampoline to [`TRAMPOLINE_ADDR`].
fn copy_trampoline() {
    let start = core::ptr::addr_of!(ap_trampoline_start);
    let end = core::ptr::addr_of!(ap_trampoline_end);
    let len = end as usize - start as usize;
    // SAFETY: `start..end` is the trampoline's code in this image's .rodata.
    let code = unsafe { core::slice::from_raw_parts(start, len) };
    // SAFETY: 0x8000 is the VMM's boot-stack page, which this guest left at
    // entry; no boot structure is read after `bootinfo` copied it out, and
    // the MP table lives at 0x9fc00.
    unsafe { phys::copy_to(TRAMPOLINE_ADDR, code) };
}

/// INIT, then two start-up IPIs, to the AP with local APIC ID `apic_id`.
fn start_ap(apic_id: u8) {
    send_ipi(apic_id, ICR_INIT_ASSERT);
    send_ipi(apic_id, ICR_INIT_DEASSERT);
    cpu::delay_us(INIT_DELAY_US);
    for _ in 0..2 {
        send_ipi(apic_id, ICR_STARTUP | SIPI_VECTOR);
        cpu::delay_us(SIPI_DELAY_US);
    }
}

/// Writes the ICR for `apic_id` and waits (bounded) for delivery.
fn send_ipi(apic_id: u8, command: u32) {
    // SAFETY: ICR writes to our own local APIC; they only start or reset
    // other CPUs, which run the trampoline code and touch only the AP_* statics.
    unsafe {
        phys::mmio_write32(LAPIC_ICR_HIGH, u32::from(apic_id) << 24);
        phys::mmio_write32(LAPIC_ICR_LOW, command);
    }
    let mut deadline = Deadline::after_us(SIPI_DELAY_US);
    // SAFETY: reading the ICR has no side effect.
    while unsafe { phys::mmio_read32(LAPIC_ICR_LOW) } & ICR_SEND_PENDING != 0 {
        if deadline.expired() {
            break;
        }
    }
}

/// Waits until every AP in `expected` has checked in; false on timeout.
fn wait_for_aps(expected: &[u8], bsp_id: u8) -> bool {
    let mut deadline = Deadline::after_us(AP_WAIT_US);
    loop {
        if expected.iter().all(|&id| id == bsp_id || ap_started(id)) {
            return true;
        }
        if deadline.expired() {
            return false;
        }
    }
}

fn ap_started(apic_id: u8) -> bool {
    let word = AP_STARTED[usize::from(apic_id / 32)].load(Ordering::SeqCst);
    word & (1 << (apic_id % 32)) != 0
}

/// A short failure reason, formatted without allocation.
struct Reason {
    buf: [u8; 64],
    len: usize,
}

impl Reason {
    fn new() -> Self {
        Reason {
            buf: [0; 64],
            len: 0,
        }
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl Write for Reason {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
