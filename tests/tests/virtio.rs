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
