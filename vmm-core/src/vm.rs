//! The VM handle: build, start, pause, resume, stop, wait for the exit.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::legacy::BootTimerHandle;
use devices::PowerButton;
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::builder::{build_microvm, BuildError};
use crate::config::VmConfig;
use crate::device_manager::VmmEventManager;
use crate::lifecycle::{FirstRun, Lifecycle, VmExit};
use crate::vcpu::Vcpu;
use crate::vmm_thread::VmmThread;

/// Errors of lifecycle operations on a built VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `start` was called twice.
    #[error("the VM was already started")]
    AlreadyStarted,
    /// The VM has not been started yet.
    #[error("the VM has not been started")]
    NotStarted,
    /// The VM is stopping or has stopped.
    #[error("the VM is no longer running")]
    NotRunning,
    /// The power button's interrupt could not be raised.
    #[error("cannot press the power button: {0}")]
    PowerButton(#[source] std::io::Error),
    /// A thread could not be spawned.
    #[error("cannot spawn the {what} thread: {source}")]
    SpawnThread {
        /// Which thread.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where a VM is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Built, not started.
    Created,
    /// vCPUs are running (or parked by a pause in progress).
    Running,
    /// All vCPUs are paused.
    Paused,
    /// The VM ended; see [`Vm::exit`].
    Exited,
}

/// Stops a VM, or asks its guest to power off, from any thread; see
/// [`Vm::stop_handle`]. Stopping a VM that already exited does nothing: the
/// first exit reason wins.
#[derive(Clone)]
pub struct StopHandle {
    lifecycle: Arc<Lifecycle>,
    power_button: PowerButton,
}

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle").finish_non_exhaustive()
    }
}

impl StopHandle {
    /// Same as [`Vm::stop`].
    pub fn stop(&self) {
        self.lifecycle.request_exit(VmExit::Stopped);
    }

    /// Same as [`Vm::power_button`].
    pub fn power_button(&self) -> Result<(), VmError> {
        press(&self.lifecycle, &self.power_button)
    }
}

/// Presses `button` unless the VM already ended.
fn press(lifecycle: &Lifecycle, button: &PowerButton) -> Result<(), VmError> {
    if lifecycle.outcome().is_some() {
        return Err(VmError::NotRunning);
    }
    button.press().map_err(VmError::PowerButton)
}

/// A KVM microVM.
///
/// ```no_run
/// use vmm_core::{Vm, VmConfig, VmExit};
/// let mut config = VmConfig::new("vmlinux");
/// config.vcpus = 2;
/// let mut vm = Vm::new(config)?;
/// vm.start()?;
/// let exit = vm.wait();
/// assert_eq!(exit, VmExit::Reset);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Vm {
    lifecycle: Arc<Lifecycle>,
    pending_vcpus: Vec<Vcpu>,
    pending_event_manager: Option<VmmEventManager>,
    vcpu_threads: Vec<JoinHandle<()>>,
    vmm_thread: Option<VmmThread>,
    boot_timer: BootTimerHandle,
    power_button: PowerButton,
    paused: bool,
    // Kept for the VM's lifetime: the VM fd owns the in-kernel devices, the
    // memory mapping backs the memslots.
    _memory: GuestMemoryMmap,
    _vm: VmFd,
    _kvm: Kvm,
}

impl Vm {
    /// Builds a VM from `config`: validates it, creates guest memory, loads
    /// the kernel (and initrd), attaches devices and configures the vCPUs.
    /// Nothing runs until [`Vm::start`]. The boot timer and
    /// [`Vm::first_run`] count from the moment this is called.
    pub fn new(config: VmConfig) -> Result<Vm, BuildError> {
        Self::with_origin(config, Instant::now())
    }

