//! What one scenario run produced, and the verdict on it.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::command::tail;
use crate::results::{CheckResult, Status};

/// Console lines a failure carries.
pub const FAILURE_TAIL_LINES: usize = 60;

/// Where the time of a run went.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// Host-side preparation steps (fetch, build, assemble), in order.
    pub prepare: Vec<(String, Duration)>,
    /// Host time from spawning QEMU to L1's /init printing RIG-INIT.
    pub to_init: Option<Duration>,
    /// L1's own uptime when /init started.
    pub l1_uptime_at_init: Option<f64>,
    /// The scenario script's duration, measured inside L1.
    pub scenario_secs: Option<f64>,
    /// Host time from spawning QEMU to RIG-DONE.
    pub to_done: Option<Duration>,
    /// Host time from spawning QEMU to its exit.
    pub l1_wall: Duration,
}

/// The outcome of `rig run <scenario>`.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub scenario: String,
    /// Every RIG-RESULT line, in console order.
    pub results: Vec<CheckResult>,
    /// Checks the scenario header promises (`# rig-expect:`).
    pub expected: Vec<String>,
    pub done: bool,
    pub timed_out: bool,
    /// Why the rig stopped L1 early: the console line in which L1's own
    /// kernel failed, or that L1 hung (its console went silent).
    pub l1_failure: Option<String>,
    pub timeout: Duration,
    pub poweroff_hung: bool,
    pub qemu_exit: Option<ExitStatus>,
    pub scenario_rc: Option<i32>,
    pub console_log: PathBuf,
    /// The run's work directory, when kept (`--keep`).
    pub work_dir: Option<PathBuf>,
    pub timings: Timings,
    /// Things worth knowing that are not failures (e.g. a substituted kernel).
    pub notes: Vec<String>,
}

/// A failed run: why, where the full console log is, and its tail.
#[derive(Clone, Debug)]
pub struct RunFailure {
    pub scenario: String,
    pub problems: Vec<String>,
    pub console_log: PathBuf,
    pub console_tail: String,
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario `{}` failed:", self.scenario)?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        writeln!(f, "console log: {}", self.console_log.display())?;
        writeln!(f, "--- last {FAILURE_TAIL_LINES} console lines ---")?;
        write!(f, "{}", self.console_tail)
    }
}

impl std::error::Error for RunFailure {}

/// Markers of L1's own kernel failing (an oops or panic of the Debian
/// kernel that hosts KVM), as opposed to a guest's: L1's kernel messages
/// start a console line with their `[ seconds]` time stamp, while guest
/// output reaches L1's console only indented (`rig_show`) or inside
/// RIG-RESULT lines.
const L1_KERNEL_FAILURES: [&str; 5] = [
    "Kernel panic - not syncing",
    "BUG: ",
    "Oops: ",
    "general protection fault",
    "stack guard page",
];

/// The first line of `console` in which L1's own kernel reports failing.
pub fn l1_kernel_failure(console: &str) -> Option<&str> {
    console
        .lines()
        .map(|line| line.trim_start_matches("L1| "))
        .find(|line| line.starts_with('[') && L1_KERNEL_FAILURES.iter().any(|m| line.contains(m)))
}

/// One `kvm_exit` line of L1's KVM trace.
struct GuestExit {
    vcpu: String,
    reason: String,
    rip: u64,
    /// The event being delivered when the vCPU shut down (SVM EXITINTINFO).
    intr_info: u64,
    error_code: u64,
}

/// `intr_info` of a #PF being delivered: valid, exception, error code valid.
const PF_DELIVERY: u64 = 0x8000_0b0e;
/// #PF error code bits: the page was present; the access was an instruction fetch.
const PF_PRESENT: u64 = 1 << 0;
const PF_FETCH: u64 = 1 << 4;
/// The lowest address of the kernel half of x86-64's address space.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

fn hex(word: &str) -> Option<u64> {
    u64::from_str_radix(word.strip_prefix("0x")?, 16).ok()
}

fn guest_exit(line: &str) -> Option<GuestExit> {
    let rest = line.split_once("kvm_exit: vcpu ")?.1;
    let (vcpu, rest) = rest.split_once(" reason ")?;
    let (reason, rest) = rest.split_once(" rip ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let field = |name: &str| {
        let at = words.iter().position(|w| *w == name)?;
        hex(words.get(at + 1)?)
    };
    Some(GuestExit {
        vcpu: vcpu.to_string(),
        reason: reason.to_string(),
        rip: hex(words.first()?)?,
        intr_info: field("intr_info").unwrap_or(0),
        error_code: field("error_code").unwrap_or(0),
    })
}

