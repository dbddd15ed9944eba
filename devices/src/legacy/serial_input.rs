//! Host input (usually stdin) for the guest's serial port, fed from the
//! VMM thread's event loop.
//!
//! Flow control, so that nothing busy-loops and no byte is lost:
//!
//! ```text
//!  init ──► watch input fd + the serial's "RX FIFO drained" EventFd
//!
//!  input readable ──► FIFO has room? read one chunk, queue what fits,
//!                     keep the rest pending
//!                     pending left or FIFO full ──► stop watching input (paused)
//!
//!  FIFO drained ────► queue pending bytes; none left and room in the FIFO
//!                     ──► watch input again
//!
//!  EOF / read error ─► stop watching input for good; pending bytes are
//!                      still delivered as the guest drains the FIFO
//! ```

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{debug, info, warn};
use vmm_sys_util::eventfd::EventFd;

use super::{LogLimiter, Serial};

/// How many bytes one read of the input asks for. `std::io::Stdin` keeps an
/// 8 KiB buffer of its own and bypasses it only for reads at least that
/// large; a smaller read could leave bytes in that buffer where epoll cannot
/// see them, stranding them until more input arrives.
const READ_CHUNK: usize = 8 * 1024;

/// A host input for [`SerialInput`]: readable, pollable (epoll), `Send`.
///
/// Implemented for every such type, e.g. `std::io::Stdin`, `std::fs::File`
/// on a pipe or tty, `UnixStream`. The input should not buffer in user space
/// beyond what one 8 KiB read drains (as `Stdin` does): epoll only sees the
/// fd.
pub trait SerialInputSource: Read + AsRawFd + Send {}

impl<T: Read + AsRawFd + Send> SerialInputSource for T {}

/// An event-manager subscriber that moves bytes from a host input into a
/// [`Serial`]'s RX FIFO.
///
/// Lifecycle: created by `vmm-core` with the shared `Serial` and the input,
/// added to the VMM thread's `EventManager` (which calls `init`), driven by
/// the event loop, dropped with the VM. While the FIFO is full it stops
/// watching the input and waits for the guest to drain the FIFO; on end of
/// input or a read error it stops watching the input for good.
///
/// ```no_run
/// use std::sync::{Arc, Mutex};
/// use devices::legacy::{Serial, SerialInput};
/// use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
///
/// let serial = Arc::new(Mutex::new(Serial::new(Box::new(std::io::stdout()))?));
/// let input = SerialInput::new(serial.clone(), Box::new(std::io::stdin()))?;
/// let mut event_manager =
///     EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
/// event_manager.add_subscriber(Arc::new(Mutex::new(input)));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SerialInput {
    serial: Arc<Mutex<Serial>>,
    input: Box<dyn SerialInputSource>,
    input_drained: EventFd,
    buf: Box<[u8]>,
    /// Bytes of `buf` read from the input but not yet queued for the guest.
    pending: Range<usize>,
    /// Whether the input fd is registered with the event loop.
    watching: bool,
    /// End of input or a read error: never watch the input again.
    input_done: bool,
    enqueue_errors: LogLimiter,
}

impl SerialInput {
    /// Creates the subscriber; nothing is watched until the event manager
    /// calls `init` (when the subscriber is added to it).
    pub fn new(serial: Arc<Mutex<Serial>>, input: Box<dyn SerialInputSource>) -> io::Result<Self> {
        let input_drained = lock(&serial).input_drained_evt().try_clone()?;
        Ok(SerialInput {
            serial,
            input,
            input_drained,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            pending: 0..0,
            watching: false,
            input_done: false,
            enqueue_errors: LogLimiter::default(),
        })
    }

