//! The boot-time harness: variants (which VMM, how many vCPUs, how much
//! memory), running them interleaved, and turning each process run into a
//! [`BootRun`] with its metrics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::exit_line::{find_exit_report, tail};
use crate::firecracker::{self, BootSpec};
use crate::process::{collect, join, run_timed, ProcessRun, Termination};
use crate::smaps::{memory_report, MemoryReport};

/// mercury's default kernel command line (`vmm_core::DEFAULT_CMDLINE`; a
/// unit test keeps them equal). Boots use it when `--cmdline` is not given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 quiet";
/// How many stderr lines a failure report keeps.
const FAILURE_TAIL_LINES: usize = 15;
/// How often the memory probe looks at smaps while waiting for the guest.
const RSS_POLL: Duration = Duration::from_millis(5);

/// Which VMM a variant runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    /// `mercury run`.
    Mercury,
    /// A Firecracker-compatible binary (`--no-api --config-file`).
    Firecracker,
}

/// One configuration to boot repeatedly.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Which VMM.
    pub vmm: Vmm,
    /// Its binary.
    pub binary: PathBuf,
    /// What to boot.
    pub spec: BootSpec,
    /// For [`Vmm::Firecracker`]: the generated config file.
    pub config_file: Option<PathBuf>,
    /// What else tells this variant apart when several kernels or command
    /// lines are compared ("bzImage, cmdline 2"); empty otherwise.
    pub tag: String,
}

impl Variant {
    /// "mercury, 1 vCPU, 128 MiB", then the tag if any.
    pub fn label(&self) -> String {
        let vmm = match self.vmm {
            Vmm::Mercury => "mercury",
            Vmm::Firecracker => "firecracker",
        };
        let s = if self.spec.vcpus == 1 { "" } else { "s" };
        let tag = if self.tag.is_empty() {
            String::new()
        } else {
            format!(", {}", self.tag)
        };
        format!(
            "{vmm}, {} vCPU{s}, {} MiB{tag}",
            self.spec.vcpus, self.spec.memory_mib
        )
    }

    /// The command that boots this variant once.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        match self.vmm {
            Vmm::Mercury => {
                command.args(mercury_args(&self.spec));
                // The timing line is logged at info level.
                command.env("MERCURY_LOG", "info");
            }
            Vmm::Firecracker => {
                let config = self.config_file.as_deref().unwrap_or(Path::new("fc.json"));
                command.args(firecracker::args(config));
            }
        }
        command
    }
}

/// `run --kernel .. [--initrd ..] --cmdline .. --vcpus .. --memory .. --serial none`.
pub fn mercury_args(spec: &BootSpec) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--kernel".into(),
        spec.kernel.display().to_string(),
    ];
    if let Some(initrd) = &spec.initrd {
        args.extend(["--initrd".into(), initrd.display().to_string()]);
    }
    args.extend([
        "--cmdline".into(),
        spec.cmdline.clone(),
        "--vcpus".into(),
        spec.vcpus.to_string(),
        "--memory".into(),
        spec.memory_mib.to_string(),
        "--serial".into(),
        "none".into(),
    ]);
    args
}

/// One boot, as measured. Durations in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BootRun {
    /// Run number, from 1.
    pub index: usize,
    /// Why the run does not count, with the end of its stderr.
    pub failure: Option<String>,
    /// The VMM's exit reason, when it reported one.
    pub exit: Option<String>,
    /// Process start → first `KVM_RUN`, wall time.
    pub setup_wall_us: Option<u64>,
    /// Process CPU time used by the first `KVM_RUN`.
    pub setup_cpu_us: Option<u64>,
    /// First `KVM_RUN` → boot timer.
    pub kernel_us: Option<u64>,
    /// Process start → boot timer.
    pub total_us: Option<u64>,
    /// Spawn → exit, measured by the harness.
    pub process_wall_us: Option<u64>,
    /// User + system CPU time of the whole process.
    pub process_cpu_us: Option<u64>,
}

