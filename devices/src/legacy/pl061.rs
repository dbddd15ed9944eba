//! The Arm PrimeCell PL061 GPIO controller, for arm64 guests: one input line
//! carries the power button, which the FDT describes under `gpio-keys`
//! (Linux's `gpio-pl061` and `gpio-keys` drivers, as on QEMU's `virt`).
//!
//! ```text
//!  host: PowerButton::press()           guest
//!    line 3 high ─▶ edge ─▶ RIS ─▶ irqfd ─▶ pl061 handler: MIS, ack (GPIOIC)
//!                                          gpio-keys: reads GPIODATA = 1 → KEY_POWER down
//!    held HOLD and seen high by the guest
//!    line 3 low  ─▶ edge ─▶ RIS ─▶ irqfd ─▶ gpio-keys: reads 0 → KEY_POWER up
//! ```
//!
//! The key is released only after the guest has read the line high (and at
//! least [`Pl061::HOLD`] after the press): gpio-keys reads the level from a
//! debounce timer, which a slow or busy guest may run late, and a press it
//! never saw high would reach it as a release alone and be dropped.
//!
//! The registers (PL061 TRM, DDI 0190B) are 8 bits wide in word-aligned
//! slots; accesses of 1, 2 or 4 bytes at a slot read the value in the low
//! byte, zeros above. Anything else (misaligned, wider, unknown offsets,
//! writes to read-only registers) reads zeros, is dropped and is counted.
//! The interrupt output is signalled as an edge on its irqfd whenever a
//! masked status bit rises, and again after an interrupt clear that leaves
//! one pending (the FDT describes the line as edge-triggered).

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use log::{debug, warn};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use super::{EventFdTrigger, LogLimiter};
use crate::power_button::Press;
use crate::{BusDevice, PowerButton};

