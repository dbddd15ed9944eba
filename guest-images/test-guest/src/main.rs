//! mercury's `#![no_std]` x86_64 test guest.
//!
//! Entered through PVH or the Linux 64-bit boot protocol (`entry.rs`), it
//! reports over COM1 what it observed, one line per check (`checks.rs`), then
//! resets through the i8042. The output format is the contract with the
//! VMM's tests; see README.md.

#![no_std]
#![no_main]

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

/// Called by `entry.rs` in long mode, on our stack, GDT and page tables.
extern "C" fn rust_start(protocol: u32, info_addr: u64) -> ! {
    idt::install();
    // SAFETY: the entry stubs pass the protocol they were entered through
    // and the boot-structure address the VMM gave in RSI (Linux) or EBX
    // (PVH); VMMs place these structures in low RAM, outside this image.
    let boot = unsafe { BootInfo::read(protocol, info_addr) };
    main(&boot)
}

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
