//! Host termination signals stop the VM cleanly: SIGINT, SIGTERM and SIGHUP
//! become [`StopHandle::stop`], so `mercury run` ends with its exit line and
//! exit status 4 (stopped by the host) instead of dying mid-flight.
//!
//! SIGPWR presses the guest's ACPI power button
//! ([`StopHandle::power_button`]), as `lxc-stop` sends SIGPWR to ask a
//! container's init to power off: the guest decides, and mercury runs on
//! until it powers off (exit status 0) or a stop signal arrives.
//!
//! The signals are blocked in the calling thread before any other thread
//! exists (every thread the VM starts inherits the mask), and one thread
//! takes them synchronously with `sigwait`: no async-signal-safety concerns,
//! and a vCPU thread is never interrupted by them.

use std::io;
use std::mem::MaybeUninit;
use std::thread;
use std::time::{Duration, Instant};

use vmm_core::StopHandle;

/// The signals that ask mercury to stop: a VM (`mercury run`) or the
/// cluster watcher (`mercury cluster reconcile --watch`).
pub(crate) const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// The signal that presses the guest's power button.
const POWER_BUTTON_SIGNAL: libc::c_int = libc::SIGPWR;

/// A set of signals blocked in the thread that made it (and every thread
/// it starts afterwards), to be taken synchronously with [`Self::wait`] or
/// [`Self::wait_timeout`] instead of by a handler.
#[derive(Debug)]
pub(crate) struct BlockedSignals {
    set: libc::sigset_t,
}

impl BlockedSignals {
    /// Blocks `signals` in the calling thread. Call it before creating any
    /// thread that must not take them.
    pub(crate) fn block(signals: &[libc::c_int]) -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sigemptyset returned 0, so the set is initialised.
        let mut set = unsafe { set.assume_init() };
        for &signal in signals {
            // SAFETY: `set` is an initialised sigset_t; `signal` is valid.
            if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(BlockedSignals { set })
    }

    /// Waits, as long as it takes, for one of the signals; returns it.
    pub(crate) fn wait(&self) -> io::Result<libc::c_int> {
        let mut signal: libc::c_int = 0;
        // SAFETY: `self.set` is an initialised sigset_t blocked in the
        // calling thread (by `block` or inherited); `signal` is a valid out
        // pointer.
        match unsafe { libc::sigwait(&self.set, &mut signal) } {
            0 => Ok(signal),
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    }

    /// Waits up to `timeout` (zero: only looks) for one of the signals;
    /// returns it, or `None` on timeout.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> Option<libc::c_int> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = libc::timespec {
                tv_sec: left.as_secs().try_into().unwrap_or(i32::MAX.into()),
                tv_nsec: libc::c_long::from(left.subsec_nanos()),
            };
            // SAFETY: `self.set` is an initialised sigset_t; a null siginfo
            // pointer is allowed; `ts` is a valid timespec.
            let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
            if signal > 0 {
                return Some(signal);
            }
            let e = io::Error::last_os_error();
            // EINTR: another signal's handler ran; wait for the rest.
            if e.raw_os_error() != Some(libc::EINTR) || left.is_zero() {
                return None;
            }
        }
    }
}

/// The blocked stop and power-button signals, ready to be handed to a VM.
pub(crate) struct StopSignals {
    signals: BlockedSignals,
}

impl StopSignals {
    /// Blocks the stop and power-button signals in the calling thread. Call
    /// it before creating any thread.
    pub(crate) fn block() -> io::Result<Self> {
        let mut signals = STOP_SIGNALS.to_vec();
        signals.push(POWER_BUTTON_SIGNAL);
        Ok(StopSignals {
            signals: BlockedSignals::block(&signals)?,
        })
    }

    /// Starts the thread that stops the VM on the first stop signal and
    /// presses its power button on each SIGPWR. The thread ends with the
    /// process.
    pub(crate) fn stop_on_signal(self, vm: StopHandle) -> io::Result<()> {
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let Ok(signal) = self.signals.wait() else {
                    continue;
                };
                if signal == POWER_BUTTON_SIGNAL {
                    match vm.power_button() {
                        Ok(()) => log::warn!(
                            "received SIGPWR, pressed the guest's power button; waiting for it to power off"
                        ),
                        Err(e) => log::warn!("received SIGPWR: {e}"),
                    }
                } else {
                    log::warn!("received {}, stopping the VM", signal_name(signal));
                    vm.stop();
                }
            })
            .map(drop)
    }
}

/// `SIGTERM`: the name of one of [`STOP_SIGNALS`].
pub(crate) fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a stop signal",
    }
}
