//! The ACPI Generic Event Device (GED, `ACPI0013`): how a hardware-reduced
//! ACPI platform, which has no GPE blocks and no SCI, raises ACPI events.
//! mercury raises one: the power button.
//!
//! ```text
//!  host: PowerButton::press()               guest (Linux evged + ACPI button)
//!    pending |= POWER_BUTTON  ──▶ irqfd ──▶ GED interrupt ──▶ \_SB_.GED_._EVT
//!                                           reads the event register (clears it)
//!                                           bit set → Notify(PWRB, 0x80)
//!                                           → KEY_POWER on the button's input device
//! ```
//!
//! Lifecycle: `AcpiGed::new()` → `vmm-core` places it on the MMIO bus,
//! registers [`AcpiGed::interrupt_evt`] as an irqfd and describes the GED,
//! its `_EVT` method and the power button (`PNP0C0C`) in the DSDT → a
//! [`PowerButton`] handle, which any thread may hold, presses the button.
//! What happens then is the guest's decision (its ACPI button driver turns
//! the notification into `KEY_POWER`; logind or acpid power it off).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use log::debug;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::legacy::{EventFdTrigger, LogLimiter};
use crate::power_button::Press;
use crate::{BusDevice, PowerButton};

/// The GED's register window.
///
/// One 32-bit register at offset 0, the pending events: a 4-byte read
/// returns them and clears them (what `_EVT` does once per interrupt).
/// Every other access (other offsets, other sizes, any write) reads zeros
/// or is dropped, and clears nothing.
pub struct AcpiGed {
    pending: Arc<AtomicU32>,
    interrupt: EventFdTrigger,
    ignored_accesses: LogLimiter,
}

/// What presses the power button of one [`AcpiGed`] (behind a
/// [`PowerButton`]).
struct GedPress {
    pending: Arc<AtomicU32>,
    interrupt: EventFdTrigger,
}

impl AcpiGed {
    /// Offset of the event register in the window.
    pub const EVENT_REGISTER: u64 = 0;
    /// Size in bytes of the event register (the DSDT's field is a DWord).
    pub const EVENT_REGISTER_SIZE: usize = 4;
    /// Event bit: the power button was pressed.
    pub const POWER_BUTTON: u32 = 1 << 0;
    /// The notification value `_EVT` sends to the power button device: 0x80
    /// is "button pressed" for `PNP0C0C` (ACPI 6.5, 4.8.3.1.1).
    pub const NOTIFY_PRESSED: u8 = 0x80;

    /// Creates the device with a new interrupt `EventFd`.
    pub fn new() -> io::Result<Self> {
        Ok(AcpiGed {
            pending: Arc::new(AtomicU32::new(0)),
            interrupt: EventFdTrigger::new()?,
            ignored_accesses: LogLimiter::default(),
        })
    }

    /// The interrupt line (edge): `vmm-core` registers it as an irqfd.
    pub fn interrupt_evt(&self) -> &EventFd {
        self.interrupt.event_fd()
    }

    /// A handle that presses this device's power button.
    pub fn power_button(&self) -> io::Result<PowerButton> {
        Ok(PowerButton::new(GedPress {
            pending: Arc::clone(&self.pending),
            interrupt: self.interrupt.try_clone()?,
        }))
    }

    fn ignore(&self, access: &str, offset: u64, len: usize) {
        if let Some(count) = self.ignored_accesses.hit() {
            debug!(
                "ACPI GED: ignored {access} of {len} bytes at offset {offset:#x} ({count} so far)"
            );
        }
    }
}

impl Press for GedPress {
    /// Records the event, then raises the GED's interrupt. Pressing again
    /// before the guest handled the first press raises the interrupt again;
    /// the guest sees one pending press.
    fn press(&self) -> io::Result<()> {
        self.pending
            .fetch_or(AcpiGed::POWER_BUTTON, Ordering::SeqCst);
        self.interrupt.trigger()
    }
}

