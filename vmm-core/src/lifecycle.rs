//! VM lifecycle shared by the VM handle, the vCPU threads and the VMM thread:
//! what the vCPUs are asked to do, why the VM ended, and how to interrupt a
//! vCPU that sits in `KVM_RUN`.
//!
//! ```text
//!            pause()              stop() / guest exit
//!  Running ──────────▶ Paused ─────────────────────────▶ Stopping ──▶ (all vCPUs exited)
//!     ▲     resume()     │                                  ▲
//!     └──────────────────┘                                  │
//!     └─────────────────────────────────────────────────────┘
//! ```
//! The first exit reason recorded wins; later ones (another vCPU seeing the
//! same reset, a host stop racing a guest reboot) are logged and dropped.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// Why a VM stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmExit {
    /// The guest reset the machine (x86: i8042 0xFE; what `reboot` does).
    Reset,
    /// The guest powered the machine off (x86: ACPI S5).
    PowerOff,
    /// The guest kernel reported a panic (pvpanic). Its console already
    /// holds the panic message: the kernel reports after printing it.
    GuestPanic,
    /// KVM reported a shutdown of a vCPU (x86: triple fault).
    Shutdown {
        /// The vCPU that shut down.
        vcpu: u8,
    },
    /// KVM could not handle the guest (`KVM_EXIT_INTERNAL_ERROR`).
    InternalError {
        /// The vCPU.
        vcpu: u8,
        /// KVM's suberror (1 = emulation failure).
        suberror: u32,
        /// Guest instruction pointer.
        pc: u64,
        /// Bytes at the instruction pointer, when they could be read.
        instruction: Vec<u8>,
    },
    /// A vCPU failed for a reason on the host side (an ioctl error, an exit
    /// the VMM does not handle).
    VcpuError {
        /// The vCPU.
        vcpu: u8,
        /// What failed.
        message: String,
    },
    /// The host stopped the VM.
    Stopped,
}

impl VmExit {
    /// True for the exits a guest asks for on purpose: reset and power-off.
    pub fn is_clean(&self) -> bool {
        matches!(self, VmExit::Reset | VmExit::PowerOff)
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Reset => write!(f, "guest reset (reboot)"),
            VmExit::PowerOff => write!(f, "guest powered off"),
            VmExit::GuestPanic => write!(f, "guest kernel panicked"),
            VmExit::Shutdown { vcpu } => write!(f, "vCPU {vcpu} shut down (triple fault)"),
            VmExit::InternalError {
                vcpu,
                suberror,
                pc,
                instruction,
            } => {
                write!(
                    f,
                    "KVM internal error on vCPU {vcpu}: suberror {suberror}{}, pc {pc:#x}, instruction bytes [",
                    if *suberror == 1 { " (emulation failure)" } else { "" }
                )?;
                for (i, b) in instruction.iter().enumerate() {
                    write!(f, "{}{b:02x}", if i > 0 { " " } else { "" })?;
                }
                write!(f, "]")
            }
            VmExit::VcpuError { vcpu, message } => write!(f, "vCPU {vcpu} failed: {message}"),
            VmExit::Stopped => write!(f, "stopped by the host"),
        }
    }
}

/// What the vCPU threads are asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Request {
    Run = 0,
    Pause = 1,
    Stop = 2,
}

/// Timestamps of the first `KVM_RUN`, relative to the process-start origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstRun {
    /// Wall time from process start to the first `KVM_RUN`.
    pub wall: Duration,
    /// CPU time the whole process had used by then.
    pub cpu: Duration,
}

/// A vCPU thread's pthread id, only ever handed to `pthread_kill`.
#[derive(Clone, Copy)]
struct VcpuThread(libc::pthread_t);

// SAFETY: `pthread_t` is an opaque id; on musl it is a pointer, which makes it
// `!Send`, but it is never dereferenced here, only passed to `pthread_kill`
// while the thread is registered (under the state lock).
unsafe impl Send for VcpuThread {}

struct State {
    outcome: Option<VmExit>,
    /// pthread ids of the vCPU threads still running, by vCPU index.
    threads: Vec<Option<VcpuThread>>,
    paused: usize,
    /// [`VcpuRegistration`]s alive: vCPUs that exist and have not ended.
    /// A vCPU whose thread never started, or whose thread panicked, drops
    /// its registration all the same, so waiting on this cannot hang.
    live: usize,
}

