//! One test per rig scenario: boots L1 once, runs the scenario in it and
//! requires every listed RIG-RESULT line to be present and PASS (and no
//! FAIL line, RIG-DONE seen, no timeout, the scenario script exiting 0).
//!
//! These are slow (an L1 boot under TCG each, plus guest-image builds on a
//! fresh cache): see docs/RIG.md. They run one at a time, because two L1
//! VMs on a 2-core machine would only slow each other down. Progress (the
//! scenario, L1 reaching /init, boot n of m, each verdict) goes straight to
//! stderr, so it shows even while the test harness captures output.
//!
//! Reruns: the emulated host fails now and then on its own (docs/RIG.md,
//! "The emulated host"). A run is repeated only when
//! `RunReport::environment_failure` explains every failure with proof from
//! the failing boot's own console span and trace, at most
//! `reruns::RERUN_BUDGET` times per test; each rerun is printed with its
//! evidence, and a test whose reruns exceed the budget fails.

use std::io::Write;
use std::sync::Mutex;

use mercury_rig::reruns::{self, Next, RERUN_BUDGET};
use mercury_rig::{Rig, RunOptions, Status};

static ONE_L1_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A line on the real stderr (not captured by the test harness).
fn progress(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "rig: {message}");
}

fn run_scenario(name: &str, required: &[&str]) {
    let _guard = ONE_L1_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let rig = Rig::from_env();
    let mut reruns_done = 0;
    let mut rerun_log = Vec::new();
    let report = loop {
        let attempt = reruns_done + 1;
        let report = run_once(&rig, name, attempt);
        let passed = report.require(required).is_ok();
        let environment = if passed {
            None
        } else {
            report.environment_failure()
        };
        match reruns::next(passed, environment, reruns_done, RERUN_BUDGET) {
            Next::Pass | Next::Fail => break report,
            Next::Rerun { n, evidence } => {
                let line = format!(
                    "RERUN {n} of at most {RERUN_BUDGET} for `{name}`: the environment failed \
                     ({evidence}); console log {}",
                    report.console_log.display()
                );
                progress(&line);
                rerun_log.push(line);
                reruns_done = n;
            }
            Next::BudgetSpent { evidence } => {
                let failure = report.require(required).unwrap_err();
                panic!(
                    "`{name}`: the environment failed again ({evidence}), more reruns than \
                     the budget of {RERUN_BUDGET} allows\nearlier:\n  {}\n{failure}",
                    rerun_log.join("\n  ")
                );
            }
        }
    };
    if let Err(failure) = report.require(required) {
        // The failure carries the problems, the console log path and its tail.
        panic!("{failure}");
    }
    eprintln!("{report}");
    progress(&format!(
        "`{name}` passed after {reruns_done} rerun(s) (budget {RERUN_BUDGET}){}",
        rerun_log
            .iter()
            .map(|l| format!("\n  {l}"))
            .collect::<String>()
    ));
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

fn run_once(rig: &Rig, name: &str, attempt: u32) -> mercury_rig::RunReport {
    progress(&format!(
        "`{name}` (run {attempt}): preparing and booting L1"
    ));
    let mut on_line = |line: &str| {
        let line = line.trim_start();
        if line.starts_with("RIG-INIT") {
            progress(&format!("`{name}` (run {attempt}): L1 reached /init"));
        } else if let Some(rest) = line.strip_prefix("RIG-BOOT ") {
            let field = |key: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .unwrap_or("?")
                    .to_string()
            };
            progress(&format!(
                "`{name}` (run {attempt}): boot {} of {} ({} {})",
                field("n="),
                field("of="),
                field("vmm="),
                field("label=")
            ));
        } else if line.starts_with("RIG-RESULT") || line.starts_with("RIG-BOOT-FAILED") {
            progress(&format!("`{name}` (run {attempt}): {line}"));
        }
    };
    match rig.run_streaming(name, &RunOptions::default(), &mut on_line) {
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

/// The aarch64 L1 (`# rig-arch: aarch64`): KVM in VHE mode and one tiny VM
/// on it, without mercury.
#[test]
fn arm64_smoke() {
    run_scenario(
        "arm64-smoke",
        &[
            "rig-modules",
            "rig-kvm",
            "kvm-dev",
            "kvm-vhe",
            "kvm-vm",
            "tap-bridge",
        ],
    );
}

/// The aarch64 no_std test guest under mercury (both built for aarch64 by
/// the rig) in the aarch64 L1: FDT, UART, RAM, PSCI CPU_ON for 4 vCPUs,
/// the boot timer, and PSCI SYSTEM_OFF ending mercury with exit 0.
#[test]
fn arm64_test_guest() {
    run_scenario(
        "arm64-test-guest",
        &[
            "rig-modules",
            "rig-kvm",
            "mercury-present",
            "test-guest-exit",
            "test-guest-end",
            "test-guest-serial",
            "test-guest-cpu",
            "test-guest-smp",
            "test-guest-timer",
            "test-guest-memory",
            "test-guest-1vcpu",
        ],
    );
}

/// The arm64 microVM kernel and busybox initramfs under mercury in the
/// aarch64 L1, 1 and 2 vCPUs: /init runs with the CPUs and memory mercury
/// gave, its console taken from the FDT, and PSCI SYSTEM_OFF ends it; then
/// PSCI SYSTEM_RESET, the power button (PL061 + gpio-keys) and pvpanic.
#[test]
fn arm64_linux_boot() {
    run_scenario(
        "arm64-linux-boot",
        &[
            "rig-modules",
            "rig-kvm",
            "mercury-present",
            "smp1-exit",
            "smp1-init",
            "smp1-info",
            "smp2-exit",
            "smp2-init",
            "smp2-info",
            "reboot",
            "powerbutton-ready",
            "powerbutton-exit",
            "panic",
        ],
    );
}

/// mercury's virtio devices under the arm64 kernel's drivers in the
/// aarch64 L1, the checks the x86_64 `virtio` scenario shares: a disk
/// written by the guest and read back in L1 (also after a SIGKILL), a
/// read-only disk, two guests on a bridge (ping and TCP), vsock both ways.
#[test]
fn arm64_virtio() {
    run_scenario(
        "arm64-virtio",
        &[
            "rig-modules",
            "rig-kvm",
            "mercury-present",
            "blk-guest",
            "blk-host",
            "durable-host",
            "ro-guest",
            "ro-host",
            "net-ping",
            "net-tcp",
            "vsock-guest-to-host",
            "vsock-host-to-guest",
        ],
    );
}

/// mercury on an arm64 host whose GIC is a v2 (scenario `arm64-gicv2`:
/// the aarch64 L1 with QEMU virt's GICv2): the vGICv2 fallback, the test
/// guest with 4 vCPUs, Linux with 2 vCPUs, and the power button's
/// interrupt through it.
#[test]
fn arm64_gicv2() {
    run_scenario(
        "arm64-gicv2",
        &[
            "rig-modules",
            "rig-kvm",
            "mercury-present",
            "gicv2-fallback",
            "test-guest-exit",
            "test-guest-end",
            "test-guest-serial",
            "test-guest-cpu",
            "test-guest-smp",
            "test-guest-timer",
            "test-guest-memory",
            "linux-smp2",
            "powerbutton-ready",
            "powerbutton-exit",
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
            "powerbutton-ready",
            "powerbutton-exit",
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
            "test-guest-memory",
        ],
    );
}

/// Real Linux virtio drivers against mercury's devices (scenario
/// `virtio`): disks read back on L1's side after the guest wrote them
/// (also after a SIGKILL), a read-only disk, two guests on a bridge, vsock
/// both ways, and ACPI-only discovery.
#[test]
fn virtio() {
    run_scenario(
        "virtio",
        &[
            "rig-modules",
            "rig-kvm",
            "blk-guest",
            "blk-host",
            "durable-host",
            "ro-guest",
            "ro-host",
            "net-ping",
            "net-tcp",
            "vsock-guest-to-host",
            "vsock-host-to-guest",
            "acpi-disk",
            "acpi-net",
        ],
    );
}

/// A cluster on the Debian node image (scenario `cluster`): `mercury cluster
/// up` with 1 control-plane node, 2 workers and a bare-metal machine (mixed
/// mode: a network namespace applies its join bundle and reaches the control
/// plane), identity and reachability checked from L1 and on the nodes'
/// consoles, its external etcd answering from the control-plane node, ssh
/// logins with the spec's key, drift repair after a killed VMM, scaling 2 -> 3 through
/// `reconcile --watch` (which then refuses an invalid spec) and 3 -> 1
/// through `up`, and `down` powering the nodes off through the power button
/// and leaving nothing behind. In CI: about 10 minutes of L1
/// (one vCPU, `# rig-smp: 1`: docs/RIG.md, "The cluster scenarios").
#[test]
fn cluster() {
    run_scenario(
        "cluster",
        &[
            "rig-modules",
            "rig-kvm",
            "invalid",
            "up",
            "identity-console",
            "identity-ping",
            "node-ping",
            "status",
            "etcd-cluster",
            "ssh-login",
            "bundle",
            "baremetal-join",
            "idempotent",
            "drift-status",
            "drift-repair",
            "scale-up",
            "watch-invalid",
            "scale-down",
            "down-poweroff",
            "down-clean",
        ],
    );
}

/// A mixed cluster (scenario `cluster-mixed`): three control-plane microVMs
/// with an external etcd formed across them, a bare-metal worker stood in
/// for by a network namespace on the bridge applying its join bundle, and a
/// `reconcile --watch` converging a file that gains a worker pool and then
/// refusing an invalid one. By hand: its four nodes take 10-12 minutes of
/// L1, which CI's 60 minutes do not leave beside `cluster`; the bare-metal
/// and watcher checks run in CI within `cluster`, only the etcd formed
/// across three microVMs is checked here alone.
#[test]
#[ignore = "10-12 minutes of L1 beyond CI's budget; its checks but etcd also run in `cluster`"]
fn cluster_mixed() {
    run_scenario(
        "cluster-mixed",
        &[
            "rig-modules",
            "rig-kvm",
            "mixed-up",
            "etcd-cluster",
            "bundle",
            "baremetal-join",
            "watch-scale",
            "watch-invalid",
            "mixed-down",
        ],
    );
}

/// A benchmark (scenario `cluster-bench`): `up` to all nodes ready for 1, 3
/// and 5 nodes, by hand.
#[test]
#[ignore = "benchmark; run by hand"]
fn cluster_bench() {
    run_scenario(
        "cluster-bench",
        &[
            "rig-modules",
            "rig-kvm",
            "bench-cluster-1",
            "bench-cluster-3",
            "bench-cluster-5",
        ],
    );
}

/// A benchmark (scenario `virtio-bench`): by hand, with
/// `RIG_COMPARE_WITH=<static firecracker>` to compare.
#[test]
#[ignore = "benchmark; run by hand"]
fn virtio_bench() {
    run_scenario(
        "virtio-bench",
        &[
            "rig-modules",
            "rig-kvm",
            "bench-blk-mercury",
            "bench-net-mercury",
            "bench-boot-mercury",
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

/// The boot-time harness on the arm64 L1 (scenario `arm64-boot-bench`):
/// the arm64 kernel and initramfs, 1 and 2 vCPUs, with and without `quiet`.
/// A benchmark, by hand (`cargo test -p mercury-rig -- --ignored
/// arm64_boot_bench`); its numbers are in docs/BENCHMARKS.md.
#[test]
#[ignore = "benchmark; run by hand"]
fn arm64_boot_bench() {
    run_scenario(
        "arm64-boot-bench",
        &[
            "rig-modules",
            "rig-kvm",
            "mercury-present",
            "bench-vcpus",
            "bench-cmdline",
        ],
    );
}

/// A two-node cluster on the arm64 node image and kernel in the aarch64 L1
/// (scenario `arm64-cluster`): `up` to both ready, identity on the consoles,
/// L1 to node and node to node pings, `status`, and `down` powering both
/// off through the power button and leaving nothing. By hand (`cargo test
/// -p mercury-rig -- --ignored arm64_cluster`).
#[test]
#[ignore = "a 2 GiB node image built under qemu-user (7 min) and 3 min of arm64 L1; run by hand"]
fn arm64_cluster() {
    run_scenario(
        "arm64-cluster",
        &[
            "rig-modules",
            "rig-kvm",
            "mercury-present",
            "up",
            "identity-console",
            "identity-ping",
            "node-ping",
            "status",
            "down-poweroff",
            "down-clean",
        ],
    );
}
