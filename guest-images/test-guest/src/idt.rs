//! A 64-bit IDT for the 32 CPU exceptions, so that an unexpected fault (a
//! VMM bug: bad memory map, missing page, emulation gap) ends the run with a
//! `TEST-GUEST PANIC exception ...` line instead of a silent triple fault.
//! Interrupts stay disabled: there are no IRQ vectors.

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;

use crate::cpu;
use crate::entry::SEL_CODE64;
use crate::serial::println;

/// Number of exception vectors (0..=31).
const EXCEPTIONS: usize = 32;
/// Distance between the stubs in `exception_stubs`.
const STUB_SIZE: u64 = 16;
/// Gate attributes: present, DPL 0, 64-bit interrupt gate.
const INTERRUPT_GATE: u64 = 0x8e;
/// Page fault vector (CR2 holds the faulting address).
const PAGE_FAULT: u64 = 14;

global_asm!(
    // One 16-byte stub per vector: push a zero error code where the CPU
    // pushes none, push the vector, join the common path.
    ".section .text.exceptions, \"ax\"",
    ".balign 16",
    ".globl exception_stubs",
    "exception_stubs:",
    ".set vector, 0",
    ".rept {exceptions}",
    ".balign {stub_size}",
    ".if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)",
    ".else",
    "    pushq $0",
    ".endif",
    "    pushq $vector",
    "    jmp exception_common",
    ".set vector, vector + 1",
    ".endr",
    "exception_common:",
    "    movq %rsp, %rdi",                // -> [vector, error, rip, cs, rflags, rsp, ss]
    "    andq $-16, %rsp",
    "    call {handler}",
    "1:  cli",
    "    hlt",
    "    jmp 1b",
    ".text",
    exceptions = const EXCEPTIONS,
    stub_size = const STUB_SIZE,
    handler = sym exception,
    options(att_syntax)
);

extern "C" {
    /// First of the [`EXCEPTIONS`] stubs, [`STUB_SIZE`] bytes apart.
    static exception_stubs: u8;
}

/// The IDT: two u64 per gate.
#[repr(C, align(16))]
struct Idt(UnsafeCell<[u64; 2 * EXCEPTIONS]>);

// SAFETY: written once by `install` on the boot CPU before `lidt`; the APs
// never load it.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([0; 2 * EXCEPTIONS]));

/// Fills the IDT with the exception stubs and loads it.
pub fn install() {
    let stubs = core::ptr::addr_of!(exception_stubs) as u64;
    let gates = IDT.0.get().cast::<u64>();
    for vector in 0..EXCEPTIONS {
        let handler = stubs + vector as u64 * STUB_SIZE;
        let low = (handler & 0xffff)
            | u64::from(SEL_CODE64) << 16
            | INTERRUPT_GATE << 40
            | (handler >> 16 & 0xffff) << 48;
        let high = handler >> 32;
        // SAFETY: in bounds of IDT; only this function writes it, on the
        // boot CPU, before the IDT is loaded.
        unsafe {
            gates.add(2 * vector).write_volatile(low);
            gates.add(2 * vector + 1).write_volatile(high);
        }
    }
    let mut pointer = [0u16; 5];
    pointer[0] = (2 * EXCEPTIONS * 8 - 1) as u16;
    let base = gates as u64;
    pointer[1] = base as u16;
    pointer[2] = (base >> 16) as u16;
    pointer[3] = (base >> 32) as u16;
    pointer[4] = (base >> 48) as u16;
    // SAFETY: the IDT is complete and its gates point to the stubs above,
    // which never return to the faulting code.
    unsafe { asm!("lidt [{}]", in(reg) pointer.as_ptr(), options(nostack, readonly)) };
}

/// Reports an exception and resets. `frame` is what the stub and the CPU
/// pushed: vector, error code, RIP, CS, RFLAGS, RSP, SS.
extern "C" fn exception(frame: *const u64) -> ! {
    // SAFETY: `exception_common` passes the stack pointer at which the stub
    // pushed the vector and error code above the CPU's 5-word frame.
    let (vector, error, rip) = unsafe { (*frame, *frame.add(1), *frame.add(2)) };
    if vector == PAGE_FAULT {
        let cr2: u64;
        // SAFETY: reading CR2 has no side effect.
        unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
        println!("TEST-GUEST PANIC exception {vector} error={error:#x} rip={rip:#x} cr2={cr2:#x}");
    } else {
        println!("TEST-GUEST PANIC exception {vector} error={error:#x} rip={rip:#x}");
    }
    cpu::reset()
}