impl BootRun {
    /// True when the run counts.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// A per-boot quantity the harness reports.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// JSON key.
    pub key: &'static str,
    /// Table label.
    pub label: &'static str,
    /// Reads it from a run.
    pub get: fn(&BootRun) -> Option<u64>,
}

/// Every metric, in table order.
pub const METRICS: [Metric; 6] = [
    Metric {
        key: "setup_wall_us",
        label: "VMM setup, wall (start -> 1st KVM_RUN)",
        get: |r| r.setup_wall_us,
    },
    Metric {
        key: "setup_cpu_us",
        label: "VMM setup, CPU  (start -> 1st KVM_RUN)",
        get: |r| r.setup_cpu_us,
    },
    Metric {
        key: "kernel_us",
        label: "kernel (1st KVM_RUN -> boot timer)",
        get: |r| r.kernel_us,
    },
    Metric {
        key: "total_us",
        label: "total (start -> boot timer)",
        get: |r| r.total_us,
    },
    Metric {
        key: "process_wall_us",
        label: "process wall (spawn -> exit)",
        get: |r| r.process_wall_us,
    },
    Metric {
        key: "process_cpu_us",
        label: "process CPU (user + sys)",
        get: |r| r.process_cpu_us,
    },
];

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn failure(why: &str, run: &ProcessRun) -> Option<String> {
    let mut text = format!("{why} ({})", run.termination);
    let out = tail(&run.stderr, FAILURE_TAIL_LINES);
    if !out.is_empty() {
        text.push_str(":\n");
        text.push_str(&out);
    }
    Some(text)
}

/// Turns one `mercury run` into a [`BootRun`]. It counts only if mercury
/// exited 0 after a guest reset or power-off and the guest wrote the boot
/// timer.
pub fn evaluate_mercury(index: usize, run: &ProcessRun) -> BootRun {
    let mut boot = BootRun {
        index,
        process_wall_us: Some(micros(run.wall)),
        process_cpu_us: Some(micros(run.cpu)),
        ..BootRun::default()
    };
    let report = find_exit_report(&run.stderr);
    if let Some(r) = &report {
        boot.exit = Some(r.exit.clone());
        boot.setup_wall_us = r.first_kvm_run.map(micros);
        boot.setup_cpu_us = r.first_kvm_run_cpu.map(micros);
        boot.kernel_us = r.kernel_time().map(micros);
        boot.total_us = r.boot_timer.map(micros);
    }
    boot.failure = match &report {
        _ if run.timed_out => failure("timed out", run),
        None => failure("no exit line from mercury", run),
        Some(r) if !r.is_clean() => failure(&format!("guest did not end cleanly: {}", r.exit), run),
        Some(_) if run.termination != Termination::Exited(0) => failure("mercury failed", run),
        Some(r) if r.boot_timer.is_none() => failure("guest never wrote the boot timer", run),
        Some(_) => None,
    };
    boot
}

/// Turns one Firecracker run into a [`BootRun`]: only the boot timer and the
/// process times are known. It counts if the process exited 0 and logged
/// its boot time.
pub fn evaluate_firecracker(index: usize, run: &ProcessRun) -> BootRun {
    let output = format!("{}\n{}", run.stdout, run.stderr);
    let boot_time = firecracker::find_boot_time(&output);
    let mut result = BootRun {
        index,
        total_us: boot_time.map(micros),
        process_wall_us: Some(micros(run.wall)),
        process_cpu_us: Some(micros(run.cpu)),
        ..BootRun::default()
    };
    // Firecracker logs to stdout by default: report that too on failure.
    let both = ProcessRun {
        stderr: output,
        ..run.clone()
    };
    result.failure = if run.timed_out {
        failure("timed out", &both)
    } else if run.termination != Termination::Exited(0) {
        failure("process failed", &both)
    } else if boot_time.is_none() {
        failure("no Guest-boot-time line", &both)
    } else {
        None
    };
    result
}