    /// Queues as many pending bytes as the FIFO takes.
    fn queue_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut serial = lock(&self.serial);
        let room_before = serial.input_capacity();
        let queued = match serial.enqueue_input(&self.buf[self.pending.clone()]) {
            Ok(queued) => queued,
            Err(e) => {
                if let Some(count) = self.enqueue_errors.hit() {
                    warn!("serial input: {e} ({count} so far)");
                }
                // The bytes that fit were queued before the error.
                room_before.saturating_sub(serial.input_capacity())
            }
        };
        self.pending.start += queued.min(self.pending.len());
    }

    fn fifo_has_room(&self) -> bool {
        lock(&self.serial).input_capacity() > 0
    }

    fn watch_input(&mut self, ops: &mut EventOps) {
        let fd = self.input.as_raw_fd();
        match ops.add(Events::new_raw(fd, EventSet::IN)) {
            Ok(()) => self.watching = true,
            Err(e) => {
                warn!("serial input: cannot watch fd {fd}, host input disabled: {e}");
                self.input_done = true;
            }
        }
    }

    fn unwatch_input(&mut self, ops: &mut EventOps) {
        if !self.watching {
            return;
        }
        let fd = self.input.as_raw_fd();
        if let Err(e) = ops.remove(Events::empty_raw(fd)) {
            warn!("serial input: cannot stop watching fd {fd}: {e}");
        }
        self.watching = false;
    }

    /// The input is readable (or hung up).
    fn read_input(&mut self, ops: &mut EventOps) {
        if !self.pending.is_empty() || !self.fifo_has_room() {
            self.unwatch_input(ops);
            return;
        }
        // One read per wake-up: the input may be a blocking fd (stdin), and
        // epoll is level-triggered, so anything left wakes us again.
        match self.input.read(&mut self.buf) {
            Ok(0) => {
                info!("serial input: end of host input");
                self.input_done = true;
                self.unwatch_input(ops);
            }
            Ok(len) => {
                self.pending = 0..len;
                self.queue_pending();
                if !self.pending.is_empty() || !self.fifo_has_room() {
                    debug!("serial input: guest RX FIFO full, pausing host input");
                    self.unwatch_input(ops);
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                warn!("serial input: reading host input failed, no more input: {e}");
                self.input_done = true;
                self.unwatch_input(ops);
            }
        }
    }

    /// The guest emptied the RX FIFO.
    fn fifo_drained(&mut self, ops: &mut EventOps) {
        // Consume the signal; `WouldBlock` only means it was already consumed.
        let _ = self.input_drained.read();
        self.queue_pending();
        if self.pending.is_empty() && !self.watching && !self.input_done && self.fifo_has_room() {
            self.watch_input(ops);
        }
    }
}

impl MutEventSubscriber for SerialInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.input_drained.as_raw_fd() {
            self.fifo_drained(ops);
        } else if fd == self.input.as_raw_fd() {
            if self.watching {
                self.read_input(ops);
            }
        } else {
            warn!("serial input: event on unexpected fd {fd}");
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.input_drained, EventSet::IN)) {
            // Without it a paused input could never resume: take no input.
            warn!("serial input: cannot watch the RX-drained event, host input disabled: {e}");
            self.input_done = true;
            return;
        }
        self.watch_input(ops);
    }
}

impl fmt::Debug for SerialInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialInput")
            .field("input_fd", &self.input.as_raw_fd())
            .field("pending", &self.pending.len())
            .field("watching", &self.watching)
            .field("input_done", &self.input_done)
            .finish_non_exhaustive()
    }
}