    /// Like [`Vm::new`], with the boot timer and [`Vm::first_run`] counting
    /// from `origin` instead: the CLI passes its process start, so that its
    /// boot times include its own start-up, as Firecracker's do. Each VM
    /// has its own origin, so several VMs in one process time themselves
    /// independently.
    pub fn with_origin(config: VmConfig, origin: Instant) -> Result<Vm, BuildError> {
        let built = build_microvm(&config, origin)?;
        log::debug!(
            "built VM: {} vCPU(s), {} MiB, kernel entry {:#x} ({:?})",
            config.vcpus,
            config.memory_mib,
            built.kernel.entry.0,
            built.kernel.protocol
        );
        Ok(Vm {
            lifecycle: built.lifecycle,
            pending_vcpus: built.vcpus,
            pending_event_manager: Some(built.devices.event_manager),
            vcpu_threads: Vec::new(),
            vmm_thread: None,
            boot_timer: built.devices.boot_timer,
            power_button: built.devices.power_button,
            paused: false,
            _memory: built.memory,
            _vm: built.vm,
            _kvm: built.kvm,
        })
    }

    /// Starts the VMM thread and the vCPU threads.
    pub fn start(&mut self) -> Result<(), VmError> {
        self.start_with(Vcpu::spawn)
    }

