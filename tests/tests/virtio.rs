//! virtio devices on real KVM, driven by the test guest's own virtio-mmio
//! driver (guest-images/test-guest/src/virtio): what the guest read and
//! wrote, and what the host observed afterwards.

use mercury_tests::{config_with_serial_file, detail_value, guest_image, run_guest, TempDir};
use vmm_core::{VmConfig, VmExit};

fn config(dir: &TempDir, cmdline: &str) -> VmConfig {
    let mut config = config_with_serial_file(&guest_image("test-guest"), dir);
    config.cmdline = cmdline.to_string();
    config
}

/// The entropy device answers through both discovery routes, and the DSDT
/// lists exactly the windows the command line announces.
#[test]
fn rng_bytes_through_the_cmdline_and_the_acpi_route() {
    for route in ["", "virtio_route=acpi "] {
        let dir = TempDir::new("virtio-rng");
        let mut config = config(&dir, &format!("{route}checks=virtio-rng,virtio-acpi"));
        config.rng = true;
        let run = run_guest(config);
        assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
        let rng = run.passed("virtio-rng");
        assert_eq!(detail_value(&rng, "bytes"), Some("64"), "{rng}");
        let acpi = run.passed("virtio-acpi");
        assert_eq!(detail_value(&acpi, "acpi_devices"), Some("1"), "{acpi}");
        assert_eq!(detail_value(&acpi, "ids"), Some("4"), "{acpi}");
        let start = run
            .serial
            .lines()
            .find(|l| l.starts_with("TEST-GUEST START"))
            .unwrap();
        assert!(
            start.contains("virtio_mmio.device=4K@0xd0001000:5"),
            "{start}"
        );
    }
}

/// Without the device, the guest finds nothing: the check can fail.
#[test]
fn no_rng_configured_no_rng_found() {
    let dir = TempDir::new("virtio-none");
    let run = run_guest(config(&dir, "checks=virtio-rng"));
    let checks = run.checks();
    assert_eq!(
        checks.get("virtio-rng"),
        Some(&(false, "no-rng-device".to_string())),
        "serial:\n{}",
        run.serial
    );
}

/// A malicious driver (the test guest's `virtio-attack`): status writes out
/// of order, bad queue sizes, a queue that does not exist, config writes
/// out of range, buffers outside guest memory and across the MMIO gap (the
/// guest has RAM on both sides of it), lengths that overflow, wrong
/// directions, a descriptor loop, a runaway available index. The VMM keeps
/// running, the device answers or asks for a reset, and works afterwards.
#[test]
fn a_malicious_driver_cannot_break_the_vmm_or_the_device() {
    let dir = TempDir::new("virtio-attack");
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 64 * 512]).unwrap();
    let mut config = config(&dir, "checks=virtio-attack,virtio-rng,virtio-blk");
    config.rng = true;
    config.memory_mib = 3584;
    config.disks = vec![vmm_core::DiskConfig {
        path: image,
        read_only: false,
        id: None,
    }];
    let run = run_guest(config);
    assert_eq!(run.exit, VmExit::Reset, "serial:\n{}", run.serial);
    let attacks: Vec<&str> = run
        .serial
        .lines()
        .filter(|l| l.starts_with("VIRTIO-ATTACK "))
        .collect();
    assert_eq!(attacks.len(), 9, "serial:\n{}", run.serial);
    for line in &attacks {
        assert!(line.contains(" survived "), "{line}");
    }
    assert!(
        attacks
            .iter()
            .any(|l| l
                .starts_with("VIRTIO-ATTACK runaway-avail-index survived needs-reset,recovered")),
        "the runaway index must set DEVICE_NEEDS_RESET:\n{}",
        run.serial
    );
    let verdict = run.passed("virtio-attack");
    assert_eq!(detail_value(&verdict, "survived"), Some("9"), "{verdict}");
    // The device still serves a well-behaved driver afterwards, and so does
    // the disk beside it.
    run.passed("virtio-rng");
    run.passed("virtio-blk");
}
