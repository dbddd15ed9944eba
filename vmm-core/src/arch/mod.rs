//! Architecture-specific code behind one small interface.
//!
//! Shared code calls `arch::*` and never `cfg`s on the architecture in the
//! middle of a function. Each architecture module provides the same items
//! with the same signatures:
//!
//! - types: `ArchError`, `BootProtocol`, `KernelImage` (with `entry` and
//!   `protocol`), `InitrdRegion`, `VcpuTemplate` (what every vCPU is
//!   configured from), `Machine` (what the boot structures describe);
//! - `layout`: the addresses shared code places devices at —
//!   `BOOT_TIMER_*`, `VIRTIO_*`, `SERIAL` + `SERIAL_IRQ`, `PVPANIC`, and
//!   the optional `I8042`, `ACPI_POWER`, `RTC` ([`PlatformDevice`]s) and
//!   `POWER_BUTTON` ([`PowerButtonDevice`]);
//! - the boot steps, in the order the builder calls them:
//!   `memory_regions`, `check_guest_fits`, `load_kernel`, `load_initrd`,
//!   `virtio_cmdline`, `load_cmdline`, `setup_vm` (before vCPUs exist),
//!   `vcpu_template`, `configure_vcpu`, `setup_machine` (after every vCPU
//!   is configured: the arm64 GIC), `configure_system` (boot structures:
//!   zero page, MP table and ACPI on x86; the FDT on arm64);
//! - exit reporting: `faulting_instruction`, `shutdown_state`.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
#[cfg(target_arch = "x86_64")]
pub(crate) use self::x86_64::*;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::{ArchError, BootProtocol};

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
#[cfg(target_arch = "aarch64")]
pub(crate) use self::aarch64::*;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::{ArchError, BootProtocol};

/// The bus a platform device sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// arm64 has no I/O ports; x86 puts none of its platform devices on MMIO.
#[allow(dead_code)]
pub(crate) enum BusKind {
    /// x86 I/O ports.
    Pio,
    /// Memory-mapped I/O.
    Mmio,
}

/// The device a machine's power button is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Each architecture uses one of them.
#[allow(dead_code)]
pub(crate) enum PowerButtonKind {
    /// x86_64: the ACPI Generic Event Device (`devices::acpi_ged`).
    AcpiGed,
    /// arm64: line 3 of a PL061 GPIO controller under `gpio-keys`.
    Pl061,
}

/// The power button's device: which one, where, and its interrupt line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PowerButtonDevice {
    pub(crate) kind: PowerButtonKind,
    pub(crate) at: PlatformDevice,
    pub(crate) irq: u32,
}

/// Where the architecture puts one of its platform devices (console UART,
/// RTC, pvpanic, ...): a bus and a range on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlatformDevice {
    /// Which bus.
    pub(crate) bus: BusKind,
    /// First port or address.
    pub(crate) base: u64,
    /// Size of the range.
    pub(crate) len: u64,
}
