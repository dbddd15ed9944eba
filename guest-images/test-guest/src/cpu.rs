//! Thin wrappers over the few privileged instructions the guest uses (port
//! I/O, CPUID, RDTSC, HLT) and TSC-based delays.
//!
//! Only plain integer instructions: this guest must also run where KVM
//! interprets CPL0 code (see the crate README).

use core::arch::asm;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

/// i8042 command port; writing [`I8042_RESET`] pulses the CPU reset line.
const I8042_COMMAND: u16 = 0x64;
/// i8042 "pulse output line 0" (system reset) command.
const I8042_RESET: u8 = 0xfe;
/// TSC frequency assumed when neither CPUID nor kvmclock reports it.
const DEFAULT_TSC_KHZ: u64 = 2_000_000;
/// CPUID leaf 1 ECX: running under a hypervisor.
pub const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// KVM's CPUID signature at leaf 0x40000000 (EBX, ECX, EDX).
const KVM_SIGNATURE: &[u8; 12] = b"KVMKVMKVM\0\0\0";
/// CPUID 0x40000001 EAX: kvmclock at MSR_KVM_SYSTEM_TIME_NEW.
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
/// kvmclock MSR: guest-physical address of a pvclock structure | enable bit.
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// Reads of the pvclock structure while waiting for KVM to fill it.
const PVCLOCK_POLLS: u32 = 1000;

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port reads touch no memory; the ports read here (COM1) have no
    // side effect that breaks Rust's guarantees.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port writes touch no guest memory (the platform has no DMA
    // devices driven through the ports this guest uses: COM1, i8042).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
}