impl BusDevice for AcpiGed {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == Self::EVENT_REGISTER && data.len() == Self::EVENT_REGISTER_SIZE {
            let events = self.pending.swap(0, Ordering::SeqCst);
            data.copy_from_slice(&events.to_le_bytes());
            if events != 0 {
                debug!("ACPI GED: guest read events {events:#x}");
            }
        } else {
            data.fill(0);
            self.ignore("read", offset, data.len());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.ignore("write", offset, data.len());
    }
}

impl fmt::Debug for AcpiGed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcpiGed")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .field("interrupt_evt", self.interrupt_evt())
            .field("ignored_accesses", &self.ignored_accesses.count())
            .finish()
    }
}

impl fmt::Debug for GedPress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GedPress")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many interrupts were raised since the last call.
    fn interrupts(ged: &AcpiGed) -> u64 {
        match ged.interrupt_evt().read() {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("reading the interrupt eventfd: {e}"),
        }
    }

    fn read_events(ged: &mut AcpiGed) -> u32 {
        let mut data = [0xaa; 4];
        ged.read(AcpiGed::EVENT_REGISTER, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn nothing_pending_at_first() {
        let mut ged = AcpiGed::new().unwrap();
        assert_eq!(read_events(&mut ged), 0);
        assert_eq!(interrupts(&ged), 0);
    }

    #[test]
    fn a_press_raises_the_interrupt_and_one_read_clears_the_event() {
        let mut ged = AcpiGed::new().unwrap();
        let button = ged.power_button().unwrap();
        button.press().unwrap();
        assert_eq!(interrupts(&ged), 1);
        assert_eq!(read_events(&mut ged), AcpiGed::POWER_BUTTON);
        assert_eq!(read_events(&mut ged), 0, "the read cleared it");
        assert_eq!(interrupts(&ged), 0, "reading raises nothing");
    }

    #[test]
    fn presses_before_the_guest_reads_are_one_event_and_each_raises_the_line() {
        let mut ged = AcpiGed::new().unwrap();
        let button = ged.power_button().unwrap();
        let other = button.clone();
        button.press().unwrap();
        other.press().unwrap();
        assert_eq!(interrupts(&ged), 2);
        assert_eq!(read_events(&mut ged), AcpiGed::POWER_BUTTON);
        assert_eq!(read_events(&mut ged), 0);
    }

    #[test]
    fn a_press_from_another_thread_reaches_the_device() {
        let mut ged = AcpiGed::new().unwrap();
        let button = ged.power_button().unwrap();
        std::thread::spawn(move || button.press().unwrap())
            .join()
            .unwrap();
        assert_eq!(interrupts(&ged), 1);
        assert_eq!(read_events(&mut ged), AcpiGed::POWER_BUTTON);
    }

    /// Guest accesses the device does not define read zeros, write nothing
    /// and leave a pending press pending; none panics.
    #[test]
    fn bad_offsets_and_sizes_are_ignored() {
        let mut ged = AcpiGed::new().unwrap();
        ged.power_button().unwrap().press().unwrap();
        for (offset, len) in [
            (0, 0),
            (0, 1),
            (0, 2),
            (0, 8),
            (0, 4096),
            (1, 4),
            (2, 2),
            (4, 4),
            (0xfff, 1),
            (u64::MAX, 4),
            (u64::MAX - 1, 8),
        ] {
            let mut data = vec![0xaa; len];
            ged.read(offset, &mut data);
            assert!(
                data.iter().all(|&b| b == 0),
                "read offset {offset} len {len}"
            );
            ged.write(offset, &vec![0xff; len]);
        }
        ged.write(0, &[0, 0, 0, 0]);
        assert_eq!(interrupts(&ged), 1, "only the press raised the line");
        assert_eq!(
            read_events(&mut ged),
            AcpiGed::POWER_BUTTON,
            "still pending"
        );
        assert!(format!("{ged:?}").contains("ignored_accesses"));
    }
}
