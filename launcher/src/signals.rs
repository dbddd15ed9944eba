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

use vmm_core::StopHandle;

/// The signals that ask mercury to stop the VM.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// The signal that presses the guest's power button.
const POWER_BUTTON_SIGNAL: libc::c_int = libc::SIGPWR;

/// The blocked stop and power-button signals, ready to be handed to a VM.
pub(crate) struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    /// Blocks the stop and power-button signals in the calling thread. Call
    /// it before creating any thread.
    pub(crate) fn block() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sigemptyset returned 0, so the set is initialised.
        let mut set = unsafe { set.assume_init() };
        for signal in STOP_SIGNALS.into_iter().chain([POWER_BUTTON_SIGNAL]) {
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
        Ok(StopSignals { set })
    }

    /// Starts the thread that stops the VM on the first stop signal and
    /// presses its power button on each SIGPWR. The thread ends with the
    /// process.
    pub(crate) fn stop_on_signal(self, vm: StopHandle) -> io::Result<()> {
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: `self.set` is an initialised sigset_t blocked in
                // this thread (inherited); `signal` is a valid out pointer.
                let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
                if rc != 0 {
                    continue;
                }
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

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a stop signal",
    }
}
