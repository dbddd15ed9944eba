//! Pause, resume and stop through the library API, on a guest that prints a
//! heartbeat forever.

use std::time::{Duration, Instant};

use mercury_tests::{config_with_serial_file, guest_image, TempDir};
use vmm_core::{Vm, VmError, VmExit, VmState};

fn heartbeats(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("HEARTBEAT"))
        .count()
}

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

#[test]
fn dropping_a_running_vm_stops_it() {
    let dir = TempDir::new("drop");
    let mut config = config_with_serial_file(&guest_image("test-guest"), &dir);
    config.cmdline = "checks=halt".into();
    let mut vm = Vm::new(config).unwrap();
    vm.start().unwrap();
    drop(vm); // must not hang
}