/// Registers returned by CPUID.
#[derive(Clone, Copy, Debug)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID for `leaf`/`subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
    // SAFETY: CPUID only writes the four registers named here; RBX is
    // reserved by LLVM, so it is saved in a scratch register and swapped back.
    unsafe {
        asm!(
            "mov {rbx_save}, rbx",
            "cpuid",
            "xchg {rbx_save}, rbx",
            rbx_save = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    Cpuid {
        eax,
        ebx: ebx as u32,
        ecx,
        edx,
    }
}

/// Whether CPUID leaf 0x40000000 carries KVM's signature (only meaningful,
/// and only read, when the hypervisor bit is set).
pub fn is_kvm() -> bool {
    if cpuid(1, 0).ecx & CPUID_1_ECX_HYPERVISOR == 0 {
        return false;
    }
    let leaf = cpuid(0x4000_0000, 0);
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    signature[8..12].copy_from_slice(&leaf.edx.to_le_bytes());
    &signature == KVM_SIGNATURE
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` must not break the running environment
/// (paging, segmentation, memory written by the hypervisor).
unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only writes EDX:EAX.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Stops this CPU for good: interrupts off, HLT forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI/HLT only stop this CPU; nothing runs after them.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Resets the machine through the i8042 (the VMM turns this into a clean
/// exit); halts if the reset did not happen.
pub fn reset() -> ! {
    outb(I8042_COMMAND, I8042_RESET);
    halt_forever()
}

/// Cached result of [`tsc_khz`] (0 = not computed yet).
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// TSC frequency in kHz, as reported by CPUID (leaf 0x15, the hypervisor
/// timing leaf 0x40000010, leaf 0x16) or KVM's kvmclock, else
/// [`DEFAULT_TSC_KHZ`]. Delays only need to be roughly right.
pub fn tsc_khz() -> u64 {
    let cached = TSC_KHZ.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let khz = tsc_khz_from_cpuid()
        .or_else(tsc_khz_from_kvmclock)
        .unwrap_or(DEFAULT_TSC_KHZ);
    TSC_KHZ.store(khz, Ordering::Relaxed);
    khz
}

fn tsc_khz_from_cpuid() -> Option<u64> {
    let max_leaf = cpuid(0, 0).eax;
    if max_leaf >= 0x15 {
        let leaf = cpuid(0x15, 0);
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            return Some(u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax) / 1000);
        }
    }
    let hypervisor = cpuid(1, 0).ecx & CPUID_1_ECX_HYPERVISOR != 0;
    if hypervisor && cpuid(0x4000_0000, 0).eax >= 0x4000_0010 {
        let khz = cpuid(0x4000_0010, 0).eax;
        if khz != 0 {
            return Some(u64::from(khz));
        }
    }
    if max_leaf >= 0x16 {
        let mhz = cpuid(0x16, 0).eax & 0xffff;
        if mhz != 0 {
            return Some(u64::from(mhz) * 1000);
        }
    }
    None
}

/// A `pvclock_vcpu_time_info` (32 bytes), written by KVM while kvmclock is on.
#[repr(C, align(32))]
struct PvClock(UnsafeCell<[u32; 8]>);

// SAFETY: only `tsc_khz_from_kvmclock` touches it, through volatile accesses,
// on the boot CPU, before any AP runs.
unsafe impl Sync for PvClock {}

static PVCLOCK: PvClock = PvClock(UnsafeCell::new([0; 8]));

/// The TSC frequency KVM advertises through kvmclock: enables it on
/// [`PVCLOCK`], reads `tsc_to_system_mul`/`tsc_shift` (ns = ticks << shift *
/// mul >> 32, as Linux's `pvclock_tsc_khz`), disables it again.
fn tsc_khz_from_kvmclock() -> Option<u64> {
    if !is_kvm() || cpuid(0x4000_0001, 0).eax & KVM_FEATURE_CLOCKSOURCE2 == 0 {
        return None;
    }
    let words = PVCLOCK.0.get().cast::<u32>();
    // SAFETY: kvmclock is advertised; KVM writes 32 bytes at the (aligned,
    // identity-mapped) address of PVCLOCK, which nothing else uses.
    unsafe { wrmsr(MSR_KVM_SYSTEM_TIME_NEW, words as u64 | 1) };
    let mut fields = None;
    for _ in 0..PVCLOCK_POLLS {
        // SAFETY: reads inside PVCLOCK; volatile because KVM writes it.
        let (version, mul, shift) = unsafe {
            (
                ptr::read_volatile(words),
                ptr::read_volatile(words.add(6)),
                ptr::read_volatile(words.add(7)),
            )
        };
        if version != 0 && version % 2 == 0 && mul != 0 {
            fields = Some((mul, shift as u8 as i8));
            break;
        }
    }
    // SAFETY: disabling kvmclock stops KVM's writes to PVCLOCK.
    unsafe { wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0) };
    let (mul, shift) = fields?;
    let khz = (1_000_000u64 << 32) / u64::from(mul);
    let khz = if shift < 0 {
        khz << -shift
    } else {
        khz >> shift
    };
    (khz != 0).then_some(khz)
}

/// TSC reads in a row returning one value after which the TSC is taken as
/// stopped and a [`Deadline`] as expired (so no wait can hang on a dead TSC).
const TSC_STUCK_POLLS: u32 = 10_000;

/// A point in the future, measured with the TSC.
pub struct Deadline {
    end_tsc: u64,
    last_tsc: u64,
    stuck_polls: u32,
}

impl Deadline {
    /// Expires `us` microseconds from now (by the estimated TSC frequency).
    pub fn after_us(us: u64) -> Self {
        let ticks = us.saturating_mul(tsc_khz()) / 1000;
        let now = rdtsc();
        Deadline {
            end_tsc: now.saturating_add(ticks),
            last_tsc: now,
            stuck_polls: 0,
        }
    }

    /// Whether the deadline has passed, or the TSC has stopped advancing.
    pub fn expired(&mut self) -> bool {
        let now = rdtsc();
        if now == self.last_tsc {
            self.stuck_polls += 1;
            return self.stuck_polls >= TSC_STUCK_POLLS;
        }
        self.last_tsc = now;
        self.stuck_polls = 0;
        now >= self.end_tsc
    }
}

/// Busy-waits about `us` microseconds of TSC time.
pub fn delay_us(us: u64) {
    let mut deadline = Deadline::after_us(us);
    while !deadline.expired() {}
}