/// End of the data window (GPIODATA, address bits [9:2] mask the access).
const DATA_END: u64 = 0x400;
const GPIODIR: u64 = 0x400;
const GPIOIS: u64 = 0x404;
const GPIOIBE: u64 = 0x408;
const GPIOIEV: u64 = 0x40c;
const GPIOIE: u64 = 0x410;
const GPIORIS: u64 = 0x414;
const GPIOMIS: u64 = 0x418;
const GPIOIC: u64 = 0x41c;
const GPIOAFSEL: u64 = 0x420;
/// GPIOPeriphID0..3 and GPIOPCellID0..3, one byte per word from here: the
/// AMBA bus reads them to match the driver (part 0x061, designer 0x41).
const ID_START: u64 = 0xfe0;
const ID: [u8; 8] = [0x61, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// The GPIO controller: eight lines, all inputs from the host's side.
pub struct Pl061 {
    state: Arc<Mutex<Lines>>,
    hold: Duration,
    ignored_accesses: LogLimiter,
}

/// The registers and the host-driven input levels.
struct Lines {
    /// Levels the host drives on the input lines.
    input: u8,
    /// What the guest wrote for lines it made outputs.
    output: u8,
    dir: u8,
    is: u8,
    ibe: u8,
    iev: u8,
    ie: u8,
    ris: u8,
    afsel: u8,
    /// Lines pressed and not yet released, those the guest has read high
    /// since, and those held for at least [`Pl061::HOLD`].
    held: u8,
    seen: u8,
    hold_done: u8,
    interrupt: EventFdTrigger,
}

impl Pl061 {
    /// The line the power button is on (QEMU `virt`'s choice too).
    pub const POWER_BUTTON_LINE: u8 = 3;
    /// Linux's input code for the power button (`KEY_POWER`), for the FDT.
    pub const KEY_POWER: u32 = 116;
    /// The shortest press: a finger's, as QEMU's `gpio-key` holds it.
    pub const HOLD: Duration = Duration::from_millis(100);

    /// Creates the controller with a new interrupt `EventFd`, every line
    /// low and an input.
    pub fn new() -> io::Result<Pl061> {
        Self::with_hold(Self::HOLD)
    }

    /// As [`Pl061::new`], with presses held at least `hold`.
    fn with_hold(hold: Duration) -> io::Result<Pl061> {
        Ok(Pl061 {
            hold,
            state: Arc::new(Mutex::new(Lines {
                input: 0,
                output: 0,
                dir: 0,
                is: 0,
                ibe: 0,
                iev: 0,
                ie: 0,
                ris: 0,
                afsel: 0,
                held: 0,
                seen: 0,
                hold_done: 0,
                interrupt: EventFdTrigger::new()?,
            })),
            ignored_accesses: LogLimiter::default(),
        })
    }

    /// The interrupt line (edge): `vmm-core` registers it as an irqfd.
    pub fn interrupt_evt(&self) -> io::Result<EventFd> {
        lock(&self.state).interrupt.event_fd().try_clone()
    }

    /// A handle that presses the key on [`Pl061::POWER_BUTTON_LINE`].
    pub fn power_button(&self) -> PowerButton {
        PowerButton::new(KeyPress {
            state: Arc::clone(&self.state),
            line: 1 << Self::POWER_BUTTON_LINE,
            hold: self.hold,
        })
    }

    fn ignore(&self, access: &str, offset: u64, len: usize) {
        if let Some(count) = self.ignored_accesses.hit() {
            debug!("pl061: ignored {access} of {len} bytes at offset {offset:#x} ({count} so far)");
        }
    }

    /// The register slot of a 1-, 2- or 4-byte access at a word boundary.
    fn slot(offset: u64, len: usize) -> Option<u64> {
        (offset.is_multiple_of(4) && matches!(len, 1 | 2 | 4) && offset < 0x1000).then_some(offset)
    }
}

fn lock(state: &Mutex<Lines>) -> MutexGuard<'_, Lines> {
    // Every change to the registers completes under one lock, so a panic in
    // another holder (there is none by design) leaves nothing half-done.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lines {
    /// The level on each line: driven by the host for inputs, by the guest
    /// for outputs.
    fn level(&self) -> u8 {
        (self.input & !self.dir) | (self.output & self.dir)
    }

    fn mis(&self) -> u8 {
        self.ris & self.ie
    }

    /// Applies `change` to the registers, then latches edges, refreshes
    /// level-sensitive status and raises the interrupt when a masked status
    /// bit rose (or, with `clearing`, when one is still pending).
    fn update(&mut self, clearing: bool, change: impl FnOnce(&mut Lines)) {
        let (old_level, old_mis) = (self.level(), self.mis());
        change(self);
        let level = self.level();
        let changed = old_level ^ level;
        let edge = !self.is;
        let rising = changed & level & edge & (self.ibe | self.iev);
        let falling = changed & old_level & edge & (self.ibe | !self.iev);
        self.ris |= rising | falling;
        let active = !(level ^ self.iev);
        self.ris = (self.ris & edge) | (active & self.is);
        let mis = self.mis();
        if mis & !old_mis != 0 || (clearing && mis != 0) {
            if let Err(e) = self.interrupt.trigger() {
                warn!("pl061: cannot signal the interrupt: {e}");
            }
        }
    }

    /// Drives the host's `lines` high or low.
    fn drive(&mut self, lines: u8, high: bool) {
        self.update(false, |l| {
            if high {
                l.input |= lines;
            } else {
                l.input &= !lines;
            }
        });
    }

    /// Releases the held lines the guest has seen high and held long enough.
    fn release_due(&mut self) {
        let due = self.held & self.seen & self.hold_done;
        if due != 0 {
            self.held &= !due;
            self.seen &= !due;
            self.hold_done &= !due;
            self.drive(due, false);
        }
    }

    /// The register at `slot`; `None` for a slot the PL061 does not decode.
    fn read(&mut self, slot: u64) -> Option<u8> {
        Some(match slot {
            0..DATA_END => {
                let mask = (slot >> 2) as u8;
                let value = self.level() & mask;
                self.seen |= value & self.held;
                value
            }
            GPIODIR => self.dir,
            GPIOIS => self.is,
            GPIOIBE => self.ibe,
            GPIOIEV => self.iev,
            GPIOIE => self.ie,
            GPIORIS => self.ris,
            GPIOMIS => self.mis(),
            GPIOAFSEL => self.afsel,
            _ => *ID.get(usize::try_from(slot.checked_sub(ID_START)? / 4).ok()?)?,
        })
    }

    /// Writes `value` to `slot`; false when the slot takes no writes.
    fn write(&mut self, slot: u64, value: u8) -> bool {
        match slot {
            0..DATA_END => {
                let mask = (slot >> 2) as u8;
                self.update(false, |l| l.output = (l.output & !mask) | (value & mask));
            }
            GPIODIR => self.update(false, |l| l.dir = value),
            GPIOIS => self.update(false, |l| l.is = value),
            GPIOIBE => self.update(false, |l| l.ibe = value),
            GPIOIEV => self.update(false, |l| l.iev = value),
            GPIOIE => self.update(false, |l| l.ie = value),
            GPIOIC => self.update(true, |l| l.ris &= !value),
            GPIOAFSEL => self.afsel = value,
            _ => return false,
        }
        true
    }
}