/// Boots `variant` once.
pub fn boot_once(variant: &Variant, index: usize, timeout: Duration) -> BootRun {
    match run_timed(&mut variant.command(), timeout) {
        Ok(run) => match variant.vmm {
            Vmm::Mercury => evaluate_mercury(index, &run),
            Vmm::Firecracker => evaluate_firecracker(index, &run),
        },
        Err(e) => BootRun {
            index,
            failure: Some(format!("cannot run {}: {e}", variant.binary.display())),
            ..BootRun::default()
        },
    }
}

/// Spawn → exit of `<binary> --version`: process creation, dynamic linking,
/// argument parsing and exit, with no VM; the floor under "process wall".
/// `None` if it failed.
pub fn exec_floor_once(binary: &Path, timeout: Duration) -> Option<u64> {
    let run = run_timed(Command::new(binary).arg("--version"), timeout).ok()?;
    (run.termination == Termination::Exited(0) && !run.timed_out).then(|| micros(run.wall))
}

/// Starts mercury with a guest that stays up, waits until guest memory is
/// mapped and holds the loaded kernel, lets it settle, and reads its memory
/// use; then kills it.
pub fn measure_memory(
    variant: &Variant,
    settle: Duration,
    timeout: Duration,
) -> Result<MemoryReport, String> {
    let mut command = variant.command();
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", variant.binary.display()))?;
    let stderr = collect(child.stderr.take());
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    let memory_bytes = variant.spec.memory_mib << 20;
    let read = |name: &str| std::fs::read_to_string(proc_dir.join(name)).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    let mut outcome = Err("timed out waiting for the guest-memory mapping".to_string());
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            outcome = Err(format!("mercury exited before it was measured ({status})"));
            break;
        }
        let ready =
            memory_report(&read("smaps"), "", memory_bytes).is_some_and(|r| r.guest_rss_kib > 0);
        if ready {
            std::thread::sleep(settle);
            outcome = memory_report(&read("smaps"), &read("status"), memory_bytes)
                .ok_or_else(|| "guest-memory mapping vanished".to_string());
            break;
        }
        std::thread::sleep(RSS_POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    let stderr = join(stderr);
    outcome.map_err(|e| {
        let out = tail(&stderr, FAILURE_TAIL_LINES);
        if out.is_empty() {
            e
        } else {
            format!("{e}:\n{out}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BootSpec {
        BootSpec {
            kernel: "/k".into(),
            initrd: None,
            cmdline: "checks=timer".into(),
            vcpus: 2,
            memory_mib: 128,
        }
    }

    fn process(stderr: &str, termination: Termination) -> ProcessRun {
        ProcessRun {
            wall: Duration::from_micros(50_000),
            cpu: Duration::from_micros(20_000),
            termination,
            timed_out: false,
            stdout: String::new(),
            stderr: stderr.to_string(),
        }
    }

    const GOOD: &str =
        "[t INFO  vmm_core] something\n[t INFO  launcher::cli] exit=\"guest reset (reboot)\" \
                        boot_timer_us=40000 first_kvm_run_us=3000 first_kvm_run_cpu_us=2500\n";

    #[test]
    fn default_cmdline_is_mercurys() {
        assert_eq!(DEFAULT_CMDLINE, vmm_core::DEFAULT_CMDLINE);
    }

    #[test]
    fn mercury_arguments() {
        let mut s = spec();
        assert_eq!(
            mercury_args(&s).join(" "),
            "run --kernel /k --cmdline checks=timer --vcpus 2 --memory 128 --serial none"
        );
        s.initrd = Some("/i".into());
        assert!(mercury_args(&s)
            .join(" ")
            .starts_with("run --kernel /k --initrd /i --cmdline"));
    }

    #[test]
    fn labels() {
        let mut v = Variant {
            vmm: Vmm::Mercury,
            binary: "m".into(),
            spec: spec(),
            config_file: None,
            tag: String::new(),
        };
        assert_eq!(v.label(), "mercury, 2 vCPUs, 128 MiB");
        v.spec.vcpus = 1;
        v.vmm = Vmm::Firecracker;
        assert_eq!(v.label(), "firecracker, 1 vCPU, 128 MiB");
        v.tag = "bzImage, cmdline 2".into();
        assert_eq!(
            v.label(),
            "firecracker, 1 vCPU, 128 MiB, bzImage, cmdline 2"
        );
    }

    #[test]
    fn good_mercury_run() {
        let b = evaluate_mercury(1, &process(GOOD, Termination::Exited(0)));
        assert!(b.ok(), "{:?}", b.failure);
        assert_eq!(b.setup_wall_us, Some(3000));
        assert_eq!(b.setup_cpu_us, Some(2500));
        assert_eq!(b.kernel_us, Some(37000));
        assert_eq!(b.total_us, Some(40000));
        assert_eq!(b.process_wall_us, Some(50_000));
        assert_eq!(b.process_cpu_us, Some(20_000));
    }

    #[test]
    fn unclean_exit_fails_with_stderr_tail() {
        let stderr = "boom happened\nexit=\"vCPU 0 shut down (triple fault)\" boot_timer_us=none \
                      first_kvm_run_us=3000 first_kvm_run_cpu_us=2500\nmercury: guest failed\n";
        let b = evaluate_mercury(2, &process(stderr, Termination::Exited(3)));
        let why = b.failure.unwrap();
        assert!(
            why.starts_with("guest did not end cleanly: vCPU 0 shut down"),
            "{why}"
        );
        assert!(why.contains("exit code 3"), "{why}");
        assert!(why.contains("boom happened"), "{why}");
        assert_eq!(b.setup_wall_us, Some(3000), "what was measured is kept");
    }

    #[test]
    fn missing_line_nonzero_exit_timeout_and_no_timer_fail() {
        let b = evaluate_mercury(
            1,
            &process("mercury: error: no kernel\n", Termination::Exited(1)),
        );
        assert!(b.failure.unwrap().starts_with("no exit line"));

        let b = evaluate_mercury(1, &process(GOOD, Termination::Exited(1)));
        assert!(b.failure.unwrap().starts_with("mercury failed"));

        let mut p = process("", Termination::Signaled(9));
        p.timed_out = true;
        assert!(evaluate_mercury(1, &p)
            .failure
            .unwrap()
            .starts_with("timed out (killed by signal 9)"));

        let no_timer = "exit=\"guest powered off\" boot_timer_us=none first_kvm_run_us=1 first_kvm_run_cpu_us=1";
        let b = evaluate_mercury(1, &process(no_timer, Termination::Exited(0)));
        assert!(b
            .failure
            .unwrap()
            .starts_with("guest never wrote the boot timer"));
    }

    #[test]
    fn firecracker_runs() {
        let mut p = process("", Termination::Exited(0));
        p.stdout =
            "x [fc_vcpu 0] Guest-boot-time =  41234 us 41 ms,  30120 CPU us 30 CPU ms\n".into();
        let b = evaluate_firecracker(1, &p);
        assert!(b.ok());
        assert_eq!(b.total_us, Some(41234));
        assert_eq!(b.setup_wall_us, None);
        assert_eq!(b.process_wall_us, Some(50_000));

        p.stdout = "Error: kvm\n".into();
        let why = evaluate_firecracker(1, &p).failure.unwrap();
        assert!(
            why.starts_with("no Guest-boot-time line") && why.contains("Error: kvm"),
            "{why}"
        );
    }

    #[test]
    fn metrics_read_their_fields() {
        let b = evaluate_mercury(1, &process(GOOD, Termination::Exited(0)));
        let values: Vec<Option<u64>> = METRICS.iter().map(|m| (m.get)(&b)).collect();
        assert_eq!(
            values,
            [
                Some(3000),
                Some(2500),
                Some(37000),
                Some(40000),
                Some(50_000),
                Some(20_000)
            ]
        );
    }
}
