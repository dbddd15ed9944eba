//! Address-keyed buses that route vCPU PIO and MMIO exits to devices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use devices::BusDevice;

/// A device shared between the bus and whoever else needs to reach it.
pub(crate) type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors of bus registration.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The new range overlaps one already registered.
    #[error("bus range {base:#x}+{len:#x} overlaps {other_base:#x}+{other_len:#x}")]
    Overlap {
        /// Base of the new range.
        base: u64,
        /// Length of the new range.
        len: u64,
        /// Base of the existing range.
        other_base: u64,
        /// Length of the existing range.
        other_len: u64,
    },
    /// A zero-length or wrapping range.
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    InvalidRange {
        /// Base of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
}

/// A bus: non-overlapping `[base, base + len)` ranges, each owned by a device.
#[derive(Clone, Default)]
pub(crate) struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    /// An empty bus.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Registers `device` at `[base, base + len)`.
    pub(crate) fn insert(
        &mut self,
        device: SharedDevice,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(BusError::InvalidRange { base, len });
        };
        // The closest range starting below `end` is the only one that can
        // overlap, since registered ranges never overlap each other.
        if let Some((&other_base, other)) = self.ranges.range(..end).next_back() {
            if other_base + other.len > base {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other_base,
                    other_len: other.len,
                });
            }
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// The device covering `addr` and the offset of `addr` in its range.
    fn resolve(&self, addr: u64) -> Option<(&SharedDevice, u64)> {
        let (&base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < entry.len).then_some((&entry.device, offset))
    }

    /// Dispatches a read; returns false when no device covers `addr`.
    pub(crate) fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((device, offset)) => {
                lock(device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when no device covers `addr`.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((device, offset)) => {
                lock(device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned lock: a device whose handler
/// panicked on another vCPU thread is still in a state the guest can reach,
/// and a panicking VMM would be worse.
fn lock(device: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatch_by_range_with_offsets() {
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        bus.insert(b.clone(), 0x60, 5).unwrap();

        let mut byte = [0u8; 1];
        assert!(bus.read(0x3fd, &mut byte));
        assert_eq!(byte, [5]);
        assert!(bus.write(0x64, &[0xfe]));
        assert_eq!(b.lock().unwrap().writes, vec![(4, vec![0xfe])]);
        assert!(a.lock().unwrap().writes.is_empty());

        // Just past either range, and below both.
        assert!(!bus.read(0x400, &mut byte));
        assert!(!bus.write(0x65, &[0]));
        assert!(!bus.read(0x10, &mut byte));
    }

    #[test]
    fn overlaps_rejected() {
        let d = || -> SharedDevice { Arc::new(Mutex::new(Recorder::default())) };
        let mut bus = Bus::new();
        bus.insert(d(), 0x100, 0x10).unwrap();
        for (base, len) in [(0x100, 1), (0xf8, 0x10), (0x10f, 4), (0x0, 0x1000)] {
            let e = bus.insert(d(), base, len).unwrap_err();
            assert!(
                matches!(
                    e,
                    BusError::Overlap {
                        other_base: 0x100,
                        ..
                    }
                ),
                "{base:#x}"
            );
        }
        // Adjacent ranges are fine.
        bus.insert(d(), 0xf0, 0x10).unwrap();
        bus.insert(d(), 0x110, 0x10).unwrap();
    }

    #[test]
    fn invalid_ranges_rejected() {
        let mut bus = Bus::new();
        let d: SharedDevice = Arc::new(Mutex::new(Recorder::default()));
        assert!(matches!(
            bus.insert(d.clone(), 0x10, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(d, u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
    }
}
