//! Boots the no_std test guest on real KVM through every boot path and
//! checks what the guest itself observed and reported over COM1.

use mercury_tests::{config_with_serial_file, detail_value, guest_image, run_guest, TempDir};
use vmm_core::VmExit;

/// The guest's first line: `TEST-GUEST START protocol=<p> cmdline=<...>`.
fn start_line(serial: &str) -> &str {
    serial
        .lines()
        .find(|l| l.starts_with("TEST-GUEST START"))
        .unwrap_or_else(|| panic!("no START line in:\n{serial}"))
}

fn boot(image: &str, checks: &str, vcpus: u8, memory_mib: u64) -> mercury_tests::GuestRun {
    let dir = TempDir::new("boot");
    let mut config = config_with_serial_file(&guest_image(image), &dir);
    config.cmdline = format!("console=ttyS0 checks={checks}");
    config.vcpus = vcpus;
    config.memory_mib = memory_mib;
    run_guest(config)
}

#[test]
fn pvh_entry_reports_protocol_memory_cmdline_and_boot_timer() {
    let run = boot("test-guest", "serial,memory,cpuid,timer", 1, 128);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    let start = start_line(&run.serial);
    assert!(start.contains("protocol=pvh"), "{start}");
    assert!(
        start.contains("checks=serial,memory,cpuid,timer"),
        "{start}"
    );
    run.passed("serial");
    let memory = run.passed("memory");
    assert_eq!(detail_value(&memory, "mib"), Some("128"), "{memory}");
    let cpuid = run.passed("cpuid");
    assert_eq!(detail_value(&cpuid, "apic_id"), Some("0"), "{cpuid}");
    assert_eq!(detail_value(&cpuid, "hypervisor"), Some("1"), "{cpuid}");
    assert_eq!(detail_value(&cpuid, "kvm"), Some("1"), "{cpuid}");
    run.passed("timer");
    assert!(run.serial.contains("TEST-GUEST END"));
    let boot_time = run
        .boot_time
        .expect("boot timer recorded after the guest wrote it");
    assert!(!boot_time.is_zero());
}

#[test]
fn linux_64bit_entry_from_elf() {
    let run = boot("test-guest-elf64", "serial,memory,timer", 1, 256);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert!(start_line(&run.serial).contains("protocol=linux64"));
    assert_eq!(detail_value(&run.passed("memory"), "mib"), Some("256"));
    run.passed("timer");
    assert!(run.boot_time.is_some());
}

#[test]
fn linux_64bit_entry_from_bzimage() {
    let run = boot("test-guest-bzimage", "serial,memory", 1, 128);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert!(start_line(&run.serial).contains("protocol=linux64"));
    assert_eq!(detail_value(&run.passed("memory"), "mib"), Some("128"));
    // The timer check was not asked for, so nothing was recorded.
    assert_eq!(run.boot_time, None);
}

#[test]
fn memory_above_the_mmio_gap_is_reported_by_e820() {
    // 4 GiB: 3.25 GiB below the 32-bit MMIO gap, the rest above 4 GiB.
    let run = boot("test-guest-elf64", "memory", 1, 4096);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert_eq!(detail_value(&run.passed("memory"), "mib"), Some("4096"));
}

fn smp(vcpus: u8) {
    let run = boot("test-guest", "smp", vcpus, 128);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    let detail = run.passed("smp");
    let n = vcpus.to_string();
    assert_eq!(detail_value(&detail, "cpus"), Some(n.as_str()), "{detail}");
    assert_eq!(
        detail_value(&detail, "expected"),
        Some(n.as_str()),
        "{detail}"
    );
    let ids: Vec<String> = (0..vcpus).map(|i| i.to_string()).collect();
    assert_eq!(
        detail_value(&detail, "apic_ids"),
        Some(ids.join(",").as_str()),
        "{detail}"
    );
}

#[test]
fn one_vcpu_comes_up() {
    smp(1);
}

#[test]
fn four_vcpus_come_up() {
    smp(4);
}

#[test]
fn triple_fault_ends_the_vm_with_shutdown() {
    let run = boot("test-guest", "triple-fault", 1, 128);
    run.passed("triple-fault");
    assert_eq!(
        run.exit,
        VmExit::Shutdown { vcpu: 0 },
        "serial:\n{}",
        run.serial
    );
    assert!(!run.serial.contains("TEST-GUEST END"));
}