/// Locks the serial device, even if a vCPU thread panicked while holding it:
/// the UART state stays consistent between register accesses.
fn lock(serial: &Mutex<Serial>) -> MutexGuard<'_, Serial> {
    serial.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::io::FromRawFd;

    use event_manager::{EventManager, SubscriberOps};

    use super::*;
    use crate::BusDevice;

    const RBR: u64 = 0;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const MCR_LOOP: u8 = 0x10;
    const LSR_DATA_READY: u8 = 0x01;

    type Manager = EventManager<Arc<Mutex<SerialInput>>>;

    /// A pipe: (read end, write end).
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints, as pipe2 requires.
        let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(ret, 0, "pipe2: {}", io::Error::last_os_error());
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn setup(input: Box<dyn SerialInputSource>) -> (Arc<Mutex<Serial>>, Manager) {
        let serial = Arc::new(Mutex::new(Serial::new(Box::new(io::sink())).unwrap()));
        let subscriber = SerialInput::new(serial.clone(), input).unwrap();
        let mut manager = Manager::new().unwrap();
        manager.add_subscriber(Arc::new(Mutex::new(subscriber)));
        (serial, manager)
    }

    /// What the guest driver does on an RX interrupt: read RBR while LSR
    /// says data is ready.
    fn guest_drain(serial: &Mutex<Serial>) -> Vec<u8> {
        let mut serial = serial.lock().unwrap();
        let mut got = Vec::new();
        loop {
            let mut lsr = [0];
            serial.read(LSR, &mut lsr);
            if lsr[0] & LSR_DATA_READY == 0 {
                return got;
            }
            let mut byte = [0];
            serial.read(RBR, &mut byte);
            got.push(byte[0]);
        }
    }

    /// Runs the event loop until it goes idle for a short while; returns how
    /// many events were dispatched in total.
    fn run_until_idle(manager: &mut Manager) -> usize {
        let mut total = 0;
        for _ in 0..100 {
            match manager.run_with_timeout(20).unwrap() {
                0 => return total,
                n => total += n,
            }
        }
        panic!("event loop did not go idle");
    }

    #[test]
    fn bytes_written_into_the_pipe_reach_the_guest() {
        let (rx, mut tx) = pipe();
        let (serial, mut manager) = setup(Box::new(rx));
        tx.write_all(b"hello\n").unwrap();
        run_until_idle(&mut manager);
        assert_eq!(guest_drain(&serial), b"hello\n");

        tx.write_all(b"again").unwrap();
        run_until_idle(&mut manager);
        assert_eq!(guest_drain(&serial), b"again");
    }

    #[test]
    fn full_fifo_pauses_input_without_losing_bytes() {
        let (rx, mut tx) = pipe();
        let (serial, mut manager) = setup(Box::new(rx));
        // More than one read chunk, far more than the FIFO holds.
        let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&sent).unwrap();

        // The FIFO fills and the subscriber stops watching the input: with
        // the guest not reading, the event loop goes quiet instead of spinning.
        run_until_idle(&mut manager);
        assert_eq!(serial.lock().unwrap().input_capacity(), 0);
        assert_eq!(manager.run_with_timeout(20).unwrap(), 0);

        let mut received = Vec::new();
        for _ in 0..10_000 {
            received.extend(guest_drain(&serial));
            if received.len() >= sent.len() {
                break;
            }
            // The drain signal is ready now; one dispatch moves the next bytes.
            manager.run_with_timeout(1000).unwrap();
        }
        assert_eq!(received.len(), sent.len());
        assert!(received == sent, "bytes lost or reordered");

        // Input is watched again once everything was delivered.
        tx.write_all(b"tail").unwrap();
        run_until_idle(&mut manager);
        assert_eq!(guest_drain(&serial), b"tail");
    }

    #[test]
    fn end_of_input_delivers_pending_bytes_and_stops_watching() {
        let (rx, mut tx) = pipe();
        let (serial, mut manager) = setup(Box::new(rx));
        let sent: Vec<u8> = (0..100).collect();
        tx.write_all(&sent).unwrap();
        drop(tx);

        let mut received = Vec::new();
        for _ in 0..100 {
            run_until_idle(&mut manager);
            let got = guest_drain(&serial);
            if got.is_empty() {
                break;
            }
            received.extend(got);
        }
        assert_eq!(received, sent);
        // The hung-up pipe is no longer watched: no wake-ups at all.
        assert_eq!(manager.run_with_timeout(20).unwrap(), 0);
    }

    #[test]
    fn loopback_mode_holds_host_input_until_the_guest_reads_again() {
        let (rx, mut tx) = pipe();
        let (serial, mut manager) = setup(Box::new(rx));
        serial.lock().unwrap().write(MCR, &[MCR_LOOP]);
        tx.write_all(b"abc").unwrap();
        run_until_idle(&mut manager);
        assert_eq!(manager.run_with_timeout(20).unwrap(), 0);

        // The guest leaves loopback mode and polls RBR, as Linux's 8250
        // driver does on startup: the held bytes follow.
        serial.lock().unwrap().write(MCR, &[0]);
        assert!(guest_drain(&serial).is_empty());
        let mut rbr = [0];
        serial.lock().unwrap().read(RBR, &mut rbr);
        run_until_idle(&mut manager);
        assert_eq!(guest_drain(&serial), b"abc");
    }

    #[test]
    fn unpollable_input_is_disabled_without_spinning() {
        // /dev/null cannot be added to epoll (EPERM); if some kernel allows
        // it, it reads EOF at once. Either way the loop goes quiet.
        let (serial, mut manager) = setup(Box::new(File::open("/dev/null").unwrap()));
        run_until_idle(&mut manager);
        assert_eq!(manager.run_with_timeout(20).unwrap(), 0);
        assert!(guest_drain(&serial).is_empty());
    }
}
