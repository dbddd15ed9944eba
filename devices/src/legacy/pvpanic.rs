//! pvpanic: a one-byte I/O port through which the guest tells the VMM that
//! its kernel panicked (QEMU's ISA pvpanic device, ACPI id "QEMU0001").
//!
//! Lifecycle: `PvPanic::new()` → `vmm-core` places it on the PIO bus,
//! describes it in the DSDT and watches [`PvPanic::panic_evt`] in its event
//! loop → the guest's driver reads the port to learn which events are
//! supported → on a panic (after printing the panic message) the guest writes
//! [`PvPanic::PANICKED`] → the `EventFd` is signalled and `vmm-core` ends the
//! VM with "guest kernel panicked".

use std::fmt;
use std::io;

use log::{debug, info, warn};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use super::{EventFdTrigger, LogLimiter};
use crate::BusDevice;

/// The pvpanic port.
///
/// One-byte reads at offset 0 return the supported events
/// ([`PANICKED`](Self::PANICKED) | [`CRASH_LOADED`](Self::CRASH_LOADED));
/// other reads return zeros. One-byte writes at offset 0 with `PANICKED` set
/// signal [`panic_evt`](Self::panic_evt); `CRASH_LOADED` alone (a crash kernel
/// is about to take over, so the guest goes on running) is only logged.
pub struct PvPanic {
    panicked: EventFdTrigger,
    /// Event writes: a guest may write the port in a loop, so only the 1st,
    /// 2nd, 4th, ... are logged, with the running count.
    reports: LogLimiter,
    ignored_accesses: LogLimiter,
}

impl PvPanic {
    /// Event bit: the guest kernel panicked.
    pub const PANICKED: u8 = 1 << 0;
    /// Event bit: the guest kernel panicked and a crash kernel is loaded.
    pub const CRASH_LOADED: u8 = 1 << 1;
    /// What a read of the port returns: the events this device understands.
    pub const SUPPORTED_EVENTS: u8 = Self::PANICKED | Self::CRASH_LOADED;

    /// Creates the device with a new panic `EventFd`.
    pub fn new() -> io::Result<Self> {
        Ok(PvPanic {
            panicked: EventFdTrigger::new()?,
            reports: LogLimiter::default(),
            ignored_accesses: LogLimiter::default(),
        })
    }

    /// Signalled (non-blocking `EventFd`) when the guest reports a panic.
    pub fn panic_evt(&self) -> &EventFd {
        self.panicked.event_fd()
    }

    fn write_events(&self, value: u8) {
        if value & Self::PANICKED != 0 {
            if let Some(count) = self.reports.hit() {
                warn!("pvpanic: guest kernel panicked (event {value:#04x}; report {count})");
            }
            if let Err(e) = self.panicked.trigger() {
                warn!("pvpanic: cannot signal the panic event: {e}");
            }
        } else if value & Self::CRASH_LOADED != 0 {
            if let Some(count) = self.reports.hit() {
                info!("pvpanic: guest kernel panicked with a crash kernel loaded (event {value:#04x}; report {count}); it keeps running");
            }
        } else {
            self.ignore("write", 0, 1);
        }
    }

    fn ignore(&self, access: &str, offset: u64, len: usize) {
        if let Some(count) = self.ignored_accesses.hit() {
            debug!(
                "pvpanic: ignored {access} of {len} bytes at offset {offset:#x} ({count} so far)"
            );
        }
    }
}

impl BusDevice for PvPanic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, &mut *data) {
            (0, [byte]) => *byte = Self::SUPPORTED_EVENTS,
            _ => {
                data.fill(0);
                self.ignore("read", offset, data.len());
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (0, &[value]) => self.write_events(value),
            _ => self.ignore("write", offset, data.len()),
        }
    }
}