impl BusDevice for Pl061 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = Self::slot(offset, data.len()).and_then(|slot| {
            let mut lines = lock(&self.state);
            let value = lines.read(slot);
            lines.release_due();
            value
        });
        match value {
            Some(value) => data[0] = value,
            None => self.ignore("read", offset, data.len()),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let written = Self::slot(offset, data.len())
            .is_some_and(|slot| lock(&self.state).write(slot, data[0]));
        if !written {
            self.ignore("write", offset, data.len());
        }
    }
}

impl fmt::Debug for Pl061 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = lock(&self.state);
        f.debug_struct("Pl061")
            .field("level", &format_args!("{:#04x}", lines.level()))
            .field("ie", &format_args!("{:#04x}", lines.ie))
            .field("ris", &format_args!("{:#04x}", lines.ris))
            .field("held", &format_args!("{:#04x}", lines.held))
            .field("ignored_accesses", &self.ignored_accesses.count())
            .finish()
    }
}

/// Presses one line of a [`Pl061`] (behind a [`PowerButton`]).
struct KeyPress {
    state: Arc<Mutex<Lines>>,
    line: u8,
    hold: Duration,
}

impl Press for KeyPress {
    /// Drives the line high now; a short-lived thread marks it held long
    /// enough after the hold time ([`Pl061::HOLD`]), and the line goes low
    /// once the guest has also read it high. Pressing a key still held does
    /// nothing more.
    fn press(&self) -> io::Result<()> {
        {
            let mut lines = lock(&self.state);
            if lines.held & self.line != 0 {
                return Ok(());
            }
            // `seen` and `hold_done` only ever hold lines that are held.
            lines.held |= self.line;
            lines.drive(self.line, true);
        }
        let state = Arc::clone(&self.state);
        let (line, hold) = (self.line, self.hold);
        let released = thread::Builder::new()
            .name("pl061-key".into())
            .spawn(move || {
                thread::sleep(hold);
                let mut lines = lock(&state);
                lines.hold_done |= line & lines.held;
                lines.release_due();
            });
        if let Err(e) = released {
            // No timer: count the hold as done, so the line goes low as soon
            // as the guest has read it high.
            let mut lines = lock(&self.state);
            lines.hold_done |= self.line;
            lines.release_due();
            return Err(e);
        }
        Ok(())
    }
}

