//! Entry points, in assembly: the arm64 Linux boot protocol's entry (the
//! Image header's first instruction), the secondary CPUs' entry (PSCI
//! CPU_ON), and the exception vectors.
//!
//! The image is a position-independent executable linked at 0
//! (`linker-aarch64.ld`): a VMM may load it at any 2 MiB-aligned address
//! (the header's flags say so). The boot CPU first applies the image's own
//! `R_AARCH64_RELATIVE` relocations for the address it runs at, clears
//! .bss and takes stack 0; nothing before that touches memory but the
//! relocation targets. The MMU stays off (as the boot protocol leaves it),
//! so every data access is Device memory: the target's `+strict-align`
//! keeps accesses aligned, and the guest uses no exclusive (atomic)
//! instructions.
//!
//! Boot protocol state at `primary_entry`: EL1 (or EL2), MMU off, x0 = the
//! FDT's physical address. At `secondary_entry` (PSCI CPU_ON): MMU off,
//! x0 = the context id the boot CPU passed, here the CPU's index (1..).

use core::arch::global_asm;

/// Bytes of stack per CPU (`linker-aarch64.ld` reserves [`super::MAX_CPUS`]).
pub const STACK_SIZE: usize = 0x4000;

extern "C" {
    /// The secondary CPUs' entry point, for PSCI CPU_ON.
    pub fn secondary_entry();
}

global_asm!(
    r#"
    // Points VBAR_EL1 at the vectors below (clobbers x1); every CPU does.
    .macro install_vectors
    adrp    x1, exception_vectors
    add     x1, x1, :lo12:exception_vectors
    msr     vbar_el1, x1
    isb
    .endm

    .section .text.head, "ax"
    .global _head
_head:
    // The arm64 Image header's code0/code1; the rest of the 64-byte header
    // (text_offset, image_size, flags, magic) is in linker-aarch64.ld.
    b       primary_entry
    .long   0

    .section .text.entry, "ax"
primary_entry:
    mov     x19, x0                     // the FDT
    adrp    x20, __image_start
    add     x20, x20, :lo12:__image_start   // where the image runs
    // FP/SIMD at EL1 (CPACR_EL1.FPEN = 0b11): compiled code may use it.
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    // Relocate: for each R_AARCH64_RELATIVE (type 1027, no symbol),
    // *(base + r_offset) = base + r_addend.
    adrp    x10, __rela_start
    add     x10, x10, :lo12:__rela_start
    adrp    x11, __rela_end
    add     x11, x11, :lo12:__rela_end
1:  cmp     x10, x11
    b.hs    2f
    ldp     x12, x13, [x10]
    ldr     x14, [x10, #16]
    add     x10, x10, #24
    cmp     x13, #1027
    b.ne    1b
    add     x14, x14, x20
    str     x14, [x20, x12]
    b       1b
    // Clear .bss.
2:  adrp    x10, __bss_start
    add     x10, x10, :lo12:__bss_start
    adrp    x11, __bss_end
    add     x11, x11, :lo12:__bss_end
3:  cmp     x10, x11
    b.hs    4f
    str     xzr, [x10], #8
    b       3b
    // Stack 0 (the stacks grow down from the end of each slot).
4:  adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, #{stack_size}
    mov     sp, x1
    install_vectors
    mov     x0, x19
    mov     x1, x20
    bl      aarch64_primary_main
5:  wfe
    b       5b

    .global secondary_entry
secondary_entry:
    mov     x19, x0                     // CPU index
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x19, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1
    mov     sp, x1
    install_vectors
    mov     x0, x19
    bl      aarch64_secondary_main
6:  wfe
    b       6b

    // 16 vectors of 128 bytes, 2 KiB aligned: each passes its number to
    // the common handler, which reports the exception and powers off.
    .section .text.vectors, "ax"
    .balign 2048
exception_vectors:
    .irp    n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    mov     x0, #\n
    b       exception_common
    .endr
exception_common:
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    bl      aarch64_exception
7:  wfe
    b       7b
"#,
    stack_size = const STACK_SIZE,
);
