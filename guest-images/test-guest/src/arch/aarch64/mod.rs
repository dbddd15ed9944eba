//! The aarch64 test guest: entered through the arm64 Linux boot protocol
//! (an `Image` with its 64-byte header, x0 = the FDT), it finds its console,
//! RAM, CPUs, PSCI conduit and boot timer in the FDT (nothing of the VMM's
//! layout is compiled in), runs the checks its command line (`/chosen`
//! `bootargs`) names with the x86 guest's line protocol, and powers off
//! through PSCI SYSTEM_OFF. See README.md, "aarch64".

mod checks;
mod entry;
mod fdt;
mod psci;
pub(crate) mod uart;

use core::arch::asm;
use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut};

use fdt::Fdt;
use psci::Conduit;
use uart::{println, Bytes, Uart};

/// CPUs the guest starts and has stacks for (`linker-aarch64.ld`).
pub const MAX_CPUS: usize = 8;

/// What the boot CPU learned from the FDT.
pub struct Boot {
    pub fdt: Fdt,
    pub conduit: Conduit,
    pub cmdline: &'static [u8],
    /// Where the image runs (its load address).
    pub base: usize,
}

/// The PSCI conduit, for the exception and panic paths and the secondaries
/// (hvc until the FDT says otherwise).
static mut CONDUIT: Conduit = Conduit::Hvc;

fn conduit() -> Conduit {
    // SAFETY: written once by the boot CPU before any secondary starts.
    unsafe { *addr_of!(CONDUIT) }
}

/// Called by `entry.rs` on the boot CPU, relocated, on stack 0.
#[no_mangle]
extern "C" fn aarch64_primary_main(fdt_addr: usize, base: usize) -> ! {
    // SAFETY: x0 at entry is the FDT's address (the boot protocol); the VMM
    // keeps it in RAM, untouched, while the guest runs. `from_addr` checks
    // the magic and the size before reading further.
    let Some(fdt) = (unsafe { Fdt::from_addr(fdt_addr) }) else {
        // No FDT: no console either. Power off so the VMM does not hang.
        power_off()
    };
    if let Some(uart) = Uart::from_fdt(&fdt) {
        uart::set_console(uart);
    }
    let conduit = Conduit::from_fdt(&fdt);
    // SAFETY: only the boot CPU runs here; secondaries start later.
    unsafe { *addr_of_mut!(CONDUIT) = conduit };
    let cmdline = fdt
        .root()
        .and_then(|root| fdt.child(root, b"chosen"))
        .and_then(|chosen| fdt.prop(chosen, b"bootargs"))
        .map_or(&b""[..], fdt::text);
    let boot = Boot {
        fdt,
        conduit,
        cmdline,
        base,
    };
    println!(
        "TEST-GUEST START protocol=arm64 base={:#x} fdt={fdt_addr:#x} cmdline={}",
        boot.base,
        Bytes(boot.cmdline)
    );
    checks::run_all(&boot);
    println!("TEST-GUEST END");
    power_off()
}

/// Called by `entry.rs` on a secondary CPU started by the `smp` check.
#[no_mangle]
extern "C" fn aarch64_secondary_main(index: usize) -> ! {
    checks::secondary_checkin(index, conduit())
}

/// Called by the exception vectors: reports the exception and powers off.
#[no_mangle]
extern "C" fn aarch64_exception(vector: u64, esr: u64, elr: u64, far: u64) -> ! {
    println!(
        "TEST-GUEST PANIC exception vector={vector} esr={esr:#x} elr={elr:#x} far={far:#x} mpidr={:#x}",
        checks::mpidr()
    );
    power_off()
}

/// PSCI SYSTEM_OFF; if the VMM ignores it, the CPU waits forever.
fn power_off() -> ! {
    conduit().call(psci::SYSTEM_OFF, 0, 0, 0);
    loop {
        // SAFETY: waits for an interrupt; no memory is touched.
        unsafe { asm!("wfi", options(nomem, nostack)) }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("{}", crate::report::PanicLine(info));
    power_off()
}
