//! Pause, resume and stop through the library API, on a guest that prints a
//! heartbeat forever.

use std::time::{Duration, Instant};

use mercury_tests::{config_with_serial_file, guest_image, heartbeats, TempDir};
use vmm_core::{Vm, VmError, VmExit, VmState};

/// Waits until the guest printed more than `n` heartbeats.
fn wait_for_more(path: &std::path::Path, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = heartbeats(path);
        if now > n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat after {n} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pause_resume_stop() {
    let dir = TempDir::new("lifecycle");
    let serial = dir.path().join("serial.log");
    let mut config = config_with_serial_file(&guest_image("test-guest"), &dir);
    config.cmdline = "checks=heartbeat".into();
    config.vcpus = 2;
    let mut vm = Vm::new(config).unwrap();
    assert_eq!(vm.state(), VmState::Created);
    assert!(matches!(vm.pause(), Err(VmError::NotStarted)));
    vm.start().unwrap();
    assert!(matches!(vm.start(), Err(VmError::AlreadyStarted)));
    assert_eq!(vm.state(), VmState::Running);

    let seen = wait_for_more(&serial, 0);
    vm.pause().unwrap();
    assert_eq!(vm.state(), VmState::Paused);
    let at_pause = heartbeats(&serial);
    assert!(at_pause >= seen);
    // Several heartbeat periods pass; a paused guest prints nothing.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(heartbeats(&serial), at_pause, "guest ran while paused");

    vm.resume().unwrap();
    assert_eq!(vm.state(), VmState::Running);
    wait_for_more(&serial, at_pause);

    vm.stop();
    assert_eq!(
        vm.wait_timeout(Duration::from_secs(30)),
        Some(VmExit::Stopped)
    );
    assert_eq!(vm.state(), VmState::Exited);
    assert!(matches!(vm.resume(), Err(VmError::NotRunning)));
}

#[test]
fn stop_a_halted_guest() {
    let dir = TempDir::new("halt");
    let mut config = config_with_serial_file(&guest_image("test-guest"), &dir);
    config.cmdline = "checks=serial,halt".into();
    let mut vm = Vm::new(config).unwrap();
    vm.start().unwrap();
    // Wait for the guest to reach its halt.
    let serial = dir.path().join("serial.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&serial)
        .unwrap_or_default()
        .contains("CHECK serial PASS")
    {
        assert!(Instant::now() < deadline, "guest never printed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The vCPU sits in KVM_RUN, halted in the kernel: the kick must reach it.
    vm.stop();
    assert_eq!(
        vm.wait_timeout(Duration::from_secs(30)),
        Some(VmExit::Stopped)
    );
    assert!(vm.first_run().is_some());
}

/// Each VM times its boot from its own origin: a VM built after another
/// (and after a pause) reports only its own boot time, and a caller's
/// origin is honoured.
#[test]
fn each_vm_times_its_boot_from_its_own_origin() {
    let boot_timer_run = |origin: Option<Instant>| {
        let dir = TempDir::new("origin");
        let mut config = config_with_serial_file(&guest_image("test-guest"), &dir);
        config.cmdline = "checks=timer".into();
        let mut vm = match origin {
            Some(origin) => Vm::with_origin(config, origin).unwrap(),
            None => Vm::new(config).unwrap(),
        };
        vm.start().unwrap();
        let exit = vm.wait_timeout(Duration::from_secs(60));
        assert_eq!(exit, Some(VmExit::Reset));
        vm.boot_time().expect("the guest wrote the boot timer")
    };
    // A first VM, then time passes: with one origin per process, the
    // second VM's boot time would include both.
    boot_timer_run(None);
    std::thread::sleep(Duration::from_secs(1));
    let before = Instant::now();
    let second = boot_timer_run(None);
    let whole_run = before.elapsed();
    assert!(
        second <= whole_run,
        "boot time {second:?} exceeds the {whole_run:?} the VM existed"
    );
    let hour = Duration::from_secs(3600);
    if let Some(origin) = Instant::now().checked_sub(hour) {
        let given = boot_timer_run(Some(origin));
        assert!(
            given >= hour,
            "boot time {given:?} ignores the given origin"
        );
    }
}
