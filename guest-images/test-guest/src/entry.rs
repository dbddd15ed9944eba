//! Boot entry points and the early environment (GDT, stack, .bss).
//!
//! Two ways in, one way on:
//! - `linux64_entry` (0x100200): Linux 64-bit boot protocol. Long mode with the
//!   VMM's page tables, RSI = zero page. Used by the ELF without PVH note and by
//!   the bzImage (load address + 0x200).
//! - `pvh_entry` (`.text.pvh`, advertised by the `XEN_ELFNOTE_PHYS32_ENTRY`
//!   note): 32-bit protected mode, paging off, EBX = `hvm_start_info`. Enables
//!   PAE, EFER.LME and paging itself.
//!
//! Both zero .bss, load our GDT and our page tables (`paging.rs`), switch to
//! our stack and call `rust_start(protocol, boot_info_address)`.

use core::arch::global_asm;

/// `rust_start` protocol argument: entered through PVH.
pub const PROTOCOL_PVH: u32 = 1;
/// `rust_start` protocol argument: entered through the Linux 64-bit protocol.
pub const PROTOCOL_LINUX64: u32 = 2;

/// Xen ELF note type carrying the 32-bit physical PVH entry address.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Size of the boot CPU's stack (in .bss).
const STACK_SIZE: usize = 32 * 1024;

/// Selector of the flat 64-bit code segment in [`GDT`].
pub const SEL_CODE64: u16 = 0x08;
/// Selector of the flat data segment in [`GDT`].
pub const SEL_DATA: u16 = 0x10;
/// Selector of the flat 32-bit code segment in [`GDT`] (PVH and AP start-up).
pub const SEL_CODE32: u16 = 0x18;

/// Our GDT: null, flat 64-bit code, flat data, flat 32-bit code. Accessed
/// bits are preset so the CPU never writes to it.
#[repr(C, align(16))]
pub struct Gdt(pub [u64; 4]);

/// The only GDT, shared by the BSP (both entry paths) and the APs.
pub static GDT: Gdt = Gdt([
    0,
    0x00af_9b00_0000_ffff, // 0x08: code, 64-bit (L), DPL0
    0x00cf_9300_0000_ffff, // 0x10: data, 4 GiB, writable
    0x00cf_9b00_0000_ffff, // 0x18: code, 32-bit (D), 4 GiB
]);

/// `lgdt` limit of [`GDT`].
pub const GDT_LIMIT: u16 = (core::mem::size_of::<Gdt>() - 1) as u16;

global_asm!(
    // 0x100000: code32_start of the bzImage. The 32-bit Linux boot protocol
    // is not supported; park the CPU rather than run into the note below.
    ".section .text.entry32, \"ax\"",
    ".code32",
    ".globl linux32_entry",
    "linux32_entry:",
    "    cli",
    "1:  hlt",
    "    jmp 1b",

    // PVH ELF note. An 8-byte descriptor as Linux emits it on x86_64:
    // linux-loader reads its low 4 bytes, QEMU reads a native word.
    ".section .note.Xen, \"a\", @note",
    ".balign 4",
    "    .long 4",
    "    .long 8",
    "    .long {note_type}",
    "    .asciz \"Xen\"",
    "    .balign 4",
    "    .quad pvh_entry",

    // 0x100200: Linux 64-bit boot protocol entry.
    ".section .text.entry64, \"ax\"",
    ".code64",
    ".globl linux64_entry",
    "linux64_entry:",
    "    cli",
    "    cld",
    "    movq %rsi, %rbx",                 // zero page, kept across the bss clear
    "    movl $__bss_start, %edi",
    "    movl $__bss_end, %ecx",
    "    subl %edi, %ecx",
    "    shrl $3, %ecx",
    "    xorl %eax, %eax",
    "    rep stosq",
    "    leaq boot_gdt_ptr(%rip), %rax",
    "    lgdt (%rax)",
    "    movl $boot_pml4, %eax",
    "    movq %rax, %cr3",
    "    leaq boot_stack_top(%rip), %rsp",
    "    pushq ${code64}",                  // reload CS from our GDT
    "    leaq 2f(%rip), %rax",
    "    pushq %rax",
    "    lretq",
    "2:  movl ${data}, %eax",
    "    movl %eax, %ds",
    "    movl %eax, %es",
    "    movl %eax, %ss",
    "    movl %eax, %fs",
    "    movl %eax, %gs",
    "    movl ${linux64}, %edi",
    "    movq %rbx, %rsi",
    "    jmp long_mode_start",

    // PVH entry: 32-bit protected mode, paging off, EBX = hvm_start_info.
    ".section .text.pvh, \"ax\"",
    ".code32",
    ".globl pvh_entry",
    "pvh_entry:",
    "    cli",
    "    cld",
    "    movl %ebx, %esi",                 // hvm_start_info, kept across the bss clear
    "    movl $__bss_start, %edi",
    "    movl $__bss_end, %ecx",
    "    subl %edi, %ecx",
    "    shrl $2, %ecx",
    "    xorl %eax, %eax",
    "    rep stosl",
    "    lgdt boot_gdt_ptr",
    "    movl $boot_pml4, %eax",
    "    movl %eax, %cr3",
    "    movl %cr4, %eax",
    "    orl $0x20, %eax",                 // CR4.PAE
    "    movl %eax, %cr4",
    "    movl $0xc0000080, %ecx",          // IA32_EFER
    "    rdmsr",
    "    orl $0x100, %eax",                // EFER.LME
    "    wrmsr",
    "    movl %cr0, %eax",
    "    orl $0x80000001, %eax",           // CR0.PG | CR0.PE
    "    movl %eax, %cr0",
    "    ljmpl ${code64}, $3f",
    ".code64",
    "3:  movl ${data}, %eax",
    "    movl %eax, %ds",
    "    movl %eax, %es",
    "    movl %eax, %ss",
    "    movl %eax, %fs",
    "    movl %eax, %gs",
    "    leaq boot_stack_top(%rip), %rsp",
    "    movl ${pvh}, %edi",
    "    movl %esi, %esi",                 // upper halves are undefined after the mode switch
    "    jmp long_mode_start",

    // Common: 64-bit, our GDT, page tables and stack.
    "long_mode_start:",
    "    xorl %ebp, %ebp",
    "    call {rust_start}",
    "4:  cli",
    "    hlt",
    "    jmp 4b",

    // lgdt operand: 10 bytes in long mode; the 32-bit form reads the first 6.
    ".section .rodata.gdt_ptr, \"a\"",
    ".balign 16",
    ".globl boot_gdt_ptr",
    "boot_gdt_ptr:",
    "    .word {gdt_limit}",
    "    .quad {gdt}",

    ".section .bss.boot_stack, \"aw\", @nobits",
    ".balign 16",
    "    .skip {stack_size}",
    "boot_stack_top:",
    ".text",
    note_type = const XEN_ELFNOTE_PHYS32_ENTRY,
    gdt_limit = const GDT_LIMIT,
    gdt = sym GDT,
    code64 = const SEL_CODE64,
    data = const SEL_DATA,
    linux64 = const PROTOCOL_LINUX64,
    pvh = const PROTOCOL_PVH,
    rust_start = sym crate::rust_start,
    stack_size = const STACK_SIZE,
    options(att_syntax)
);