    /// [`Vm::start`] with the vCPU thread spawner as a parameter, so that a
    /// test can make spawning fail.
    fn start_with(
        &mut self,
        mut spawn_vcpu: impl FnMut(Vcpu) -> std::io::Result<JoinHandle<()>>,
    ) -> Result<(), VmError> {
        let Some(event_manager) = self.pending_event_manager.take() else {
            return Err(VmError::AlreadyStarted);
        };
        let vmm = VmmThread::spawn(event_manager).map_err(|source| VmError::SpawnThread {
            what: "VMM",
            source,
        })?;
        self.vmm_thread = Some(vmm);
        for vcpu in self.pending_vcpus.drain(..) {
            let index = vcpu.index;
            match spawn_vcpu(vcpu) {
                Ok(handle) => self.vcpu_threads.push(handle),
                Err(source) => {
                    // Stop what already runs; the VM is unusable. The vCPUs
                    // not started were dropped (the failed one with the
                    // spawner's closure, the rest with this drain), and with
                    // them their registrations: `wait` does not wait for them.
                    self.lifecycle.request_exit(VmExit::VcpuError {
                        vcpu: index,
                        message: format!("cannot spawn the vCPU thread: {source}"),
                    });
                    return Err(VmError::SpawnThread {
                        what: "vCPU",
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> VmState {
        if self.pending_event_manager.is_some() {
            VmState::Created
        } else if self.lifecycle.outcome().is_some() {
            VmState::Exited
        } else if self.paused {
            VmState::Paused
        } else {
            VmState::Running
        }
    }

    /// Pauses every vCPU; returns once all are out of `KVM_RUN`.
    pub fn pause(&mut self) -> Result<(), VmError> {
        self.check_started()?;
        if !self.lifecycle.pause() {
            return Err(VmError::NotRunning);
        }
        self.paused = true;
        Ok(())
    }

    /// Resumes paused vCPUs.
    pub fn resume(&mut self) -> Result<(), VmError> {
        self.check_started()?;
        if !self.lifecycle.resume() {
            return Err(VmError::NotRunning);
        }
        self.paused = false;
        Ok(())
    }

    /// Asks the VM to stop; [`Vm::wait`] then returns [`VmExit::Stopped`]
    /// unless the guest ended first.
    pub fn stop(&self) {
        self.lifecycle.request_exit(VmExit::Stopped);
    }

    /// Presses the guest's power button (x86: the DSDT's `PNP0C0C` device,
    /// notified through the ACPI Generic Event Device; arm64: a PL061 GPIO
    /// line the FDT gives to `gpio-keys`): a request, not a stop. The
    /// guest decides: Linux (`CONFIG_ACPI_BUTTON`, or `CONFIG_KEYBOARD_GPIO`
    /// with `CONFIG_GPIO_PL061`) turns it into a `KEY_POWER` press, on
    /// which systemd-logind or acpid power it off, and [`Vm::wait`] then
    /// returns [`VmExit::PowerOff`]; a guest
    /// that ignores it keeps running (stop it after a timeout of your
    /// choosing). A guest that has not yet bound its button driver misses
    /// the press. Fails with [`VmError::NotStarted`] before [`Vm::start`]
    /// and [`VmError::NotRunning`] once the VM ended.
    pub fn power_button(&self) -> Result<(), VmError> {
        self.check_started()?;
        press(&self.lifecycle, &self.power_button)
    }

    /// A handle that can stop this VM, or press its power button, from
    /// another thread (a signal handling thread, a control socket) while
    /// this one blocks in [`Vm::wait`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            lifecycle: Arc::clone(&self.lifecycle),
            power_button: self.power_button.clone(),
        }
    }

    /// Blocks until the VM has exited; returns why. For a VM never started,
    /// returns [`VmExit::Stopped`] at once.
    pub fn wait(&mut self) -> VmExit {
        if self.pending_event_manager.is_some() {
            self.lifecycle.request_exit(VmExit::Stopped);
        } else {
            self.lifecycle.wait_all_exited();
        }
        self.join_threads();
        self.lifecycle.outcome().unwrap_or(VmExit::Stopped)
    }

    /// Like [`Vm::wait`], but gives up after `timeout` and returns None
    /// (the VM keeps running).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<VmExit> {
        if self.pending_event_manager.is_some() {
            return Some(self.wait());
        }
        if !self.lifecycle.wait_all_exited_timeout(timeout) {
            return None;
        }
        Some(self.wait())
    }

    /// Why the VM ended, if it has.
    pub fn exit(&self) -> Option<VmExit> {
        self.lifecycle.outcome()
    }

    /// Time from the VM's origin ([`Vm::new`], or the instant given to
    /// [`Vm::with_origin`]) until the guest wrote the boot timer.
    pub fn boot_time(&self) -> Option<Duration> {
        self.boot_timer.get()
    }

    /// Wall time from the VM's origin to its first `KVM_RUN`, and the CPU
    /// time the whole process had used by then.
    pub fn first_run(&self) -> Option<FirstRun> {
        self.lifecycle.first_run()
    }

    fn check_started(&self) -> Result<(), VmError> {
        if self.pending_event_manager.is_some() {
            return Err(VmError::NotStarted);
        }
        Ok(())
    }

    fn join_threads(&mut self) {
        for handle in self.vcpu_threads.drain(..) {
            let _ = handle.join();
        }
        if let Some(vmm) = self.vmm_thread.take() {
            vmm.stop();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !self.vcpu_threads.is_empty() || self.vmm_thread.is_some() {
            self.lifecycle.request_exit(VmExit::Stopped);
            self.join_threads();
        }
    }
}

/// Builds and starts a VM, then waits for it to end.
pub fn run_to_exit(config: VmConfig) -> Result<(VmExit, Option<Duration>), crate::Error> {
    let mut vm = Vm::new(config)?;
    vm.start()?;
    let exit = vm.wait();
    Ok((exit, vm.boot_time()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    /// The no_std test guest, built by the repository's image recipe.
    fn test_guest() -> PathBuf {
        let build = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-images/build");
        let out = Command::new(build)
            .arg("test-guest")
            .output()
            .expect("run guest-images/build");
        assert!(
            out.status.success(),
            "guest-images/build test-guest: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    }

    /// When the second vCPU's thread cannot be spawned, `start` fails and
    /// `wait` still returns: the vCPUs that never ran are not waited for.
    #[test]
    #[cfg_attr(
        not(target_arch = "x86_64"),
        ignore = "boots the x86 test guest on /dev/kvm"
    )]
    fn wait_returns_when_a_vcpu_thread_cannot_be_spawned() {
        let mut config = VmConfig::new(test_guest());
        config.vcpus = 3;
        config.serial = crate::SerialSink::None;
        config.cmdline = "checks=halt".into();
        let mut vm = Vm::new(config).expect("build VM");
        let mut spawned = 0;
        let result = vm.start_with(|vcpu| {
            spawned += 1;
            if vcpu.index == 1 {
                return Err(std::io::Error::other("forced failure"));
            }
            vcpu.spawn()
        });
        assert!(
            matches!(result, Err(VmError::SpawnThread { what: "vCPU", .. })),
            "{result:?}"
        );
        assert_eq!(spawned, 2, "vCPU 2 must not be spawned after vCPU 1 failed");
        let exit = vm.wait_timeout(Duration::from_secs(30));
        match exit {
            Some(VmExit::VcpuError { vcpu: 1, message }) => {
                assert!(message.contains("forced failure"), "{message}")
            }
            other => panic!("expected vCPU 1's spawn error, got {other:?}"),
        }
        assert_eq!(vm.state(), VmState::Exited);
    }
}
