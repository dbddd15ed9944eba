//! COM1: an 8250/16550 UART on `vm-superio`'s `Serial`.
//!
//! Lifecycle:
//!
//! ```text
//! Serial::new(sink) ──► vmm-core registers interrupt_evt() as the irqfd of GSI 4
//!        │              and places the device on the PIO bus (0x3f8, 8 ports)
//!        ▼
//!   running: vCPU threads read/write registers through BusDevice;
//!            guest output goes to the sink, one write + flush per byte;
//!            host input arrives through enqueue_input (SerialInput does it
//!            from the event loop) and is read by the guest from RBR
//!        │
//!        ▼
//!   dropped with the VM (a guest reset ends the VM, so there is no reset path)
//! ```

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::{debug, warn};
use vm_superio::serial::{Error as UartError, SerialEvents};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{EventFdTrigger, LogLimiter};
use crate::BusDevice;

/// Number of I/O ports (registers) a UART occupies.
const REGISTER_COUNT: u64 = 8;

/// The `vm-superio` UART as this device instantiates it.
type Uart = vm_superio::Serial<InterruptLine, Arc<SerialEventCounters>, Box<dyn Write + Send>>;

// Registers and bits this wrapper looks at, from the 16550 data sheet.
const IER: u8 = 1;
const LCR: u8 = 3;
const LSR: u8 = 5;
const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const LCR_DLAB: u8 = 0x80;
const LSR_DATA_READY: u8 = 0x01;

/// The UART's interrupt output: an [`EventFdTrigger`] that also counts how
/// often it was raised, so that [`Serial`] can tell whether a register write
/// made `vm-superio` raise it.
#[derive(Debug)]
struct InterruptLine {
    trigger: EventFdTrigger,
    raised: AtomicU64,
}

impl InterruptLine {
    fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }
}

impl vm_superio::Trigger for InterruptLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.raised.fetch_add(1, Ordering::Relaxed);
        self.trigger.trigger()
    }
}

/// Errors of the serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// Host input could not be queued for the guest. The bytes that fit are
    /// queued anyway (`vm-superio` queues them before it raises the
    /// interrupt); [`Serial::input_capacity`] tells how much room is left.
    #[error("failed to queue {len} bytes of host input into the serial RX FIFO")]
    EnqueueInput {
        /// How many bytes the caller offered.
        len: usize,
        /// What `vm-superio` reported.
        #[source]
        source: UartError<io::Error>,
    },
}

/// Counters of what happened on a [`Serial`], for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SerialStats {
    /// Bytes the guest wrote that reached the output sink.
    pub tx_bytes: u64,
    /// Bytes the guest wrote that the output sink refused (dropped).
    pub tx_lost_bytes: u64,
    /// Guest reads of the receive buffer register (RBR), including reads of
    /// an empty FIFO.
    pub rx_reads: u64,
}

/// `vm-superio` calls these as the guest uses the UART. They count, and turn
/// "the guest emptied the RX FIFO" into an `EventFd` so that the host input
/// side ([`SerialInput`](super::SerialInput)) can resume feeding it.
#[derive(Debug)]
struct SerialEventCounters {
    tx_bytes: AtomicU64,
    tx_lost_bytes: AtomicU64,
    rx_reads: AtomicU64,
    input_drained: EventFd,
}

impl SerialEventCounters {
    fn new() -> io::Result<Self> {
        Ok(Self {
            tx_bytes: AtomicU64::new(0),
            tx_lost_bytes: AtomicU64::new(0),
            rx_reads: AtomicU64::new(0),
            input_drained: EventFd::new(EFD_NONBLOCK)?,
        })
    }
}

impl SerialEvents for SerialEventCounters {
    fn buffer_read(&self) {
        self.rx_reads.fetch_add(1, Ordering::Relaxed);
    }

    fn out_byte(&self) {
        self.tx_bytes.fetch_add(1, Ordering::Relaxed);
    }

    fn tx_lost_byte(&self) {
        // Logged by `Serial::write`, which has the I/O error at hand.
        self.tx_lost_bytes.fetch_add(1, Ordering::Relaxed);
    }

    fn in_buffer_empty(&self) {
        // Only fails when the counter would overflow, i.e. it is already
        // signalled: the reader will wake up either way.
        let _ = self.input_drained.write(1);
    }
}

