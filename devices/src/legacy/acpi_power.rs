//! The power-control register of a hardware-reduced ACPI platform: the
//! FADT's sleep control, sleep status and reset registers, all on one byte-wide
//! I/O port (the layout Cloud Hypervisor uses).
//!
//! A hardware-reduced platform has no PM1 event/control blocks; the OS powers
//! off by writing `SLP_TYP | SLP_EN` to the sleep control register, with
//! `SLP_TYP` taken from the DSDT's `\_S5_` package, and resets by writing the
//! FADT's reset value to the reset register.
//!
//! Lifecycle: `AcpiPowerControl::new()` → `vmm-core` places it on the PIO
//! bus at the port its FADT names, describes [`SLEEP_TYPE_S5`](AcpiPowerControl::SLEEP_TYPE_S5)
//! and [`RESET_VALUE`](AcpiPowerControl::RESET_VALUE) to the guest, and
//! watches [`poweroff_evt`](AcpiPowerControl::poweroff_evt) and
//! [`reset_evt`](AcpiPowerControl::reset_evt) in its event loop → the guest
//! (Linux `poweroff`, `reboot=a`) writes the register → the matching
//! `EventFd` is signalled and `vmm-core` ends the VM.

use std::fmt;
use std::io;

use log::{debug, info, warn};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use super::{EventFdTrigger, LogLimiter};
use crate::BusDevice;

/// `SLP_EN`: the write starts the transition to the sleep state in `SLP_TYP`.
const SLEEP_ENABLE: u8 = 1 << 5;
/// Position of the 3-bit `SLP_TYP` field.
const SLEEP_TYPE_SHIFT: u8 = 2;
/// Mask of `SLP_TYP` once shifted down.
const SLEEP_TYPE_MASK: u8 = 0b111;

/// The sleep control / sleep status / reset register (one I/O port).
///
/// Writes at offset 0 of one byte: [`RESET_VALUE`](Self::RESET_VALUE)
/// signals the reset event; `SLP_EN` (bit 5) with `SLP_TYP` (bits 2..=4) equal
/// to [`SLEEP_TYPE_S5`](Self::SLEEP_TYPE_S5) signals the power-off event;
/// other sleep types are refused (logged); anything else (such as clearing
/// `WAK_STS`, bit 7, which the OS does before sleeping) is ignored. Reads
/// return 0: the sleep status register's `WAK_STS` is never set, since the
/// machine never wakes from a sleep state.
pub struct AcpiPowerControl {
    poweroff: EventFdTrigger,
    reset: EventFdTrigger,
    unsupported_sleeps: LogLimiter,
    ignored_accesses: LogLimiter,
}

impl AcpiPowerControl {
    /// The value the FADT tells the guest to write to the reset register.
    pub const RESET_VALUE: u8 = 1;
    /// `SLP_TYP` of the soft-off state S5, as the DSDT's `\_S5_` package
    /// gives it to the guest.
    pub const SLEEP_TYPE_S5: u8 = 5;

    /// Creates the register with new power-off and reset `EventFd`s.
    pub fn new() -> io::Result<Self> {
        Ok(AcpiPowerControl {
            poweroff: EventFdTrigger::new()?,
            reset: EventFdTrigger::new()?,
            unsupported_sleeps: LogLimiter::default(),
            ignored_accesses: LogLimiter::default(),
        })
    }

    /// Signalled (non-blocking `EventFd`) when the guest enters S5.
    pub fn poweroff_evt(&self) -> &EventFd {
        self.poweroff.event_fd()
    }

    /// Signalled (non-blocking `EventFd`) when the guest writes the reset
    /// value.
    pub fn reset_evt(&self) -> &EventFd {
        self.reset.event_fd()
    }

    fn write_register(&self, value: u8) {
        if value == Self::RESET_VALUE {
            info!("ACPI: guest requested a reset");
            signal(&self.reset, "reset");
            return;
        }
        if value & SLEEP_ENABLE == 0 {
            self.ignore("write", 0, 1);
            return;
        }
        match (value >> SLEEP_TYPE_SHIFT) & SLEEP_TYPE_MASK {
            Self::SLEEP_TYPE_S5 => {
                info!("ACPI: guest entered S5 (power off)");
                signal(&self.poweroff, "power-off");
            }
            other => {
                if let Some(count) = self.unsupported_sleeps.hit() {
                    warn!("ACPI: guest asked for sleep type {other}, only S5 (type 5) is supported ({count} so far)");
                }
            }
        }
    }

