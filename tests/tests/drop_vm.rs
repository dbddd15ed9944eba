//! Dropping a running `Vm` stops it: `drop` returns, the vCPU threads are
//! gone and the guest prints nothing more. Alone in its test binary (its
//! own process), so the vCPU threads counted are this VM's.

use std::sync::mpsc;
use std::time::Duration;

use mercury_tests::{config_with_serial_file, guest_image, heartbeats, TempDir};
use vmm_core::Vm;

/// How long `drop` may take before the test calls it hung.
const DROP_LIMIT: Duration = Duration::from_secs(30);

/// Threads of this process whose name starts with `vcpu` (vmm-core names
/// them `vcpu<N>`).
fn vcpu_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("vcpu"))
        })
        .count()
}

fn wait_until(what: &str, serial: &std::path::Path, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within 60 s; guest console:\n{}",
            std::fs::read_to_string(serial).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dropping_a_running_vm_stops_it() {
    let dir = TempDir::new("drop");
    let serial = dir.path().join("serial.log");
    let mut config = config_with_serial_file(&guest_image("test-guest"), &dir);
    config.cmdline = "checks=heartbeat".into();
    config.vcpus = 2;
    let mut vm = Vm::new(config).unwrap();
    vm.start().unwrap();
    wait_until("two vCPU threads", &serial, || vcpu_threads() == 2);
    wait_until("a heartbeat", &serial, || heartbeats(&serial) > 0);

    let (dropped, done) = mpsc::channel();
    std::thread::spawn(move || {
        drop(vm);
        let _ = dropped.send(());
    });
    if done.recv_timeout(DROP_LIMIT).is_err() {
        panic!(
            "dropping the VM did not return within {DROP_LIMIT:?}; guest console:\n{}",
            std::fs::read_to_string(&serial).unwrap_or_default()
        );
    }
    assert_eq!(vcpu_threads(), 0, "vCPU threads outlived the dropped VM");
    let at_drop = heartbeats(&serial);
    // Several heartbeat periods: a running guest would print again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        heartbeats(&serial),
        at_drop,
        "the guest kept printing after its VM was dropped"
    );
}