/// A guest vCPU that L0's emulated SVM (QEMU TCG) derailed, not the VMM
/// under test or the guest, from L1's KVM trace (`kvm_exit: vcpu N reason
/// R rip ... intr_info ... error_code ...`) and `/proc/modules` as
/// `rig_show_kvm_trace` prints them. Two signs, both seen (docs/RIG.md,
/// "Known defects of the environment"):
/// - an exit of the guest at a RIP inside one of L1's kernel modules: the
///   guest kernel has no modules, so the guest was resumed at an address
///   of L1's (it then shuts down, or loops on a #PF it cannot deliver);
/// - a shutdown while delivering a #PF for an instruction fetch from a
///   not-present page in the kernel half, at the instruction it had just
///   been resumed at: a Linux guest never unmaps its kernel text, and a
///   guest whose own page tables were merely wrong would take that #PF
///   (and oops) instead of failing to deliver it.
///
/// The VMM never writes a running vCPU's registers, and no device of
/// mercury's writes guest memory, so neither can come from it.
pub fn environment_derailed_guest(console: &str) -> Option<String> {
    let lines = || {
        console
            .lines()
            .map(|l| l.trim_start_matches("L1| ").trim_start_matches([' ', '|']))
    };
    let modules: Vec<(String, u64, u64)> = lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 6 || !matches!(words[4], "Live" | "Loading" | "Unloading") {
                return None;
            }
            Some((words[0].to_string(), hex(words[5])?, words[1].parse().ok()?))
        })
        .collect();
    lines().filter_map(guest_exit).find_map(|exit| {
        let GuestExit { vcpu, rip, .. } = &exit;
        if let Some((name, start, size)) = modules
            .iter()
            .find(|(_, start, size)| (*start..start.saturating_add(*size)).contains(rip))
        {
            return Some(format!(
                "guest vCPU {vcpu} exited ({}) at rip {rip:#x}, inside L1's module {name} \
                 ({start:#x}+{size:#x}): the emulated SVM resumed the guest at an L1 address",
                exit.reason
            ));
        }
        let fetch_fault = exit.error_code & (PF_FETCH | PF_PRESENT) == PF_FETCH;
        let shutdown = exit.reason == "shutdown";
        (shutdown && exit.intr_info == PF_DELIVERY && fetch_fault && *rip >= KERNEL_HALF).then(
            || {
                format!(
                    "guest vCPU {vcpu} shut down delivering a not-present instruction-fetch #PF \
                 at rip {rip:#x} in its kernel half (error code {:#x}): the emulated SVM \
                 lost the guest's address space",
                    exit.error_code
                )
            },
        )
    })
}

impl RunReport {
    /// Why the run's environment, not the code under test, failed: L1's own
    /// kernel failed (oops, soft lockup), or L0's emulated SVM corrupted a
    /// guest ([`environment_derailed_guest`]). `None` when neither was seen.
    pub fn environment_failure(&self) -> Option<String> {
        if let Some(why) = &self.l1_failure {
            return Some(why.clone());
        }
        let console = fs::read(&self.console_log).ok()?;
        let console = String::from_utf8_lossy(&console);
        if let Some(line) = l1_kernel_failure(&console) {
            return Some(format!("L1's own kernel failed: {line}"));
        }
        environment_derailed_guest(&console)
    }

    /// The last verdict reported for `check`.
    pub fn result(&self, check: &str) -> Option<&CheckResult> {
        self.results.iter().rev().find(|r| r.check == check)
    }

    /// Everything wrong with the run: FAIL lines, promised checks that never
    /// reported, a missing RIG-DONE, a timeout, a failing scenario script.
    pub fn problems(&self) -> Vec<String> {
        self.problems_with(&[])
    }

    /// [`Self::problems`], plus every check in `required` that is absent.
    pub fn problems_with(&self, required: &[&str]) -> Vec<String> {
        let mut problems: Vec<String> = self
            .results
            .iter()
            .filter(|r| r.status == Status::Fail)
            .map(|r| format!("FAIL {}: {}", r.check, r.detail))
            .collect();
        let mut wanted: Vec<&str> = self.expected.iter().map(String::as_str).collect();
        for check in required {
            if !wanted.contains(check) {
                wanted.push(check);
            }
        }
        for check in wanted {
            if self.result(check).is_none() {
                problems.push(format!("missing RIG-RESULT for `{check}`"));
            }
        }
        if self.timed_out {
            problems.push(format!(
                "timed out after {} s; QEMU killed",
                self.timeout.as_secs()
            ));
        }
        if let Some(why) = &self.l1_failure {
            problems.push(format!("the rig stopped L1 early: {why}"));
        }
        if !self.done {
            problems.push("L1 never printed RIG-DONE".to_string());
        }
        if self.poweroff_hung {
            problems.push("L1 did not power off after RIG-DONE; QEMU killed".to_string());
        }
        match self.scenario_rc {
            Some(0) => {}
            Some(rc) => problems.push(format!("scenario script exited with status {rc}")),
            None if self.done => {
                problems.push("scenario end marker missing or malformed".to_string())
            }
            None => {}
        }
        problems
    }

    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// `Ok` when the run passed and every check in `required` reported PASS.
    pub fn require(&self, required: &[&str]) -> Result<(), RunFailure> {
        let problems = self.problems_with(required);
        if problems.is_empty() {
            return Ok(());
        }
        Err(RunFailure {
            scenario: self.scenario.clone(),
            problems,
            console_log: self.console_log.clone(),
            console_tail: self.console_tail(FAILURE_TAIL_LINES),
        })
    }

