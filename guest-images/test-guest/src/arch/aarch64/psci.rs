//! PSCI calls (SMC Calling Convention) through the conduit the FDT's
//! `/psci` node names (`method = "hvc"` or `"smc"`; hvc without one).

use core::arch::asm;

use super::fdt::{self, Fdt};

/// PSCI 0.2+ function ids (32-bit calls, and the 64-bit CPU_ON and
/// AFFINITY_INFO).
pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const CPU_OFF: u32 = 0x8400_0002;
pub const CPU_ON_64: u32 = 0xc400_0003;
pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
/// AFFINITY_INFO's answer for a CPU that is off.
pub const AFFINITY_OFF: i64 = 1;
pub const SYSTEM_OFF: u32 = 0x8400_0008;

/// How PSCI is called.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

impl Conduit {
    /// From `/psci`'s `method` (hvc when absent: what KVM answers).
    pub fn from_fdt(fdt: &Fdt) -> Conduit {
        let method = fdt
            .root()
            .and_then(|root| fdt.child(root, b"psci"))
            .and_then(|psci| fdt.prop(psci, b"method"));
        match method.map(fdt::text) {
            Some(b"smc") => Conduit::Smc,
            _ => Conduit::Hvc,
        }
    }

    /// The conduit's name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Conduit::Hvc => "hvc",
            Conduit::Smc => "smc",
        }
    }

    /// Calls `function` with up to three arguments; returns x0.
    pub fn call(self, function: u32, a1: u64, a2: u64, a3: u64) -> i64 {
        let mut x0 = u64::from(function);
        // SAFETY: a PSCI call goes to the hypervisor (or firmware) and
        // returns with x0 holding the result; SMCCC 1.0 lets it clobber
        // x0-x17, all declared here. The calls made (VERSION, CPU_ON with
        // this image's entry point, CPU_OFF, SYSTEM_OFF/RESET) touch no
        // memory of this program.
        unsafe {
            match self {
                Conduit::Hvc => asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _,
                    inout("x2") a2 => _, inout("x3") a3 => _, clobber_abi("C")),
                Conduit::Smc => asm!("smc #0", inout("x0") x0, inout("x1") a1 => _,
                    inout("x2") a2 => _, inout("x3") a3 => _, clobber_abi("C")),
            }
        }
        x0 as i64
    }
}
