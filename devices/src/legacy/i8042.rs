//! The i8042 keyboard controller, reduced to what a microVM needs: the CPU
//! reset command.
//!
//! Lifecycle: `I8042::new()` → `vmm-core` watches [`I8042::reset_evt`] in its
//! event loop and places the device on the PIO bus (0x60, 5 ports) → the guest
//! writes 0xFE to the command port (0x64) to reboot → the reset `EventFd` is
//! signalled and `vmm-core` ends the VM with outcome "guest reset".

use std::fmt;
use std::io;

use log::{debug, info, warn};
use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;

use super::{EventFdTrigger, LogLimiter};
use crate::BusDevice;

/// Offset of the command/status port (0x64) from the data port (0x60).
const COMMAND_PORT: u8 = 4;
/// [`COMMAND_PORT`] as a bus offset.
const COMMAND_OFFSET: u64 = COMMAND_PORT as u64;
/// The command that pulses the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// An i8042 controller on the PIO bus: offset 0 is the data port (0x60),
/// offset 4 the command/status port (0x64).
///
/// Reads of any port return 0 (no data, input buffer empty). One-byte writes
/// of 0xFE to the command port signal [`reset_evt`](Self::reset_evt); every
/// other access is ignored.
pub struct I8042 {
    device: I8042Device<EventFdTrigger>,
    ignored_accesses: LogLimiter,
}

impl I8042 {
    /// Creates the controller with a new reset `EventFd`.
    pub fn new() -> io::Result<Self> {
        Ok(I8042 {
            device: I8042Device::new(EventFdTrigger::new()?),
            ignored_accesses: LogLimiter::default(),
        })
    }

    /// Signalled (non-blocking `EventFd`) when the guest asks for a CPU
    /// reset.
    pub fn reset_evt(&self) -> &EventFd {
        self.device.reset_evt()
    }

    fn ignore(&self, access: &str, offset: u64, len: usize) {
        if let Some(count) = self.ignored_accesses.hit() {
            debug!("i8042: ignored {access} of {len} bytes at offset {offset:#x} ({count} so far)");
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), &mut *data) {
            (Ok(port), [byte]) => *byte = self.device.read(port),
            _ => {
                data.fill(0);
                self.ignore("read", offset, data.len());
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (COMMAND_OFFSET, &[CMD_RESET_CPU]) => {
                info!("i8042: guest requested a CPU reset");
                if let Err(e) = self.device.write(COMMAND_PORT, CMD_RESET_CPU) {
                    warn!("i8042: cannot signal the reset event: {e}");
                }
            }
            _ => self.ignore("write", offset, data.len()),
        }
    }
}

impl fmt::Debug for I8042 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I8042")
            .field("reset_evt", self.reset_evt())
            .field("ignored_accesses", &self.ignored_accesses.count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset_signalled(i8042: &I8042) -> bool {
        match i8042.reset_evt().read() {
            Ok(count) => count > 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("reading the reset eventfd: {e}"),
        }
    }

    #[test]
    fn reset_command_signals_reset_evt() {
        let mut i8042 = I8042::new().unwrap();
        assert!(!reset_signalled(&i8042));
        i8042.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert!(reset_signalled(&i8042));
        assert!(!reset_signalled(&i8042));
    }

    #[test]
    fn other_commands_and_ports_do_not_reset() {
        let mut i8042 = I8042::new().unwrap();
        i8042.write(COMMAND_OFFSET, &[0xff]);
        i8042.write(COMMAND_OFFSET, &[0xd1]);
        i8042.write(0, &[CMD_RESET_CPU]);
        i8042.write(1, &[CMD_RESET_CPU]);
        i8042.write(COMMAND_OFFSET, &[CMD_RESET_CPU, 0]);
        i8042.write(COMMAND_OFFSET, &[]);
        i8042.write(COMMAND_OFFSET + 256, &[CMD_RESET_CPU]);
        i8042.write(u64::MAX, &[CMD_RESET_CPU]);
        assert!(!reset_signalled(&i8042));
    }

    #[test]
    fn reads_return_zero_for_any_offset_and_length() {
        let mut i8042 = I8042::new().unwrap();
        for offset in [0, COMMAND_OFFSET, 5, 0x1000, u64::MAX] {
            for len in [0, 1, 2, 4, 8] {
                let mut data = vec![0xaa; len];
                i8042.read(offset, &mut data);
                assert!(data.iter().all(|&b| b == 0));
            }
        }
        assert!(!reset_signalled(&i8042));
    }
}
