//! Legacy devices: 8250 UART, i8042, boot timer, the PL031 RTC and the
//! PL061 GPIO controller with the power button (arm64), and
//! the two one-port devices behind ACPI power-off and panic reporting (the
//! hardware-reduced ACPI power-control register, pvpanic).
//!
//! Each device is a [`BusDevice`](crate::BusDevice) built on `vm-superio`
//! where a model exists there. Interrupt and reset lines are `EventFd`s that
//! `vmm-core` registers with KVM (irqfd) or watches in its event loop; the
//! devices themselves never see KVM.

mod acpi_power;
mod boot_timer;
mod i8042;
mod pl061;
mod pvpanic;
mod rtc;
mod serial;
mod serial_input;
mod trigger;

pub use acpi_power::AcpiPowerControl;
pub use boot_timer::{BootTimer, BootTimerHandle, BOOT_TIMER_MAGIC};
pub use i8042::I8042;
pub use pl061::Pl061;
pub use pvpanic::PvPanic;
pub use rtc::Rtc;
pub use serial::{Serial, SerialError, SerialStats};
pub use serial_input::{SerialInput, SerialInputSource};
pub use trigger::EventFdTrigger;

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts occurrences of one kind of noteworthy event (an ignored guest
/// access, a lost output byte) and says when to log it: on the 1st, 2nd, 4th,
/// 8th, ... occurrence. A guest hammering a register then costs a few dozen
/// log lines over its lifetime, not one per access.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter(AtomicU64);

impl LogLimiter {
    /// Records one occurrence; returns the running count when this one should
    /// be logged.
    pub(crate) fn hit(&self) -> Option<u64> {
        let count = self.0.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        count.is_power_of_two().then_some(count)
    }

    /// How many occurrences were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_logs_at_powers_of_two() {
        let limiter = LogLimiter::default();
        let logged: Vec<u64> = (0..20).filter_map(|_| limiter.hit()).collect();
        assert_eq!(logged, vec![1, 2, 4, 8, 16]);
        assert_eq!(limiter.count(), 20);
    }
}
