//! vCPU threads: the `KVM_RUN` loop, exit dispatch to the buses, and the
//! signal that kicks a vCPU out of `KVM_RUN`.

use std::cell::Cell;
use std::sync::{Arc, Once};
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::arch;
use crate::bus::Bus;
use crate::lifecycle::{FirstRun, Lifecycle, Request, VcpuRegistration, VmExit};

/// The real-time signal (offset from SIGRTMIN) used to kick vCPU threads.
const KICK_SIGNAL_OFFSET: libc::c_int = 0;

/// The signal number used to kick vCPU threads out of `KVM_RUN`.
pub(crate) fn kick_signal() -> libc::c_int {
    SIGRTMIN() + KICK_SIGNAL_OFFSET
}

thread_local! {
    /// This thread's `kvm_run` page, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Setting immediate_exit closes the race where the signal lands after
    // the thread checked its request but before it entered KVM_RUN: KVM_RUN
    // then returns EINTR at once instead of running the guest.
    let ptr = KVM_RUN.with(Cell::get);
    if !ptr.is_null() {
        // SAFETY: the pointer is this thread's mapped kvm_run page, set by
        // the vCPU thread before it first runs and valid while the VcpuFd
        // lives (the thread clears it before dropping the fd). A volatile
        // byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*ptr).immediate_exit).write_volatile(1) };
    }
}

/// Clears this thread's [`KVM_RUN`] pointer when dropped.
struct ForgetKvmRun;

impl Drop for ForgetKvmRun {
    fn drop(&mut self) {
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
    }
}

/// Installs the kick handler once per process.
pub(crate) fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| result = register_signal_handler(kick_signal(), handle_kick));
    result
}

/// Everything a vCPU thread needs.
pub(crate) struct Vcpu {
    pub(crate) index: u8,
    pub(crate) fd: VcpuFd,
    pub(crate) pio: Arc<Bus>,
    pub(crate) mmio: Arc<Bus>,
    pub(crate) memory: GuestMemoryMmap,
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// Counts this vCPU as running until the `Vcpu` is dropped: at the end
    /// of its thread, or unstarted if the thread cannot be spawned.
    pub(crate) registration: VcpuRegistration,
    /// The VM's time origin, for timestamps.
    pub(crate) origin: std::time::Instant,
}

/// What one exit asks the loop to do next.
enum Next {
    Continue,
    Exit(VmExit),
}

impl Vcpu {
    /// Starts the vCPU thread.
    pub(crate) fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("vcpu{}", self.index))
            .spawn(move || self.run())
    }

    /// The thread body. Dropping `self` at the end (or while unwinding from
    /// a panic) drops the registration, which tells the VM this vCPU ended.
    fn run(mut self) {
        KVM_RUN.with(|c| c.set(self.fd.get_kvm_run() as *mut kvm_run));
        // Locals drop before parameters: the kick handler forgets the
        // kvm_run page before `self.fd` unmaps it, on a panic too.
        let _forget_kvm_run = ForgetKvmRun;
        self.registration.announce_thread();
        if let Some(outcome) = self.run_loop() {
            self.lifecycle.request_exit(outcome);
        }
    }

    /// Runs until asked to stop (returns None) or the guest ends the VM.
    fn run_loop(&mut self) -> Option<VmExit> {
        let mut first = true;
        loop {
            match self.lifecycle.request() {
                Request::Run => {}
                Request::Pause => {
                    if self.lifecycle.park() == Request::Stop {
                        return None;
                    }
                    continue;
                }
                Request::Stop => return None,
            }
            if first {
                first = false;
                self.record_first_run();
            }
            match self.run_once() {
                Next::Continue => {}
                Next::Exit(outcome) => return Some(outcome),
            }
        }
    }

    fn record_first_run(&self) {
        let mut cpu = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut cpu) };
        self.lifecycle.record_first_run(FirstRun {
            wall: self.origin.elapsed(),
            cpu: std::time::Duration::new(cpu.tv_sec as u64, cpu.tv_nsec as u32),
        });
    }

    fn run_once(&mut self) -> Next {
        let index = self.index;
        let result = match self.fd.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    if !self.pio.read(u64::from(port), data) {
                        // Nothing decodes the port: the bus floats high.
                        data.fill(0xff);
                    }
                    Next::Continue
                }
                VcpuExit::IoOut(port, data) => {
                    if !self.pio.write(u64::from(port), data) {
                        log::trace!("vCPU {index}: unhandled PIO write at {port:#x}");
                    }
                    Next::Continue
                }
                VcpuExit::MmioRead(addr, data) => {
                    if !self.mmio.read(addr, data) {
                        log::debug!("vCPU {index}: unhandled MMIO read at {addr:#x}");
                        data.fill(0);
                    }
                    Next::Continue
                }
                VcpuExit::MmioWrite(addr, data) => {
                    if !self.mmio.write(addr, data) {
                        log::debug!("vCPU {index}: unhandled MMIO write at {addr:#x}");
                    }
                    Next::Continue
                }
                VcpuExit::Shutdown => {
                    log::error!(
                        "vCPU {index} shut down (triple fault): {}",
                        arch::shutdown_state(&self.fd)
                    );
                    Next::Exit(VmExit::Shutdown { vcpu: index })
                }
                VcpuExit::SystemEvent(kind, _) => Next::Exit(system_event_exit(kind, index)),
                VcpuExit::InternalError => Next::Exit(self.internal_error()),
                VcpuExit::FailEntry(reason, cpu) => Next::Exit(VmExit::VcpuError {
                    vcpu: index,
                    message: format!(
                        "KVM_EXIT_FAIL_ENTRY: hardware reason {reason:#x} on host CPU {cpu}"
                    ),
                }),
                VcpuExit::Hlt => Next::Exit(VmExit::VcpuError {
                    vcpu: index,
                    message: "unexpected HLT exit with the in-kernel irqchip".into(),
                }),
                other => Next::Exit(VmExit::VcpuError {
                    vcpu: index,
                    message: format!("unhandled KVM exit {other:?}"),
                }),
            },
            Err(e) if e.errno() == libc::EINTR => {
                // Kicked: clear the flag the handler set and re-check the request.
                self.fd.set_kvm_immediate_exit(0);
                Next::Continue
            }
            // An AP woken for INIT/SIPI returns EAGAIN: run it again.
            Err(e) if e.errno() == libc::EAGAIN => Next::Continue,
            Err(e) => Next::Exit(VmExit::VcpuError {
                vcpu: index,
                message: format!("KVM_RUN failed: {e}"),
            }),
        };
        result
    }

    fn internal_error(&mut self) -> VmExit {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal`
        // is the active member of the exit union.
        let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
        let (pc, instruction) = arch::faulting_instruction(&self.fd, &self.memory);
        VmExit::InternalError {
            vcpu: self.index,
            suberror,
            pc,
            instruction,
        }
    }
}

/// Maps a `KVM_EXIT_SYSTEM_EVENT` (PSCI on arm64, some x86 paths) to an exit.
fn system_event_exit(kind: u32, vcpu: u8) -> VmExit {
    match kind {
        kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::PowerOff,
        kvm_bindings::KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
        other => VmExit::VcpuError {
            vcpu,
            message: format!("unhandled system event {other}"),
        },
    }
}
