//! Boots the no_std test guest on real KVM through every boot path and
//! checks what the guest itself observed and reported over COM1.

use mercury_tests::{
    config_with_serial_file, detail_value, guest_image, output_after, run_guest, GuestRun, TempDir,
};
use vmm_core::VmExit;

/// The guest's first line: `TEST-GUEST START protocol=<p> cmdline=<...>`.
fn start_line(serial: &str) -> &str {
    serial
        .lines()
        .find(|l| l.starts_with("TEST-GUEST START"))
        .unwrap_or_else(|| panic!("no START line in:\n{serial}"))
}

/// Boots `image` with `checks`, announcing the configured memory size to
/// the `memory` check (`expect_mib=`).
fn boot(image: &str, checks: &str, vcpus: u8, memory_mib: u64) -> GuestRun {
    boot_with_cmdline(
        image,
        &format!("console=ttyS0 checks={checks} expect_mib={memory_mib}"),
        vcpus,
        memory_mib,
    )
}

fn boot_with_cmdline(image: &str, cmdline: &str, vcpus: u8, memory_mib: u64) -> GuestRun {
    let dir = TempDir::new("boot");
    let mut config = config_with_serial_file(&guest_image(image), &dir);
    config.cmdline = cmdline.to_string();
    config.vcpus = vcpus;
    config.memory_mib = memory_mib;
    run_guest(config)
}

/// Asserts what the `serial` check observed of COM1: the scratch register
/// kept both patterns, the transmitter was idle, the loopback token came
/// back byte for byte, and no host input was waiting (a file sink has none).
fn assert_serial(run: &GuestRun) {
    let detail = run.passed("serial");
    assert_eq!(detail_value(&detail, "scratch"), Some("5a,a5"), "{detail}");
    assert_eq!(detail_value(&detail, "lsr"), Some("0x60"), "{detail}");
    assert_eq!(
        detail_value(&detail, "loopback"),
        Some("mercury"),
        "{detail}"
    );
    assert_eq!(
        detail_value(&detail, "loopback_bytes"),
        Some("7"),
        "{detail}"
    );
    assert_eq!(detail_value(&detail, "rx_discarded"), Some("0"), "{detail}");
}

/// Asserts the `memory` check found `mib` MiB, as announced.
fn assert_memory(run: &GuestRun, mib: u64) {
    let detail = run.passed("memory");
    let mib = mib.to_string();
    assert_eq!(detail_value(&detail, "mib"), Some(mib.as_str()), "{detail}");
    assert_eq!(
        detail_value(&detail, "expect_mib"),
        Some(mib.as_str()),
        "{detail}"
    );
}

/// Asserts the `timer` check read back exactly the boot time the VMM
/// recorded, in whole µs.
fn assert_timer(run: &GuestRun) {
    let detail = run.passed("timer");
    let boot_time = run
        .boot_time
        .expect("boot timer recorded after the guest wrote it");
    let micros = boot_time.as_micros().to_string();
    assert_eq!(
        detail_value(&detail, "boot_timer_us"),
        Some(micros.as_str()),
        "the guest read back a value other than Vm::boot_time() ({boot_time:?}): {detail}"
    );
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
    assert_serial(&run);
    assert_memory(&run, 128);
    let cpuid = run.passed("cpuid");
    assert_eq!(detail_value(&cpuid, "apic_id"), Some("0"), "{cpuid}");
    assert_eq!(detail_value(&cpuid, "lapic_id"), Some("0"), "{cpuid}");
    assert_eq!(detail_value(&cpuid, "hypervisor"), Some("1"), "{cpuid}");
    assert_eq!(detail_value(&cpuid, "kvm"), Some("1"), "{cpuid}");
    assert_timer(&run);
    assert!(run.serial.contains("TEST-GUEST END"));
}

#[test]
fn timer_check_run_twice_reads_the_first_record_again() {
    let run = boot("test-guest", "timer,timer", 1, 128);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    let micros = run.boot_time.expect("boot timer recorded").as_micros();
    let lines: Vec<&str> = run
        .serial
        .lines()
        .filter(|l| l.starts_with("CHECK timer "))
        .collect();
    assert_eq!(
        lines,
        [
            format!("CHECK timer PASS boot_timer_us={micros}"),
            format!("CHECK timer PASS boot_timer_us={micros}"),
        ],
        "serial:\n{}",
        run.serial
    );
}

#[test]
fn linux_64bit_entry_from_elf() {
    let run = boot("test-guest-elf64", "serial,memory,timer", 1, 256);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert!(start_line(&run.serial).contains("protocol=linux64"));
    assert_serial(&run);
    assert_memory(&run, 256);
    assert_timer(&run);
}

#[test]
fn linux_64bit_entry_from_bzimage() {
    let run = boot("test-guest-bzimage", "serial,memory", 1, 128);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert!(start_line(&run.serial).contains("protocol=linux64"));
    assert_serial(&run);
    assert_memory(&run, 128);
    // The timer check was not asked for, so nothing was recorded.
    assert_eq!(run.boot_time, None);
}

#[test]
fn memory_above_the_mmio_gap_is_reported_by_e820() {
    // 4 GiB: 3.25 GiB below the 32-bit MMIO gap, the rest above 4 GiB.
    let run = boot("test-guest-elf64", "memory", 1, 4096);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert_memory(&run, 4096);
}

#[test]
fn memory_fails_when_the_announced_size_differs() {
    let run = boot_with_cmdline("test-guest", "checks=memory expect_mib=64", 1, 128);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert_eq!(
        run.checks().get("memory"),
        Some(&(false, "mib=128 expect_mib=64 reason=mismatch".to_string())),
        "serial:\n{}",
        run.serial
    );
}

#[test]
fn memory_fails_on_an_announcement_that_is_not_a_number() {
    // The last `expect_mib=` counts, as the last `checks=` does.
    let run = boot_with_cmdline(
        "test-guest-bzimage",
        "expect_mib=128 checks=memory expect_mib=12x",
        1,
        128,
    );
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert_eq!(
        run.checks().get("memory"),
        Some(&(
            false,
            "mib=128 expect_mib=12x reason=bad-expect_mib".to_string()
        )),
        "serial:\n{}",
        run.serial
    );
}

#[test]
fn memory_fails_without_an_announced_size() {
    let run = boot_with_cmdline("test-guest-elf64", "checks=memory", 1, 256);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert_eq!(
        run.checks().get("memory"),
        Some(&(
            false,
            "mib=256 expect_mib=none reason=no-expected-size-announced".to_string()
        )),
        "serial:\n{}",
        run.serial
    );
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
    // `serial` after the fault: a guest that kept running would print it.
    let run = boot("test-guest", "triple-fault,serial", 1, 128);
    assert_eq!(
        run.exit,
        VmExit::Shutdown { vcpu: 0 },
        "serial:\n{}",
        run.serial
    );
    // The guest announced the fault and said nothing after it: no verdict
    // of its own (only the VMM's exit reason is one), no further check.
    assert_eq!(
        output_after(&run.serial, "TEST-GUEST TRIPLE-FAULT about to fault"),
        Some(""),
        "serial:\n{}",
        run.serial
    );
    assert!(run.checks().is_empty(), "serial:\n{}", run.serial);
}