/// An 8250/16550 UART (COM1) on the PIO bus.
///
/// Offsets 0..8 are the UART registers; accesses must be one byte wide.
/// Anything else is ignored (reads return zeros). Output write failures drop
/// the byte and are counted and logged: the guest never blocks or fails
/// because the sink does. (A sink that *blocks* on write, such as a full
/// blocking pipe, still stalls the writing vCPU: choose the sink with that in
/// mind.)
pub struct Serial {
    uart: Uart,
    ignored_accesses: LogLimiter,
    interrupt_errors: LogLimiter,
}

impl Serial {
    /// Creates a UART whose guest output goes to `out`, written and flushed
    /// one byte at a time so that stdout or file sinks show lines promptly.
    /// The interrupt line is a new [`EventFdTrigger`]; see
    /// [`interrupt_evt`](Self::interrupt_evt).
    pub fn new(out: Box<dyn Write + Send>) -> io::Result<Serial> {
        let events = Arc::new(SerialEventCounters::new()?);
        Ok(Serial {
            uart: Uart::with_events(
                InterruptLine {
                    trigger: EventFdTrigger::new()?,
                    raised: AtomicU64::new(0),
                },
                events,
                out,
            ),
            ignored_accesses: LogLimiter::default(),
            interrupt_errors: LogLimiter::default(),
        })
    }

    /// The interrupt line: signalled whenever the UART raises its interrupt.
    /// `vmm-core` registers it as the irqfd of GSI 4.
    pub fn interrupt_evt(&self) -> &EventFd {
        self.uart.interrupt_evt().trigger.event_fd()
    }

    /// Queues host input for the guest to read from RBR, raising the
    /// received-data interrupt if the guest enabled it.
    ///
    /// Returns how many leading bytes of `bytes` fit; 0 when the RX FIFO is
    /// full or the guest has put the UART in loopback mode (where host input
    /// is not accepted). Offer the rest again later.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<usize, SerialError> {
        if bytes.is_empty() || self.uart.fifo_capacity() == 0 {
            return Ok(0);
        }
        self.uart
            .enqueue_raw_bytes(bytes)
            .map_err(|source| SerialError::EnqueueInput {
                len: bytes.len(),
                source,
            })
    }

    /// How many bytes [`enqueue_input`](Self::enqueue_input) can take now.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Counters of guest output and input activity so far.
    pub fn stats(&self) -> SerialStats {
        let events = self.uart.events();
        SerialStats {
            tx_bytes: events.tx_bytes.load(Ordering::Relaxed),
            tx_lost_bytes: events.tx_lost_bytes.load(Ordering::Relaxed),
            rx_reads: events.rx_reads.load(Ordering::Relaxed),
        }
    }

    /// Signalled each time a guest read leaves the RX FIFO empty (also when
    /// the guest reads RBR while it is already empty). Non-blocking.
    pub(crate) fn input_drained_evt(&self) -> &EventFd {
        &self.uart.events().input_drained
    }

    /// IER before a write to `reg`, when that write goes to IER (DLAB clear).
    /// Reading IER and LCR has no side effects.
    fn enabled_interrupts(&mut self, reg: u8) -> Option<u8> {
        (reg == IER && self.uart.read(LCR) & LCR_DLAB == 0).then(|| self.uart.read(IER))
    }

    /// A real UART's interrupt output is the OR of the conditions that are
    /// both pending and enabled, and the IO-APIC pin behind GSI 4 is
    /// edge-triggered: enabling an interrupt whose condition holds (THR is
    /// always empty here; RX data may be waiting) is a rising edge. Masking
    /// IER and unmasking it again is how Linux's 8250 console write and
    /// start_tx work. `vm-superio` skips the edge when its IIR still holds the
    /// bit from before the mask (set, never read back), which leaves a guest
    /// waiting for a THRE interrupt that never comes, so give the edge here
    /// when this write did not.
    fn assert_newly_enabled(&mut self, before: u8, raised_before: u64) {
        let now = self.uart.read(IER);
        let newly = now & !before;
        let holds = IER_THRE
            | if self.uart.read(LSR) & LSR_DATA_READY != 0 {
                IER_RDA
            } else {
                0
            };
        if newly & holds != 0 && self.uart.interrupt_evt().raised() == raised_before {
            if let Err(e) = vm_superio::Trigger::trigger(self.uart.interrupt_evt()) {
                if let Some(count) = self.interrupt_errors.hit() {
                    warn!("serial: raising the interrupt after an IER write: {e} ({count} so far)");
                }
            }
        }
    }

    fn ignore(&self, access: &str, offset: u64, len: usize) {
        if let Some(count) = self.ignored_accesses.hit() {
            debug!(
                "serial: ignored {access} of {len} bytes at offset {offset:#x} ({count} so far)"
            );
        }
    }
}