impl fmt::Debug for KeyPress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPress")
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: u8 = 1 << Pl061::POWER_BUTTON_LINE;
    /// The data window address that reads only the key's line.
    const KEY_DATA: u64 = (KEY as u64) << 2;

    fn read(gpio: &mut Pl061, offset: u64) -> u8 {
        let mut data = [0xaa; 4];
        gpio.read(offset, &mut data);
        assert_eq!(&data[1..], &[0, 0, 0], "upper bytes read zero");
        data[0]
    }

    fn write(gpio: &mut Pl061, offset: u64, value: u8) {
        gpio.write(offset, &[value]);
    }

    /// How many interrupts were raised since the last call.
    fn interrupts(evt: &EventFd) -> u64 {
        match evt.read() {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("reading the interrupt eventfd: {e}"),
        }
    }

    /// What Linux's gpio-pl061 does for gpio-keys: the key's line an input,
    /// an interrupt on both edges, unmasked.
    fn linux_setup(gpio: &mut Pl061) {
        write(gpio, GPIODIR, 0);
        write(gpio, GPIOIS, 0);
        write(gpio, GPIOIBE, KEY);
        write(gpio, GPIOIE, KEY);
    }

    /// The guest's interrupt handler: the masked status, then its ack.
    fn handle(gpio: &mut Pl061) -> u8 {
        let mis = read(gpio, GPIOMIS);
        write(gpio, GPIOIC, mis);
        mis
    }

    fn wait_until(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out");
    }

    #[test]
    fn the_amba_bus_finds_a_pl061() {
        let mut gpio = Pl061::new().unwrap();
        let id: Vec<u8> = (0..8).map(|i| read(&mut gpio, ID_START + 4 * i)).collect();
        assert_eq!(id, ID);
        // Peripheral ID 0x00041061: part 0x061, designer 0x41 (Arm).
        assert_eq!(
            u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
            0x0004_1061
        );
    }

    #[test]
    fn a_press_is_seen_high_then_released_with_an_interrupt_for_each_edge() {
        let mut gpio = Pl061::with_hold(Duration::ZERO).unwrap();
        let evt = gpio.interrupt_evt().unwrap();
        linux_setup(&mut gpio);
        assert_eq!(interrupts(&evt), 0);
        gpio.power_button().press().unwrap();
        assert_eq!(interrupts(&evt), 1, "the rising edge");
        assert_eq!(handle(&mut gpio), KEY);
        assert_eq!(read(&mut gpio, GPIORIS), 0, "acked");
        // The hold time is over, but the guest has not read the line high.
        wait_until(|| lock(&gpio.state).hold_done == KEY);
        assert_eq!(interrupts(&evt), 0);
        assert_eq!(
            read(&mut gpio, KEY_DATA),
            KEY,
            "still pressed until the guest saw it"
        );
        // That read released it: the falling edge.
        assert_eq!(interrupts(&evt), 1);
        assert_eq!(handle(&mut gpio), KEY);
        assert_eq!(read(&mut gpio, KEY_DATA), 0);
    }

    #[test]
    fn a_key_seen_early_is_held_for_the_hold_time() {
        // Long enough that the reads below come first on any machine.
        let mut gpio = Pl061::with_hold(Duration::from_secs(2)).unwrap();
        let evt = gpio.interrupt_evt().unwrap();
        linux_setup(&mut gpio);
        gpio.power_button().press().unwrap();
        assert_eq!(interrupts(&evt), 1);
        handle(&mut gpio);
        assert_eq!(read(&mut gpio, KEY_DATA), KEY);
        assert_eq!(read(&mut gpio, KEY_DATA), KEY, "not released before HOLD");
        wait_until(|| interrupts(&evt) == 1);
        assert_eq!(handle(&mut gpio), KEY);
        assert_eq!(read(&mut gpio, KEY_DATA), 0, "released by the timer");
    }

    #[test]
    fn a_masked_line_latches_its_edge_and_interrupts_when_unmasked() {
        let mut gpio = Pl061::new().unwrap();
        let evt = gpio.interrupt_evt().unwrap();
        write(&mut gpio, GPIOIBE, KEY);
        gpio.power_button().press().unwrap();
        assert_eq!(interrupts(&evt), 0, "masked");
        assert_eq!(read(&mut gpio, GPIORIS), KEY);
        assert_eq!(read(&mut gpio, GPIOMIS), 0);
        write(&mut gpio, GPIOIE, KEY);
        assert_eq!(interrupts(&evt), 1, "unmasking a pending edge interrupts");
        assert_eq!(read(&mut gpio, GPIOMIS), KEY);
    }

    #[test]
    fn edge_selection_and_level_sensitivity() {
        let mut gpio = Pl061::new().unwrap();
        let evt = gpio.interrupt_evt().unwrap();
        write(&mut gpio, GPIOIE, KEY);
        // Falling edge only (IBE=0, IEV=0): the press latches nothing.
        let mut lines = lock(&gpio.state);
        lines.drive(KEY, true);
        assert_eq!(lines.ris, 0);
        lines.drive(KEY, false);
        assert_eq!(lines.ris, KEY, "the falling edge");
        drop(lines);
        assert_eq!(interrupts(&evt), 1);
        handle(&mut gpio);
        // Level high (IS=1, IEV=1): pending while high, whatever the acks.
        write(&mut gpio, GPIOIEV, KEY);
        write(&mut gpio, GPIOIS, KEY);
        assert_eq!(read(&mut gpio, GPIORIS), 0);
        assert_eq!(interrupts(&evt), 0, "the line is low");
        lock(&gpio.state).drive(KEY, true);
        assert_eq!(interrupts(&evt), 1);
        write(&mut gpio, GPIOIC, KEY);
        assert_eq!(read(&mut gpio, GPIOMIS), KEY, "a level stays pending");
        assert_eq!(
            interrupts(&evt),
            1,
            "and is signalled again after the clear"
        );
        lock(&gpio.state).drive(KEY, false);
        assert_eq!(read(&mut gpio, GPIORIS), 0);
    }

    #[test]
    fn outputs_read_back_through_the_masked_data_window() {
        let mut gpio = Pl061::new().unwrap();
        write(&mut gpio, GPIODIR, 0x0f);
        // Address bits [9:2] select the bits written: only 0x05 here.
        write(&mut gpio, 0x05 << 2, 0xff);
        assert_eq!(read(&mut gpio, 0xff << 2), 0x05);
        assert_eq!(read(&mut gpio, 0x01 << 2), 0x01);
        // Inputs read the host's levels, not what the guest wrote.
        write(&mut gpio, 0xff << 2, 0xff);
        assert_eq!(read(&mut gpio, 0xff << 2), 0x0f);
        assert_eq!(read(&mut gpio, GPIODIR), 0x0f);
    }

    #[test]
    fn a_second_press_while_held_is_one_press() {
        let mut gpio = Pl061::new().unwrap();
        let evt = gpio.interrupt_evt().unwrap();
        linux_setup(&mut gpio);
        let button = gpio.power_button();
        button.press().unwrap();
        button.clone().press().unwrap();
        assert_eq!(interrupts(&evt), 1);
        assert!(format!("{gpio:?} {button:?}").contains("held"));
    }

    /// Guest accesses the device does not define read zeros and write
    /// nothing; none panics or raises the line.
    #[test]
    fn bad_offsets_sizes_and_read_only_writes_are_ignored() {
        let mut gpio = Pl061::new().unwrap();
        let evt = gpio.interrupt_evt().unwrap();
        for (offset, len) in [
            (0, 0),
            (0, 3),
            (0, 8),
            (1, 1),
            (GPIODIR + 2, 2),
            (0x424, 4),
            (0xffc + 4, 4),
            (u64::MAX, 1),
            (u64::MAX - 3, 4),
        ] {
            let mut data = vec![0xaa; len];
            gpio.read(offset, &mut data);
            assert!(data.iter().all(|&b| b == 0), "read {offset:#x}/{len}");
            gpio.write(offset, &vec![0xff; len]);
        }
        for read_only in [GPIORIS, GPIOMIS, ID_START, 0x800] {
            write(&mut gpio, read_only, 0xff);
        }
        assert_eq!(read(&mut gpio, GPIORIS), 0);
        assert_eq!(read(&mut gpio, GPIOIE), 0);
        assert_eq!(read(&mut gpio, ID_START), ID[0]);
        assert_eq!(interrupts(&evt), 0);
        // 9 reads (one of an offset the PL061 does not decode), 9 writes
        // and 4 writes to registers that take none.
        assert_eq!(gpio.ignored_accesses.count(), 22);
    }
}
