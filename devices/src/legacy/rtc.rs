//! The PL031 real-time clock (vm-superio's model) as a bus device, for
//! arm64 guests: Linux's `rtc-pl031` driver reads the wall-clock time from
//! it at boot.
//!
//! The PL031's registers are 32 bits wide and word-aligned; other accesses
//! (a guest bug, or a hostile guest) read as zeros and are ignored, so the
//! model never sees them.

use std::fmt;

use log::debug;

use super::LogLimiter;
use crate::BusDevice;

/// The RTC: 4 KiB of registers, of which the PL031 decodes the first 32
/// bytes and its ID registers at the end of the page.
#[derive(Default)]
pub struct Rtc {
    inner: vm_superio::Rtc<vm_superio::rtc_pl031::NoEvents>,
    ignored_accesses: LogLimiter,
}

impl Rtc {
    /// A clock counting from the host's current time.
    pub fn new() -> Rtc {
        Rtc::default()
    }

    /// The register offset of a 4-byte, word-aligned access, if it is one.
    fn word(&self, offset: u64, len: usize) -> Option<u16> {
        let word = u16::try_from(offset)
            .ok()
            .filter(|o| o % 4 == 0 && len == 4);
        if word.is_none() {
            if let Some(count) = self.ignored_accesses.hit() {
                debug!("rtc: ignoring {len}-byte access at offset {offset:#x} ({count} so far)");
            }
        }
        word
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.word(offset, data.len()) {
            Some(offset) => {
                let mut word = [0u8; 4];
                self.inner.read(offset, &mut word);
                data.copy_from_slice(&word);
            }
            None => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(offset), Ok(word)) = (self.word(offset, data.len()), <[u8; 4]>::try_from(data))
        {
            self.inner.write(offset, &word);
        }
    }
}

impl fmt::Debug for Rtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rtc")
            .field("ignored_accesses", &self.ignored_accesses.count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RTCDR, the data register: seconds since the epoch.
    const RTCDR: u64 = 0x0;
    /// RTCLR, the load register.
    const RTCLR: u64 = 0x8;
    /// PeriphID0 (0x31 for a PL031).
    const PERIPH_ID0: u64 = 0xfe0;

    fn read_word(rtc: &mut Rtc, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        rtc.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn reads_the_host_time_and_its_id() {
        let mut rtc = Rtc::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let read = u64::from(read_word(&mut rtc, RTCDR));
        assert!(read.abs_diff(now) <= 2, "rtc {read}, host {now}");
        assert_eq!(read_word(&mut rtc, PERIPH_ID0), 0x31);
    }

    #[test]
    fn a_load_sets_the_time() {
        let mut rtc = Rtc::new();
        rtc.write(RTCLR, &1000u32.to_le_bytes());
        let read = read_word(&mut rtc, RTCDR);
        assert!((1000..1003).contains(&read), "{read}");
    }

    #[test]
    fn odd_accesses_read_zero_and_change_nothing() {
        let mut rtc = Rtc::new();
        let mut byte = [0xffu8; 1];
        rtc.read(PERIPH_ID0, &mut byte);
        assert_eq!(byte, [0]);
        let mut misaligned = [0xffu8; 4];
        rtc.read(PERIPH_ID0 + 2, &mut misaligned);
        assert_eq!(misaligned, [0; 4]);
        rtc.write(RTCLR, &[1, 2]);
        rtc.write(u64::MAX - 3, &[0; 4]);
        assert!(read_word(&mut rtc, RTCDR) > 1000);
        assert_eq!(format!("{rtc:?}"), "Rtc { ignored_accesses: 4, .. }");
    }
}
