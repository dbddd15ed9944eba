//! One test per rig scenario: boots L1 once, runs the scenario in it and
//! requires every listed RIG-RESULT line to be present and PASS (and no
//! FAIL line, RIG-DONE seen, no timeout, the scenario script exiting 0).
//!
//! These are slow (an L1 boot under TCG each, plus guest-image builds on a
//! fresh cache): see docs/RIG.md. They run one at a time, because two L1
//! VMs on a 2-core machine would only slow each other down.

use std::sync::Mutex;

use mercury_rig::{Rig, RunOptions, Status};

static ONE_L1_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs of a scenario after the first, each only when the one before failed
/// with evidence that the environment (not mercury) broke.
const ENVIRONMENT_RETRIES: u32 = 4;

fn run_scenario(name: &str, required: &[&str]) {
    let _guard = ONE_L1_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let rig = Rig::from_env();
    let mut report = run_once(&rig, name);
    // L1 is a Debian kernel hosting KVM on QEMU-TCG's emulated SVM. That
    // environment fails on its own now and then (about once in 25-75
    // 2-vCPU guest boots): L1's kernel oopses, soft-locks or hangs, or the
    // emulated SVM resumes a guest vCPU at an address inside L1's kvm
    // module (docs/RIG.md, "Known defects of the environment"). A run with
    // such evidence says nothing about mercury, so it is run again, loudly,
    // up to ENVIRONMENT_RETRIES times. Without that evidence, a guest or
    // mercury failure fails at once.
    for retry in 1..=ENVIRONMENT_RETRIES {
        if report.require(required).is_ok() {
            break;
        }
        let Some(why) = report.environment_failure() else {
            break;
        };
        eprintln!(
            "rig: the environment failed during `{name}` ({why}); console log {}; \
             running the scenario again ({retry} of {ENVIRONMENT_RETRIES})",
            report.console_log.display()
        );
        report = run_once(&rig, name);
    }
    if let Err(failure) = report.require(required) {
        // The failure carries the problems, the console log path and its tail.
        panic!("{failure}");
    }
    eprintln!("{report}");
    // `require` covers these; spelled out so each expectation is visible here.
    for check in required {
        let status = report.result(check).map(|r| r.status);
        assert_eq!(
            status,
            Some(Status::Pass),
            "check `{check}` of scenario `{name}`"
        );
    }
    assert!(report.done, "RIG-DONE not seen");
}

fn run_once(rig: &Rig, name: &str) -> mercury_rig::RunReport {
    match rig.run(name, &RunOptions::default()) {
        Ok(report) => report,
        Err(err) => {
            let mut message = format!("rig could not run `{name}`: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!("\n  caused by: {cause}"));
                source = cause.source();
            }
            panic!("{message}");
        }
    }
}

#[test]
fn smoke() {
    run_scenario(
        "smoke",
        &[
            "rig-modules",
            "rig-kvm",
            "kvm-dev",
            "kvm-nested",
            "mercury-help",
            "tap-bridge",
        ],
    );
}

#[test]
fn linux_boot() {
    run_scenario(
        "linux-boot",
        &[
            "rig-modules",
            "rig-kvm",
            "vmlinux-smp1-entry",
            "vmlinux-smp1-exit",
            "vmlinux-smp1-init",
            "vmlinux-smp1-info",
            "vmlinux-smp2-entry",
            "vmlinux-smp2-exit",
            "vmlinux-smp2-init",
            "vmlinux-smp2-info",
            "elf64-smp1-entry",
            "elf64-smp1-exit",
            "elf64-smp1-init",
            "elf64-smp1-info",
            "elf64-smp2-entry",
            "elf64-smp2-exit",
            "elf64-smp2-init",
            "elf64-smp2-info",
            "bzimage-smp1-entry",
            "bzimage-smp1-exit",
            "bzimage-smp1-init",
            "bzimage-smp1-info",
            "bzimage-smp2-entry",
            "bzimage-smp2-exit",
            "bzimage-smp2-init",
            "bzimage-smp2-info",
            "poweroff-exit",
            "panic",
            "panic-noinit",
        ],
    );
}

#[test]
fn test_guest() {
    run_scenario(
        "test-guest",
        &[
            "rig-modules",
            "rig-kvm",
            "test-guest-exit",
            "test-guest-end",
            "test-guest-serial",
            "test-guest-cpuid",
            "test-guest-smp",
            "test-guest-timer",
        ],
    );
}

/// A benchmark, not a pass/fail test: not in CI (`cargo test -p mercury-rig
/// -- --ignored boot_bench` runs it). Its 40+ boots per run also surfaced an
/// intermittent failure still being investigated (docs/BENCHMARKS.md,
/// "Known problems"), which must not gate unrelated changes.
#[test]
#[ignore = "benchmark; run by hand"]
fn boot_bench() {
    run_scenario(
        "boot-bench",
        &["rig-modules", "rig-kvm", "bench-kernels", "bench-cmdline"],
    );
}