/// The register a bus offset addresses, if it addresses one.
fn register(offset: u64) -> Option<u8> {
    if offset < REGISTER_COUNT {
        u8::try_from(offset).ok()
    } else {
        None
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (register(offset), &mut *data) {
            (Some(reg), [byte]) => *byte = self.uart.read(reg),
            _ => {
                data.fill(0);
                self.ignore("read", offset, data.len());
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(reg), &[value]) = (register(offset), data) else {
            self.ignore("write", offset, data.len());
            return;
        };
        let enabled_before = self.enabled_interrupts(reg);
        let raised_before = self.uart.interrupt_evt().raised();
        let result = self.uart.write(reg, value);
        if let Some(before) = enabled_before {
            self.assert_newly_enabled(before, raised_before);
        }
        match result {
            Ok(()) => {}
            Err(UartError::IOError(e)) => {
                let lost = self.uart.events().tx_lost_bytes.load(Ordering::Relaxed);
                if lost.is_power_of_two() {
                    warn!("serial: output sink failed, guest byte dropped ({lost} so far): {e}");
                }
            }
            Err(e) => {
                if let Some(count) = self.interrupt_errors.hit() {
                    warn!("serial: write of {value:#04x} to register {reg}: {e} ({count} so far)");
                }
            }
        }
    }
}

impl Drop for Serial {
    fn drop(&mut self) {
        // The registers as the guest left them: whether a guest whose console
        // went quiet was still waiting for a THRE interrupt (IER bit 1 set).
        debug!("serial at exit: {self:?}");
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serial")
            .field("state", &self.uart.state())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use super::*;

    // Register offsets and bits, from the 16550 data sheet.
    const RBR_THR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const SCR: u64 = 7;
    const IIR_NO_INTERRUPT: u8 = 0x01;
    const IIR_THRE: u8 = 0x02;
    const IIR_RDA: u8 = 0x04;
    const IIR_FIFO_ENABLED: u8 = 0xc0;
    const MCR_LOOP: u8 = 0x10;
    const LSR_THR_EMPTY: u8 = 0x20;

    /// An output sink whose bytes and flushes the test can inspect.
    #[derive(Clone, Default)]
    struct SharedSink {
        bytes: Arc<Mutex<Vec<u8>>>,
        flushes: Arc<AtomicUsize>,
    }

    impl Write for SharedSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    struct FailingSink;

    impl Write for FailingSink {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn serial_with_sink() -> (Serial, SharedSink) {
        let sink = SharedSink::default();
        (Serial::new(Box::new(sink.clone())).unwrap(), sink)
    }

    fn read_reg(serial: &mut Serial, offset: u64) -> u8 {
        let mut data = [0xaa];
        serial.read(offset, &mut data);
        data[0]
    }

    fn interrupt_count(serial: &Serial) -> u64 {
        match serial.interrupt_evt().read() {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("reading the interrupt eventfd: {e}"),
        }
    }

    #[test]
    fn guest_output_reaches_the_sink_flushed_per_byte() {
        let (mut serial, sink) = serial_with_sink();
        for &byte in b"hi\n" {
            serial.write(RBR_THR, &[byte]);
        }
        assert_eq!(*sink.bytes.lock().unwrap(), b"hi\n");
        assert_eq!(sink.flushes.load(Ordering::Relaxed), 3);
        assert_eq!(serial.stats().tx_bytes, 3);
        assert_eq!(serial.stats().tx_lost_bytes, 0);
    }

    #[test]
    fn lsr_reports_thr_empty_and_data_ready() {
        let (mut serial, _sink) = serial_with_sink();
        let lsr = read_reg(&mut serial, LSR);
        assert_ne!(lsr & LSR_THR_EMPTY, 0);
        assert_eq!(lsr & LSR_DATA_READY, 0);

        assert_eq!(serial.enqueue_input(b"x").unwrap(), 1);
        assert_ne!(read_reg(&mut serial, LSR) & LSR_DATA_READY, 0);
        assert_eq!(read_reg(&mut serial, RBR_THR), b'x');
        assert_eq!(read_reg(&mut serial, LSR) & LSR_DATA_READY, 0);
    }

    #[test]
    fn unmasking_a_pending_thre_interrupt_raises_it_again() {
        let (mut serial, _sink) = serial_with_sink();
        serial.write(IER, &[IER_THRE]);
        assert_eq!(interrupt_count(&serial), 1);
        // The guest writes a byte but masks IER before it reads IIR (as the
        // 8250 console write does): the edge it had is gone with the mask.
        serial.write(RBR_THR, b"a");
        serial.write(IER, &[0]);
        assert_eq!(interrupt_count(&serial), 0);
        // Unmasking is a new rising edge of the interrupt output.
        serial.write(IER, &[IER_THRE]);
        assert_eq!(interrupt_count(&serial), 1);
        // Writing IER again without a 0 -> 1 change of THRE is no edge.
        serial.write(IER, &[IER_THRE | IER_RDA]);
        assert_eq!(interrupt_count(&serial), 0);
        assert_eq!(read_reg(&mut serial, IIR) & 0x0f, IIR_THRE);
    }

    #[test]
    fn unmasking_rda_with_unread_input_raises_it_again() {
        let (mut serial, _sink) = serial_with_sink();
        serial.write(IER, &[IER_RDA]);
        assert_eq!(serial.enqueue_input(b"x").unwrap(), 1);
        assert_eq!(interrupt_count(&serial), 1);
        serial.write(IER, &[0]);
        serial.write(IER, &[IER_RDA]);
        assert_eq!(interrupt_count(&serial), 1);
        assert_eq!(read_reg(&mut serial, RBR_THR), b'x');
        // Nothing left to read: unmasking RDA alone is no edge.
        serial.write(IER, &[0]);
        serial.write(IER, &[IER_RDA]);
        assert_eq!(interrupt_count(&serial), 0);
    }

    #[test]
    fn divisor_latch_high_write_is_not_an_ier_write() {
        let (mut serial, _sink) = serial_with_sink();
        serial.write(LCR, &[LCR_DLAB]);
        serial.write(IER, &[IER_THRE]);
        assert_eq!(interrupt_count(&serial), 0);
        serial.write(LCR, &[0]);
        assert_eq!(read_reg(&mut serial, IER), 0);
    }

    #[test]
    fn enabling_thre_interrupt_signals_and_shows_in_iir() {
        let (mut serial, _sink) = serial_with_sink();
        assert_eq!(interrupt_count(&serial), 0);
        assert_eq!(
            read_reg(&mut serial, IIR),
            IIR_FIFO_ENABLED | IIR_NO_INTERRUPT
        );

        serial.write(IER, &[IER_THRE]);
        assert_eq!(read_reg(&mut serial, IER), IER_THRE);
        assert_eq!(interrupt_count(&serial), 1);
        assert_eq!(read_reg(&mut serial, IIR), IIR_FIFO_ENABLED | IIR_THRE);
        // Reading IIR acknowledged the THRE interrupt.
        assert_eq!(
            read_reg(&mut serial, IIR),
            IIR_FIFO_ENABLED | IIR_NO_INTERRUPT
        );

        // Each transmitted byte empties THR again and re-raises it.
        serial.write(RBR_THR, b"a");
        assert_eq!(interrupt_count(&serial), 1);
        assert_eq!(read_reg(&mut serial, IIR), IIR_FIFO_ENABLED | IIR_THRE);
    }

    #[test]
    fn input_is_read_back_through_rbr_with_rda_interrupt() {
        let (mut serial, _sink) = serial_with_sink();
        serial.write(IER, &[IER_RDA]);
        let capacity = serial.input_capacity();
        assert_eq!(serial.enqueue_input(b"abc").unwrap(), 3);
        assert_eq!(serial.input_capacity(), capacity - 3);
        assert_eq!(interrupt_count(&serial), 1);
        assert_eq!(read_reg(&mut serial, IIR), IIR_FIFO_ENABLED | IIR_RDA);

        let got: Vec<u8> = (0..3).map(|_| read_reg(&mut serial, RBR_THR)).collect();
        assert_eq!(got, b"abc");
        assert_eq!(serial.input_capacity(), capacity);
        // An empty FIFO reads as 0.
        assert_eq!(read_reg(&mut serial, RBR_THR), 0);
        assert_eq!(serial.stats().rx_reads, 4);
    }

    #[test]
    fn full_fifo_accepts_what_fits_then_nothing() {
        let (mut serial, _sink) = serial_with_sink();
        let capacity = serial.input_capacity();
        let input: Vec<u8> = (0..capacity as u8 + 10).collect();
        assert_eq!(serial.enqueue_input(&input).unwrap(), capacity);
        assert_eq!(serial.input_capacity(), 0);
        assert_eq!(serial.enqueue_input(&input[capacity..]).unwrap(), 0);
        assert_eq!(serial.enqueue_input(&[]).unwrap(), 0);
        let got: Vec<u8> = (0..capacity)
            .map(|_| read_reg(&mut serial, RBR_THR))
            .collect();
        assert_eq!(got, input[..capacity]);
    }

    #[test]
    fn draining_the_fifo_signals_input_drained() {
        let (mut serial, _sink) = serial_with_sink();
        serial.enqueue_input(b"ab").unwrap();
        read_reg(&mut serial, RBR_THR);
        assert!(serial.input_drained_evt().read().is_err());
        read_reg(&mut serial, RBR_THR);
        assert_eq!(serial.input_drained_evt().read().unwrap(), 1);
    }

    #[test]
    fn loopback_mode_takes_no_host_input_and_sends_no_output() {
        let (mut serial, sink) = serial_with_sink();
        serial.write(MCR, &[MCR_LOOP]);
        assert_eq!(serial.enqueue_input(b"host").unwrap(), 0);
        serial.write(RBR_THR, b"L");
        assert!(sink.bytes.lock().unwrap().is_empty());
        assert_eq!(read_reg(&mut serial, RBR_THR), b'L');
    }

    #[test]
    fn divisor_latch_writes_do_not_reach_the_sink() {
        let (mut serial, sink) = serial_with_sink();
        serial.write(LCR, &[LCR_DLAB | 0x03]);
        serial.write(RBR_THR, &[0x01]);
        serial.write(IER, &[0x00]);
        assert_eq!(read_reg(&mut serial, RBR_THR), 0x01);
        serial.write(LCR, &[0x03]);
        assert!(sink.bytes.lock().unwrap().is_empty());
    }

    #[test]
    fn failing_sink_drops_bytes_without_blocking_the_guest() {
        let mut serial = Serial::new(Box::new(FailingSink)).unwrap();
        serial.write(IER, &[IER_THRE]);
        assert_eq!(interrupt_count(&serial), 1);
        read_reg(&mut serial, IIR);
        for _ in 0..5 {
            serial.write(RBR_THR, b"z");
        }
        assert_eq!(serial.stats().tx_lost_bytes, 5);
        assert_eq!(serial.stats().tx_bytes, 0);
        // The guest still sees THR empty and still gets its interrupt.
        assert_ne!(read_reg(&mut serial, LSR) & LSR_THR_EMPTY, 0);
        assert_eq!(interrupt_count(&serial), 1);
    }

    #[test]
    fn odd_offsets_and_lengths_are_ignored() {
        let (mut serial, sink) = serial_with_sink();
        serial.write(SCR, &[0x5a]);
        for offset in [8, 9, 0x100, u64::from(u8::MAX) + 1, u64::MAX] {
            let mut data = [0xff; 4];
            serial.read(offset, &mut data[..1]);
            assert_eq!(data[0], 0);
            serial.write(offset, b"x");
        }
        for len in [0, 2, 4, 8] {
            let mut data = vec![0xff; len];
            serial.read(SCR, &mut data);
            assert!(data.iter().all(|&b| b == 0));
            serial.write(RBR_THR, &vec![b'x'; len]);
            serial.write(SCR, &vec![0; len]);
        }
        assert!(sink.bytes.lock().unwrap().is_empty());
        assert_eq!(read_reg(&mut serial, SCR), 0x5a);
    }
}