/// The shared lifecycle of one VM.
pub(crate) struct Lifecycle {
    /// Fast path for vCPUs: checked after every exit without locking.
    request: AtomicU8,
    state: Mutex<State>,
    changed: Condvar,
    kick_signal: libc::c_int,
    first_run: OnceLock<FirstRun>,
}

impl Lifecycle {
    pub(crate) fn new(vcpus: usize, kick_signal: libc::c_int) -> Self {
        Lifecycle {
            request: AtomicU8::new(Request::Run as u8),
            state: Mutex::new(State {
                outcome: None,
                threads: vec![None; vcpus],
                paused: 0,
                live: 0,
            }),
            changed: Condvar::new(),
            kick_signal,
            first_run: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn request(&self) -> Request {
        match self.request.load(Ordering::Acquire) {
            0 => Request::Run,
            1 => Request::Pause,
            _ => Request::Stop,
        }
    }

    /// Sets the request and interrupts every running vCPU. Called with the
    /// state lock held so a vCPU cannot exit between the check and the kick.
    fn set_request_and_kick(&self, state: &State, request: Request) {
        self.request.store(request as u8, Ordering::Release);
        for thread in state.threads.iter().flatten() {
            // SAFETY: the thread is registered and has not deregistered
            // (which it does under this same lock before it ends), so the
            // pthread id is valid; the kick signal has a handler installed.
            unsafe { libc::pthread_kill(thread.0, self.kick_signal) };
        }
        self.changed.notify_all();
    }

    /// Records why the VM ends (first caller wins) and stops every vCPU.
    pub(crate) fn request_exit(&self, outcome: VmExit) {
        let mut state = self.lock();
        match &state.outcome {
            None => {
                log::info!("VM exit: {outcome}");
                state.outcome = Some(outcome);
            }
            Some(first) => log::debug!("VM exit {outcome} after {first}, ignored"),
        }
        self.set_request_and_kick(&state, Request::Stop);
    }

    /// Asks all vCPUs to pause and waits until each is paused or gone.
    /// Returns false if the VM is already stopping.
    pub(crate) fn pause(&self) -> bool {
        let mut state = self.lock();
        if self.request() == Request::Stop {
            return false;
        }
        self.set_request_and_kick(&state, Request::Pause);
        while state.paused < state.live && self.request() == Request::Pause {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        self.request() == Request::Pause
    }

    /// Lets paused vCPUs run again. Returns false if the VM is stopping.
    pub(crate) fn resume(&self) -> bool {
        let state = self.lock();
        if self.request() == Request::Stop {
            return false;
        }
        self.request.store(Request::Run as u8, Ordering::Release);
        drop(state);
        self.changed.notify_all();
        true
    }

    /// Counts vCPU `index` as alive until the returned registration is
    /// dropped: when its thread ends, or when the vCPU is dropped without
    /// ever running (its thread could not be spawned).
    pub(crate) fn enlist_vcpu(self: &Arc<Self>, index: usize) -> VcpuRegistration {
        self.lock().live += 1;
        VcpuRegistration {
            lifecycle: Arc::clone(self),
            index,
        }
    }

    /// Called by a vCPU thread that saw a pause request: parks it until the
    /// request changes. Returns the new request.
    pub(crate) fn park(&self) -> Request {
        let mut state = self.lock();
        state.paused += 1;
        self.changed.notify_all();
        while self.request() == Request::Pause {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.paused -= 1;
        self.request()
    }

    /// Waits until every enlisted vCPU has ended.
    pub(crate) fn wait_all_exited(&self) {
        let mut state = self.lock();
        while state.live > 0 {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits up to `timeout` for every vCPU thread to exit; true if they did.
    pub(crate) fn wait_all_exited_timeout(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.live > 0)
            .unwrap_or_else(|e| e.into_inner());
        state.live == 0
    }

    /// Why the VM ended, if it did.
    pub(crate) fn outcome(&self) -> Option<VmExit> {
        self.lock().outcome.clone()
    }

    pub(crate) fn record_first_run(&self, first: FirstRun) {
        let _ = self.first_run.set(first);
    }

    pub(crate) fn first_run(&self) -> Option<FirstRun> {
        self.first_run.get().copied()
    }
}

/// A vCPU's place in the [`Lifecycle`]: while it exists the VM counts the
/// vCPU as running, and the vCPU's thread can be kicked once it has
/// announced itself. Dropping it (the thread ended, panicked, or was never
/// spawned) is the only way a vCPU leaves, so [`Lifecycle::wait_all_exited`]
/// cannot wait for a vCPU that will never end.
pub(crate) struct VcpuRegistration {
    lifecycle: Arc<Lifecycle>,
    index: usize,
}

impl VcpuRegistration {
    /// Called on the vCPU's own thread: lets the lifecycle kick it.
    pub(crate) fn announce_thread(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.lifecycle.lock().threads[self.index] = Some(VcpuThread(me));
    }
}

impl Drop for VcpuRegistration {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The VM cannot go on with a vCPU missing.
            self.lifecycle.request_exit(VmExit::VcpuError {
                vcpu: u8::try_from(self.index).unwrap_or(u8::MAX),
                message: "the vCPU thread panicked".to_string(),
            });
        }
        let mut state = self.lifecycle.lock();
        state.threads[self.index] = None;
        state.live -= 1;
        self.lifecycle.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_outcome_wins() {
        let l = Lifecycle::new(1, 0);
        l.request_exit(VmExit::Reset);
        l.request_exit(VmExit::Stopped);
        assert_eq!(l.outcome(), Some(VmExit::Reset));
        assert_eq!(l.request(), Request::Stop);
        // Once stopping, pause and resume refuse.
        assert!(!l.pause());
        assert!(!l.resume());
    }

    #[test]
    fn pause_waits_for_parked_vcpus() {
        let l = Arc::new(Lifecycle::new(2, 0));
        let workers: Vec<_> = (0..2)
            .map(|index| {
                let registration = l.enlist_vcpu(index);
                let l = l.clone();
                std::thread::spawn(move || {
                    // A vCPU loop without KVM: spin until asked to stop.
                    let _registration = registration;
                    let mut parks = 0;
                    loop {
                        match l.request() {
                            Request::Run => std::thread::yield_now(),
                            Request::Pause => {
                                parks += 1;
                                if l.park() == Request::Stop {
                                    break;
                                }
                            }
                            Request::Stop => break,
                        }
                    }
                    parks
                })
            })
            .collect();
        assert!(l.pause());
        assert_eq!(l.lock().paused, 2);
        assert!(l.resume());
        l.request_exit(VmExit::Stopped);
        l.wait_all_exited();
        let parks: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(parks, vec![1, 1]);
    }

    /// A vCPU whose thread cannot be spawned still leaves the lifecycle:
    /// std drops the thread's closure, and with it the registration.
    #[test]
    fn a_vcpu_thread_that_never_starts_is_not_waited_for() {
        let l = Arc::new(Lifecycle::new(2, 0));
        let running = l.enlist_vcpu(0);
        let never_started = l.enlist_vcpu(1);
        // A stack no system can map: pthread_create fails.
        let spawned = std::thread::Builder::new()
            .stack_size(usize::MAX / 4)
            .spawn(move || drop(never_started));
        assert!(spawned.is_err(), "the oversized stack was mapped");
        assert!(!l.wait_all_exited_timeout(Duration::from_millis(10)));
        drop(running);
        assert!(l.wait_all_exited_timeout(Duration::from_secs(5)));
    }

    /// A vCPU thread that panics leaves the lifecycle while unwinding.
    #[test]
    fn a_panicking_vcpu_thread_is_not_waited_for() {
        let l = Arc::new(Lifecycle::new(1, 0));
        let registration = l.enlist_vcpu(0);
        let thread = std::thread::spawn(move || {
            registration.announce_thread();
            panic!("vCPU thread failed");
        });
        assert!(thread.join().is_err());
        assert!(l.wait_all_exited_timeout(Duration::from_secs(5)));
        assert!(
            l.lock().threads[0].is_none(),
            "a dead thread stays kickable"
        );
        assert!(
            matches!(l.outcome(), Some(VmExit::VcpuError { vcpu: 0, ref message }) if message.contains("panicked")),
            "{:?}",
            l.outcome()
        );
    }

    #[test]
    fn internal_error_display_names_details() {
        let e = VmExit::InternalError {
            vcpu: 1,
            suberror: 1,
            pc: 0x1000,
            instruction: vec![0x0f, 0xae],
        };
        let s = e.to_string();
        assert!(
            s.contains("emulation failure") && s.contains("0x1000") && s.contains("0f ae"),
            "{s}"
        );
        assert!(!e.is_clean());
        assert!(VmExit::PowerOff.is_clean());
        assert!(!VmExit::GuestPanic.is_clean());
        assert_eq!(VmExit::GuestPanic.to_string(), "guest kernel panicked");
    }
}