    /// [`Self::require`] with only the header's expectations.
    pub fn verdict(&self) -> Result<(), RunFailure> {
        self.require(&[])
    }

    /// The last `n` lines of the console log.
    pub fn console_tail(&self, n: usize) -> String {
        match fs::read(&self.console_log) {
            Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), n),
            Err(e) => format!("(cannot read {}: {e})", self.console_log.display()),
        }
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .results
            .iter()
            .map(|r| r.check.len())
            .max()
            .unwrap_or(0);
        for result in &self.results {
            writeln!(
                f,
                "{} {:width$}  {}",
                result.status.as_str(),
                result.check,
                result.detail
            )?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        let t = &self.timings;
        let secs = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        };
        let prepare: Duration = t.prepare.iter().map(|(_, d)| *d).sum();
        writeln!(
            f,
            "timings: prepare {:.1} s; L1 to /init {} (L1 uptime {}); scenario {}; to RIG-DONE {}; L1 total {:.1} s",
            prepare.as_secs_f64(),
            secs(t.to_init),
            t.l1_uptime_at_init.map_or("-".to_string(), |u| format!("{u:.2} s")),
            t.scenario_secs.map_or("-".to_string(), |s| format!("{s:.2} s")),
            secs(t.to_done),
            t.l1_wall.as_secs_f64(),
        )?;
        let steps: Vec<String> = t
            .prepare
            .iter()
            .map(|(step, d)| format!("{step} {:.1} s", d.as_secs_f64()))
            .collect();
        writeln!(f, "prepare: {}", steps.join(", "))?;
        writeln!(
            f,
            "RIG-DONE: {}",
            if self.done { "seen" } else { "NOT seen" }
        )?;
        writeln!(f, "console log: {}", self.console_log.display())?;
        if let Some(dir) = &self.work_dir {
            writeln!(f, "work dir (kept): {}", dir.display())?;
        }
        let problems = self.problems();
        if problems.is_empty() {
            write!(
                f,
                "scenario {}: PASS ({} checks)",
                self.scenario,
                self.results.len()
            )
        } else {
            writeln!(f, "scenario {}: FAIL", self.scenario)?;
            for problem in &problems {
                writeln!(f, "  - {problem}")?;
            }
            writeln!(f, "--- last {FAILURE_TAIL_LINES} console lines ---")?;
            write!(f, "{}", self.console_tail(FAILURE_TAIL_LINES))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: &[(&str, Status)], expected: &[&str]) -> RunReport {
        RunReport {
            scenario: "s".into(),
            results: lines
                .iter()
                .map(|(c, s)| CheckResult {
                    check: c.to_string(),
                    status: *s,
                    detail: "d".into(),
                })
                .collect(),
            expected: expected.iter().map(|s| s.to_string()).collect(),
            done: true,
            timed_out: false,
            l1_failure: None,
            timeout: Duration::from_secs(60),
            poweroff_hung: false,
            qemu_exit: None,
            scenario_rc: Some(0),
            console_log: "/nonexistent/log".into(),
            work_dir: None,
            timings: Timings::default(),
            notes: vec![],
        }
    }

    #[test]
    fn passes_only_when_everything_reported_pass() {
        let ok = report(&[("a", Status::Pass), ("b", Status::Pass)], &["a"]);
        assert!(ok.passed());
        assert!(ok.require(&["a", "b"]).is_ok());
        let missing = ok.require(&["a", "c"]).unwrap_err();
        assert_eq!(missing.problems, ["missing RIG-RESULT for `c`"]);

        let failed = report(&[("a", Status::Pass), ("a", Status::Fail)], &[]);
        assert_eq!(failed.problems(), ["FAIL a: d"]);

        let unexpected_absent = report(&[], &["a"]);
        assert!(!unexpected_absent.passed());
    }

    #[test]
    fn run_level_failures_count() {
        let mut r = report(&[("a", Status::Pass)], &[]);
        r.done = false;
        r.scenario_rc = None;
        r.timed_out = true;
        let problems = r.problems();
        assert!(
            problems.iter().any(|p| p.contains("timed out")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("RIG-DONE")),
            "{problems:?}"
        );

        let mut r = report(&[("a", Status::Pass)], &[]);
        r.scenario_rc = Some(2);
        assert_eq!(r.problems(), ["scenario script exited with status 2"]);
        let failure = r.verdict().unwrap_err().to_string();
        assert!(
            failure.contains("/nonexistent/log") && failure.contains("cannot read"),
            "{failure}"
        );
    }

    #[test]
    fn a_guest_shutdown_inside_an_l1_module_is_an_environment_failure() {
        // As traced, but with no #PF in flight: the L1 address alone is evidence.
        let console = "L1|   | vcpu1-4474 [000] ..... 186.142200: kvm_exit: vcpu 1 reason npf rip 0xffffffffc055bcfc info1 0x1\n\
                       L1|   | vcpu1-4474 [000] ..... 186.144817: kvm_exit: vcpu 1 reason shutdown rip 0xffffffffc055bcfc info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000\n\
                       L1|   L1 modules:\n\
                       L1|   | kvm_amd 155648 0 - Live 0xffffffffc0540000\n\
                       L1|   | kvm 1146880 1 kvm_amd, Live 0xffffffffc0400000\n";
        let found = environment_derailed_guest(console).expect("detected");
        assert!(
            found.contains("vCPU 1") && found.contains("kvm_amd"),
            "{found}"
        );
        // Without the module list there is no evidence.
        let bare = console.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(environment_derailed_guest(&bare), None);
        // As traced in a 1-vCPU boot that never ended: the vCPU loops on a
        // #PF it cannot deliver, at an L1 address, with no shutdown.
        let looping = "  |  vcpu0-462 [001] ..... 138.610753: kvm_exit: vcpu 0 reason npf rip 0xffffffffc04a8cfc info1 0x000000020000000e info2 0x000000007e742fe0 intr_info 0x80000b0e error_code 0x00000010\n\
                       L1|   | kvm_amd 126976 0 - Live 0xffffffffc049a000\n";
        let found = environment_derailed_guest(looping).expect("detected");
        assert!(found.contains("vCPU 0 exited (npf)"), "{found}");
    }

    #[test]
    fn a_guest_that_cannot_fetch_its_own_kernel_text_is_an_environment_failure() {
        let shutdown = |rip: &str, intr: &str, err: &str| {
            format!(
                "L1|   |  vcpu1-1941 [000] ..... 93.251362: kvm_exit: vcpu 1 reason shutdown rip {rip} \
                 info1 0x0000000000000000 info2 0x0000000000000000 intr_info {intr} error_code {err}\n"
            )
        };
        // As traced: io_serial_out+0x12, right after an I/O exit.
        let traced = shutdown("0xffffffff81271a82", "0x80000b0e", "0x00000010");
        let found = environment_derailed_guest(&traced).expect("detected");
        assert!(found.contains("instruction-fetch #PF"), "{found}");
        // A data access, a present page, another exception, or a user or
        // identity-mapped (early boot, VMM-built page tables) address: not
        // evidence; nor is that #PF on an exit other than a shutdown.
        let npf = traced.replace("reason shutdown", "reason npf");
        assert_eq!(environment_derailed_guest(&npf), None);
        for (rip, intr, err) in [
            ("0xffffffff81271a82", "0x80000b0e", "0x00000002"),
            ("0xffffffff81271a82", "0x80000b0e", "0x00000011"),
            ("0xffffffff81271a82", "0x80000b0d", "0x00000010"),
            ("0x0000000001000500", "0x80000b0e", "0x00000010"),
        ] {
            assert_eq!(
                environment_derailed_guest(&shutdown(rip, intr, err)),
                None,
                "{rip} {intr} {err}"
            );
        }
    }

    #[test]
    fn l1_kernel_failures_are_told_from_guest_output() {
        let l1_oops = "RIG-RESULT a PASS\n[   21.99] BUG: TASK stack guard page was hit\n";
        assert_eq!(
            l1_kernel_failure(l1_oops),
            Some("[   21.99] BUG: TASK stack guard page was hit")
        );
        let guest_only = "RIG-RESULT panic PASS rc=3; [ 1.98] Kernel panic - not syncing: x\n    \
                          [    1.98] Kernel panic - not syncing: sysrq\n\
                          [    5.06] kvm [109]: vcpu0, Unhandled WRMSR\n";
        assert_eq!(l1_kernel_failure(guest_only), None);
    }
}
