//! The boot timer: the guest writes a magic byte when it has booted, and the
//! VMM records how long that took (as Firecracker's boot timer device).
//!
//! Lifecycle: `BootTimer::new(origin)` with the instant the VMM started
//! (before the VM is built) → `vmm-core` keeps a [`BootTimerHandle`] and places
//! the device on the MMIO bus → the guest (its init, or the test guest) writes
//! [`BOOT_TIMER_MAGIC`] at offset 0 → the first such write fixes the boot time,
//! read through the handle; later writes are only logged.
//!
//! Writes are Firecracker's: only a one-byte write of the magic at offset 0
//! counts. Reads are mercury's addition, so a guest can see what the VMM
//! recorded: the 8 bytes at offsets 0..8 hold the boot time in whole
//! microseconds ([`Duration::as_micros`], the value `Vm::boot_time()` and
//! mercury's `boot_timer_us=` report), little-endian, and 0 until the first
//! magic write. A read of any width within 0..8 returns the matching bytes
//! of that value (e.g. a 4-byte read at offset 4 the high half); every other
//! byte of the page reads as 0.

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
/// other write is ignored. Reads at offsets 0..8 return the recorded boot
/// time in µs, little-endian (0 before it is recorded); other bytes read 0.
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

/// Size of the read-back register at offset 0: a little-endian `u64`.
const BOOT_TIME_REG_LEN: u64 = 8;

impl BusDevice for BootTimer {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let micros = self.boot_time.get().map_or(0, |d| {
            // Saturates after ~584 000 years of uptime.
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
        });
        let value = micros.to_le_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            // The register's byte at `offset + i`, or 0 outside it (no
            // overflow: an offset past the register reads 0).
            *byte = offset
                .checked_add(i as u64)
                .filter(|&at| at < BOOT_TIME_REG_LEN)
                .map_or(0, |at| value[at as usize]);
        }
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

    /// Reads `len` bytes at `offset`.
    fn read(timer: &mut BootTimer, offset: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0xaa; len];
        timer.read(offset, &mut data);
        data
    }

    #[test]
    fn reads_return_zero_before_the_magic_write() {
        let mut timer = BootTimer::new(Instant::now());
        for (offset, len) in [
            (0, 1),
            (0, 4),
            (4, 4),
            (0, 8),
            (3, 2),
            (8, 8),
            (u64::MAX, 1),
            (0, 0),
        ] {
            assert!(read(&mut timer, offset, len).iter().all(|&b| b == 0));
        }
        timer.write(0, &[BOOT_TIMER_MAGIC + 1]);
        assert_eq!(read(&mut timer, 0, 8), [0; 8]);
    }

    #[test]
    fn reads_return_the_recorded_micros_little_endian() {
        // An origin far enough back that the value needs more than 4 bytes:
        // 2^32 µs is ~72 minutes.
        let back = Duration::from_micros(0x1_2345_6789);
        // (Linux's `Instant` may lie before the clock's zero.)
        let origin = Instant::now()
            .checked_sub(back)
            .expect("an instant 72 minutes back");
        let mut timer = BootTimer::new(origin);
        let handle = timer.handle();
        timer.write(0, &[BOOT_TIMER_MAGIC]);
        let micros = u64::try_from(handle.get().unwrap().as_micros()).unwrap();
        assert!(micros >= 0x1_2345_6789, "{micros:#x}");
        let bytes = micros.to_le_bytes();

        assert_eq!(read(&mut timer, 0, 8), bytes);
        // 4 + 4, as a 32-bit guest reads it.
        let low = u32::from_le_bytes(read(&mut timer, 0, 4).try_into().unwrap());
        let high = u32::from_le_bytes(read(&mut timer, 4, 4).try_into().unwrap());
        assert_eq!(u64::from(high) << 32 | u64::from(low), micros);
        // Any slice of the register, zeros past its end.
        assert_eq!(read(&mut timer, 3, 2), bytes[3..5]);
        assert_eq!(read(&mut timer, 7, 1), [bytes[7]]);
        assert_eq!(read(&mut timer, 6, 4), [bytes[6], bytes[7], 0, 0]);
        assert_eq!(read(&mut timer, 8, 8), [0; 8]);
        assert_eq!(read(&mut timer, 0xff8, 8), [0; 8]);
        assert_eq!(read(&mut timer, u64::MAX, 2), [0; 2]);
        assert!(read(&mut timer, 0, 0).is_empty());

        // Later magic writes change nothing.
        timer.write(0, &[BOOT_TIMER_MAGIC]);
        assert_eq!(read(&mut timer, 0, 8), bytes);
    }
}