impl fmt::Debug for PvPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PvPanic")
            .field("panic_evt", self.panic_evt())
            .field("reports", &self.reports.count())
            .field("ignored_accesses", &self.ignored_accesses.count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panicked(dev: &PvPanic) -> bool {
        match dev.panic_evt().read() {
            Ok(count) => count > 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("reading the panic eventfd: {e}"),
        }
    }

    #[test]
    fn read_returns_supported_events() {
        let mut dev = PvPanic::new().unwrap();
        let mut byte = [0u8];
        dev.read(0, &mut byte);
        assert_eq!(byte[0], 3);
    }

    #[test]
    fn other_reads_return_zeros() {
        let mut dev = PvPanic::new().unwrap();
        for (offset, len) in [(0, 0), (0, 2), (0, 4), (1, 1), (u64::MAX, 1)] {
            let mut data = vec![0xaa; len];
            dev.read(offset, &mut data);
            assert!(data.iter().all(|&b| b == 0), "offset {offset} len {len}");
        }
    }

    #[test]
    fn panicked_bit_signals_panic_evt() {
        for value in [
            PvPanic::PANICKED,
            PvPanic::PANICKED | PvPanic::CRASH_LOADED,
            0xff,
        ] {
            let mut dev = PvPanic::new().unwrap();
            dev.write(0, &[value]);
            assert!(panicked(&dev), "value {value:#x}");
            assert!(!panicked(&dev));
        }
    }

    #[test]
    fn crash_loaded_alone_and_other_writes_do_not_signal() {
        let mut dev = PvPanic::new().unwrap();
        dev.write(0, &[PvPanic::CRASH_LOADED]);
        dev.write(0, &[0]);
        dev.write(0, &[0x80]);
        dev.write(1, &[PvPanic::PANICKED]);
        dev.write(0, &[PvPanic::PANICKED, 0]);
        dev.write(0, &[]);
        dev.write(u64::MAX, &[PvPanic::PANICKED]);
        assert!(!panicked(&dev));
    }

    /// Log lines recorded per thread, so that tests running in parallel
    /// count only their own.
    mod capture {
        use std::sync::{Mutex, Once};
        use std::thread::{self, ThreadId};

        static LINES: Mutex<Vec<(ThreadId, String)>> = Mutex::new(Vec::new());

        struct Capture;

        impl log::Log for Capture {
            fn enabled(&self, _: &log::Metadata) -> bool {
                true
            }
            fn log(&self, record: &log::Record) {
                let line = format!("{} {}", record.level(), record.args());
                let mut lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
                lines.push((thread::current().id(), line));
            }
            fn flush(&self) {}
        }

        static CAPTURE: Capture = Capture;

        pub(super) fn install() {
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                log::set_logger(&CAPTURE).expect("no other logger in this test binary");
                log::set_max_level(log::LevelFilter::Trace);
            });
        }

        /// Lines this thread logged that contain `needle`.
        pub(super) fn lines_containing(needle: &str) -> usize {
            let me = thread::current().id();
            let lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
            lines
                .iter()
                .filter(|(thread, line)| *thread == me && line.contains(needle))
                .count()
        }
    }

    /// A guest writing the port in a loop cannot flood the log: of 1000
    /// reports, the 1st, 2nd, 4th ... 512th are logged (10 lines), yet every
    /// panic write still signals the event.
    #[test]
    fn repeated_reports_are_rate_limited() {
        capture::install();
        let mut dev = PvPanic::new().unwrap();
        for _ in 0..1000 {
            dev.write(0, &[PvPanic::PANICKED]);
        }
        assert_eq!(
            capture::lines_containing("guest kernel panicked (event"),
            10
        );
        assert_eq!(dev.panic_evt().read().unwrap(), 1000);
        for _ in 0..1000 {
            dev.write(0, &[PvPanic::CRASH_LOADED]);
        }
        // One limiter for both kinds: reports 1001..2000 hold one power of two.
        assert_eq!(capture::lines_containing("crash kernel loaded"), 1);
    }
}
