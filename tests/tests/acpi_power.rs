//! The ACPI platform as a guest sees it on real KVM: the test guest finds
//! the RSDP, walks and checksums the tables, counts the MADT's CPUs, then
//! powers off through the FADT's sleep control register (S5 from the
//! DSDT's `\_S5_`) or reports a panic through pvpanic.

use mercury_tests::{
    config_with_serial_file, detail_value, guest_image, output_after, run_guest, GuestRun, TempDir,
};
use vmm_core::VmExit;

fn boot(image: &str, checks: &str, vcpus: u8) -> GuestRun {
    let dir = TempDir::new("acpi");
    let mut config = config_with_serial_file(&guest_image(image), &dir);
    config.cmdline = format!("console=ttyS0 checks={checks}");
    config.vcpus = vcpus;
    run_guest(config)
}

/// Asserts what the `acpi` (or `acpi-scan`) check reported for `vcpus`.
fn assert_tables(run: &GuestRun, check: &str, from: &str, vcpus: u8) {
    let detail = run.passed(check);
    let value = |key| detail_value(&detail, key).unwrap_or_else(|| panic!("no {key}= in {detail}"));
    // The tables: where mercury puts them, reached the way the guest says.
    assert_eq!(value("rsdp"), "0xe0000", "{detail}");
    assert_eq!(value("from"), from, "{detail}");
    assert_eq!(value("root"), "XSDT", "{detail}");
    assert_eq!(value("tables"), "FACP,APIC,DSDT", "{detail}");
    // One enabled local APIC per vCPU, the same CPUs as the MP table.
    let n = vcpus.to_string();
    let ids: Vec<String> = (0..vcpus).map(|i| i.to_string()).collect();
    assert_eq!(value("lapics"), n, "{detail}");
    assert_eq!(value("expected"), n, "{detail}");
    assert_eq!(value("apic_ids"), ids.join(","), "{detail}");
    // Hardware-reduced, with the power-control port as every register.
    assert_eq!(value("hw_reduced"), "1", "{detail}");
    assert_eq!(value("reset_reg_sup"), "1", "{detail}");
    assert_eq!(value("sleep_control"), "io:0x3c0", "{detail}");
    assert_eq!(value("sleep_status"), "io:0x3c0", "{detail}");
    assert_eq!(value("reset"), "io:0x3c0", "{detail}");
    assert_eq!(value("reset_value"), "0x01", "{detail}");
    assert_eq!(value("s5"), "5", "{detail}");
}

#[test]
fn acpi_tables_with_one_vcpu() {
    let run = boot("test-guest", "acpi", 1);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert_tables(&run, "acpi", "boot", 1);
}

#[test]
fn acpi_tables_with_four_vcpus() {
    let run = boot("test-guest", "acpi", 4);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert_tables(&run, "acpi", "boot", 4);
}

#[test]
fn linux_boot_params_point_at_the_rsdp_and_a_scan_finds_it_too() {
    let run = boot("test-guest-bzimage", "acpi,acpi-scan", 2);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    assert_tables(&run, "acpi", "boot", 2);
    assert_tables(&run, "acpi-scan", "scan", 2);
}

#[test]
fn writing_s5_to_the_sleep_control_register_powers_off() {
    // `serial` after `poweroff`: a guest that kept running would print it.
    let run = boot("test-guest", "poweroff,serial", 2);
    assert_eq!(run.exit, VmExit::PowerOff, "serial:\n{}", run.serial);
    let detail = run.passed("poweroff");
    assert_eq!(
        detail_value(&detail, "value"),
        Some("0x34"),
        "SLP_TYP 5 << 2 | SLP_EN: {detail}"
    );
    assert_eq!(detail_value(&detail, "to"), Some("io:0x3c0"), "{detail}");
    assert_eq!(detail_value(&detail, "slp_typ"), Some("5"), "{detail}");
    assert_eq!(
        output_after(&run.serial, "CHECK poweroff PASS"),
        Some(""),
        "the guest ran on after powering off"
    );
}

#[test]
fn pvpanic_ends_the_vm_as_a_guest_panic() {
    let run = boot("test-guest", "pvpanic,serial", 1);
    assert_eq!(run.exit, VmExit::GuestPanic, "serial:\n{}", run.serial);
    let detail = run.passed("pvpanic");
    // The device advertises PANICKED | CRASH_LOADED, as QEMU's.
    assert_eq!(detail_value(&detail, "events"), Some("0x03"), "{detail}");
    assert_eq!(detail_value(&detail, "to"), Some("io:0x505"), "{detail}");
    assert_eq!(
        output_after(&run.serial, "CHECK pvpanic PASS"),
        Some(""),
        "the guest ran on after its panic"
    );
}

/// The host's power button reaches the guest: the test guest finds the GED
/// (`ACPI0013`, its window and line) and the power button (`PNP0C0C`) in
/// the DSDT, says it waits, and polls the GED's event register; after
/// [`Vm::power_button`] it reads the power-button event once (the read
/// clears it), then powers off as a Linux guest would.
#[test]
fn the_power_button_sets_the_ged_event_the_guest_reads() {
    use std::time::{Duration, Instant};
    use vmm_core::{Vm, VmError};

    let dir = TempDir::new("acpi-power-button");
    let mut config = config_with_serial_file(&guest_image("test-guest"), &dir);
    config.cmdline = "console=ttyS0 checks=power-button,poweroff".into();
    let serial_path = dir.path().join("serial.log");
    let serial = || std::fs::read_to_string(&serial_path).unwrap_or_default();
    let mut vm = Vm::new(config).expect("build VM");
    assert!(
        matches!(vm.power_button(), Err(VmError::NotStarted)),
        "pressing before start"
    );
    vm.start().expect("start VM");
    let deadline = Instant::now() + mercury_tests::GUEST_TIMEOUT;
    while !serial().contains("TEST-GUEST POWER-BUTTON WAITING") {
        if Instant::now() > deadline || vm.exit().is_some() {
            vm.stop();
            panic!(
                "the guest never waited for the button\nserial:\n{}",
                serial()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    vm.stop_handle()
        .power_button()
        .expect("press the power button");
    let exit = vm.wait_timeout(mercury_tests::GUEST_TIMEOUT);
    let serial = serial();
    assert_eq!(exit, Some(VmExit::PowerOff), "serial:\n{serial}");
    let run = GuestRun {
        exit: VmExit::PowerOff,
        serial,
        boot_time: vm.boot_time(),
    };
    let detail = run.passed("power-button");
    assert_eq!(detail_value(&detail, "events"), Some("0x1"), "{detail}");
    assert_eq!(detail_value(&detail, "after"), Some("0x0"), "{detail}");
    assert_eq!(detail_value(&detail, "ged"), Some("0xd0100000"), "{detail}");
    assert_eq!(detail_value(&detail, "irq"), Some("23"), "{detail}");
    assert_eq!(detail_value(&detail, "pwrb"), Some("1"), "{detail}");
    run.passed("poweroff");
    assert!(
        matches!(vm.power_button(), Err(VmError::NotRunning)),
        "pressing after the exit"
    );
}