    fn ignore(&self, access: &str, offset: u64, len: usize) {
        if let Some(count) = self.ignored_accesses.hit() {
            debug!("ACPI power control: ignored {access} of {len} bytes at offset {offset:#x} ({count} so far)");
        }
    }
}

fn signal(trigger: &EventFdTrigger, what: &str) {
    if let Err(e) = trigger.trigger() {
        warn!("ACPI: cannot signal the {what} event: {e}");
    }
}

impl BusDevice for AcpiPowerControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset != 0 || data.len() != 1 {
            self.ignore("read", offset, data.len());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (0, &[value]) => self.write_register(value),
            _ => self.ignore("write", offset, data.len()),
        }
    }
}

impl fmt::Debug for AcpiPowerControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcpiPowerControl")
            .field("poweroff_evt", self.poweroff_evt())
            .field("reset_evt", self.reset_evt())
            .field("ignored_accesses", &self.ignored_accesses.count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signalled(evt: &EventFd) -> bool {
        match evt.read() {
            Ok(count) => count > 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("reading an eventfd: {e}"),
        }
    }

    /// (power-off signalled, reset signalled) after one write.
    fn after_write(offset: u64, data: &[u8]) -> (bool, bool) {
        let mut dev = AcpiPowerControl::new().unwrap();
        dev.write(offset, data);
        (signalled(dev.poweroff_evt()), signalled(dev.reset_evt()))
    }

    #[test]
    fn s5_with_sleep_enable_powers_off() {
        // What Linux writes: (SLP_TYP << 2) | SLP_EN = 0x34.
        assert_eq!(
            (AcpiPowerControl::SLEEP_TYPE_S5 << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE,
            0x34
        );
        assert_eq!(after_write(0, &[0x34]), (true, false));
        // Bits outside SLP_TYP and SLP_EN do not matter.
        assert_eq!(after_write(0, &[0x34 | 0x80 | 0x01 | 0x02]), (true, false));
    }

    #[test]
    fn reset_value_resets() {
        assert_eq!(
            after_write(0, &[AcpiPowerControl::RESET_VALUE]),
            (false, true)
        );
    }

    #[test]
    fn other_writes_are_ignored() {
        // S5 without SLP_EN, other sleep types, clearing WAK_STS.
        for value in [0x14, 0x20, 0x24, 0x30, 0x3c, 0x80, 0x00, !SLEEP_ENABLE] {
            assert_eq!(after_write(0, &[value]), (false, false), "value {value:#x}");
        }
        // Wrong offsets or sizes, even with the power-off value.
        for (offset, data) in [
            (1, &[0x34][..]),
            (0, &[0x34, 0]),
            (0, &[]),
            (u64::MAX, &[0x34]),
            (0, &[1, 0, 0, 0]),
        ] {
            assert_eq!(
                after_write(offset, data),
                (false, false),
                "offset {offset} data {data:?}"
            );
        }
    }

    #[test]
    fn reads_return_zero_for_any_offset_and_length() {
        let mut dev = AcpiPowerControl::new().unwrap();
        for offset in [0, 1, 0x1000, u64::MAX] {
            for len in [0, 1, 2, 4, 8] {
                let mut data = vec![0xaa; len];
                dev.read(offset, &mut data);
                assert!(data.iter().all(|&b| b == 0));
            }
        }
        assert!(!signalled(dev.poweroff_evt()));
        assert!(!signalled(dev.reset_evt()));
    }

    #[test]
    fn every_power_off_write_is_signalled() {
        let mut dev = AcpiPowerControl::new().unwrap();
        dev.write(0, &[0x34]);
        dev.write(0, &[0x34]);
        assert_eq!(dev.poweroff_evt().read().unwrap(), 2);
    }
}
