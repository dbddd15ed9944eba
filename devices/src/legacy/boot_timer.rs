//! The boot timer: the guest writes a magic byte when it has booted, and the
//! VMM records how long that took (as Firecracker's boot timer device).
//!
//! Lifecycle: `BootTimer::new(origin)` with the instant the VMM started
//! (before the VM is built) → `vmm-core` keeps a [`BootTimerHandle`] and places
//! the device on the MMIO bus → the guest (its init, or the test guest) writes
//! [`BOOT_TIMER_MAGIC`] at offset 0 → the first such write fixes the boot time,
//! read through the handle; later writes are only logged.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use log::{debug, info};

use super::LogLimiter;
use crate::BusDevice;

/// The byte the guest writes at offset 0 to say it has booted.
pub const BOOT_TIMER_MAGIC: u8 = 123;

/// The boot timer device on the MMIO bus.
///
/// Only one-byte writes of [`BOOT_TIMER_MAGIC`] at offset 0 count; every
/// other write is ignored. Reads return zeros.
pub struct BootTimer {
    origin: Instant,
    boot_time: Arc<OnceLock<Duration>>,
    later_magic_writes: LogLimiter,
    ignored_accesses: LogLimiter,
}

/// A cheap, shareable view of a [`BootTimer`]'s result.
#[derive(Clone, Debug)]
pub struct BootTimerHandle(Arc<OnceLock<Duration>>);

impl BootTimer {
    /// Creates a boot timer measuring from `origin`.
    pub fn new(origin: Instant) -> Self {
        BootTimer {
            origin,
            boot_time: Arc::new(OnceLock::new()),
            later_magic_writes: LogLimiter::default(),
            ignored_accesses: LogLimiter::default(),
        }
    }

    /// A handle through which the boot time can be read from any thread.
    pub fn handle(&self) -> BootTimerHandle {
        BootTimerHandle(self.boot_time.clone())
    }

    fn record(&self) {
        let elapsed = Instant::now().saturating_duration_since(self.origin);
        if self.boot_time.set(elapsed).is_ok() {
            info!(
                "guest boot time: {} us ({} ms)",
                elapsed.as_micros(),
                elapsed.as_millis()
            );
        } else if let Some(count) = self.later_magic_writes.hit() {
            debug!(
                "boot timer: magic written again at {} us, not recorded ({count} later writes)",
                elapsed.as_micros()
            );
        }
    }
}

impl BootTimerHandle {
    /// Time from the origin to the guest's first magic write, once it has
    /// happened.
    pub fn get(&self) -> Option<Duration> {
        self.0.get().copied()
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (0, &[BOOT_TIMER_MAGIC]) = (offset, data) {
            self.record();
        } else if let Some(count) = self.ignored_accesses.hit() {
            debug!(
                "boot timer: ignored write of {} bytes at offset {offset:#x} ({count} so far)",
                data.len()
            );
        }
    }
}

impl fmt::Debug for BootTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootTimer")
            .field("origin", &self.origin)
            .field("boot_time", &self.boot_time.get())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_magic_write_is_recorded_from_origin() {
        let origin = Instant::now()
            .checked_sub(Duration::from_millis(20))
            .unwrap_or_else(Instant::now);
        let mut timer = BootTimer::new(origin);
        let handle = timer.handle();
        assert_eq!(handle.get(), None);

        let before = origin.elapsed();
        timer.write(0, &[BOOT_TIMER_MAGIC]);
        let after = origin.elapsed();
        let recorded = handle.get().unwrap();
        assert!(before <= recorded && recorded <= after);
    }

    #[test]
    fn later_magic_writes_do_not_change_the_record() {
        let mut timer = BootTimer::new(Instant::now());
        let handle = timer.handle();
        timer.write(0, &[BOOT_TIMER_MAGIC]);
        let first = handle.get().unwrap();
        for _ in 0..10 {
            timer.write(0, &[BOOT_TIMER_MAGIC]);
        }
        assert_eq!(handle.get(), Some(first));
        // Clones see the same value from another thread.
        let clone = handle.clone();
        let seen = std::thread::spawn(move || clone.get()).join().unwrap();
        assert_eq!(seen, Some(first));
    }

    #[test]
    fn wrong_value_offset_or_length_is_ignored() {
        let mut timer = BootTimer::new(Instant::now());
        let handle = timer.handle();
        timer.write(0, &[BOOT_TIMER_MAGIC + 1]);
        timer.write(0, &[0]);
        timer.write(1, &[BOOT_TIMER_MAGIC]);
        timer.write(0xfff, &[BOOT_TIMER_MAGIC]);
        timer.write(u64::MAX, &[BOOT_TIMER_MAGIC]);
        timer.write(0, &[]);
        timer.write(0, &[BOOT_TIMER_MAGIC, 0]);
        timer.write(0, &[BOOT_TIMER_MAGIC, 0, 0, 0]);
        assert_eq!(handle.get(), None);
    }

    #[test]
    fn reads_return_zeros() {
        let mut timer = BootTimer::new(Instant::now());
        timer.write(0, &[BOOT_TIMER_MAGIC]);
        for (offset, len) in [(0, 1), (0, 4), (0, 8), (3, 2), (u64::MAX, 1), (0, 0)] {
            let mut data = vec![0xaa; len];
            timer.read(offset, &mut data);
            assert!(data.iter().all(|&b| b == 0));
        }
    }
}
