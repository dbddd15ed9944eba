//! mercury's `#![no_std]` test guest, x86_64 (below) and aarch64
//! (`src/arch/aarch64`, built for `aarch64-unknown-none`).
//!
//! Entered through PVH or the Linux 64-bit boot protocol (`entry.rs`), it
//! reports over COM1 what it observed, one line per check (`checks.rs`), then
//! resets through the i8042. The output format is the contract with the
//! VMM's tests; see README.md.

#![no_std]
#![no_main]

// The x86_64 guest's modules; the aarch64 guest lives in src/arch/aarch64.
#[cfg(target_arch = "x86_64")]
mod acpi;
#[cfg(target_arch = "x86_64")]
mod acpi_checks;
mod arch;
#[cfg(target_arch = "x86_64")]
mod bootinfo;
#[cfg(target_arch = "x86_64")]
mod checks;
#[cfg(target_arch = "x86_64")]
mod cpu;
#[cfg(target_arch = "x86_64")]
mod entry;
#[cfg(target_arch = "x86_64")]
mod idt;
#[cfg(target_arch = "x86_64")]
mod mptable;
#[cfg(target_arch = "x86_64")]
mod paging;
#[cfg(target_arch = "x86_64")]
mod phys;
#[cfg(target_arch = "x86_64")]
mod serial;
#[cfg(target_arch = "x86_64")]
mod smp;
#[cfg(target_arch = "x86_64")]
mod virtio;

#[cfg(target_arch = "x86_64")]
use core::panic::PanicInfo;

#[cfg(target_arch = "x86_64")]
use bootinfo::BootInfo;
#[cfg(target_arch = "x86_64")]
use serial::{println, Bytes};

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
    match info.location() {
        Some(at) => println!(
            "TEST-GUEST PANIC {} at {}:{}",
            info.message(),
            at.file(),
            at.line()
        ),
        None => println!("TEST-GUEST PANIC {}", info.message()),
    }
    cpu::reset()
}
