//! mercury's `#![no_std]` test guest, x86_64 (below) and aarch64
//! (`src/arch/aarch64`, built for `aarch64-unknown-none`).
//!
//! Entered through PVH or the Linux 64-bit boot protocol (`entry.rs`), it
//! reports over COM1 what it observed, one line per check (`checks.rs`), then
//! resets through the i8042. The output format is the contract with the
//! VMM's tests; see README.md.

#![no_std]
#![no_main]

/// Gives each item it wraps `#[cfg(target_arch = "x86_64")]`.
macro_rules! x86_64_only {
    ($($item:item)*) => {
        $(#[cfg(target_arch = "x86_64")] $item)*
    };
}

mod arch;
// Shared by both architectures.
mod cmdline;
mod compute;
mod report;

// The x86_64 guest's modules; the aarch64 guest lives in src/arch/aarch64.
x86_64_only! {
    mod acpi;
    mod acpi_checks;
    mod bootinfo;
    mod checks;
    mod cpu;
    mod entry;
    mod idt;
    mod mptable;
    mod paging;
    mod phys;
    mod serial;
    mod smp;
    mod virtio;

    use core::panic::PanicInfo;

    use bootinfo::BootInfo;
    use serial::{println, Bytes};
}

#[cfg(target_arch = "x86_64")]
/// Called by `entry.rs` in long mode, on our stack, GDT and page tables.
extern "C" fn rust_start(protocol: u32, info_addr: u64) -> ! {
    idt::install();
    // SAFETY: the entry stubs pass the protocol they were entered through
    // and the boot-structure address the VMM gave in RSI (Linux) or EBX
    // (PVH); VMMs place these structures in low RAM, outside this image.
    let boot = unsafe { BootInfo::read(protocol, info_addr) };
    main(&boot)
}

#[cfg(target_arch = "x86_64")]
fn main(boot: &BootInfo) -> ! {
    println!(
        "TEST-GUEST START protocol={} cmdline={}",
        boot.protocol.name(),
        Bytes(boot.cmdline())
    );
    checks::run_all(boot);
    println!("TEST-GUEST END");
    cpu::reset()
}

#[cfg(target_arch = "x86_64")]
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("{}", report::PanicLine(info));
    cpu::reset()
}
