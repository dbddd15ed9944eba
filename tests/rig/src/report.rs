//! What one scenario run produced, and the verdict on it.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::command::tail;
use crate::evidence::{self, Boot};
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

impl RunReport {
    /// The boots on the console, each with the evidence of its own span
    /// ([`evidence::boots`]); empty when the log cannot be read.
    pub fn boots(&self) -> Vec<Boot> {
        fs::read(&self.console_log)
            .map(|bytes| evidence::boots(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default()
    }

    /// Why the environment, not the code under test, failed this run, with
    /// each failed boot's evidence; `None` unless all of it is explained so:
    /// - every failed boot that ended has proof in its own span (an exit of
    ///   the guest inside an L1 module, L1's kernel failing): a not-present
    ///   instruction-fetch shutdown alone is only a hint
    ///   ([`evidence::Sign::is_proof`]);
    /// - every FAIL verdict lies in the span of such a boot;
    /// - anything else wrong (a missing check, no RIG-DONE, a timeout) only
    ///   follows from the rig stopping L1 because L1 itself failed (its
    ///   kernel reported failing, or it hung), which then also explains the
    ///   boot it interrupted.
    pub fn environment_failure(&self) -> Option<String> {
        self.environment_failure_in(&self.boots())
    }

    fn environment_failure_in(&self, boots: &[Boot]) -> Option<String> {
        if self.passed() {
            return None;
        }
        let mut evidence = Vec::new();
        let mut explained_fails = 0;
        for boot in boots.iter().filter(|b| b.failed()) {
            let name = format!("boot {} ({} {})", boot.n, boot.vmm, boot.label);
            match (boot.proof(), boot.ended, &self.l1_failure) {
                (Some(proof), ..) => evidence.push(format!("{name}: {proof}")),
                (None, false, Some(why)) => evidence.push(format!("{name} interrupted: {why}")),
                _ => return None,
            }
            explained_fails += boot
                .failures
                .iter()
                .filter(|f| f.starts_with("FAIL "))
                .count();
        }
        let fails = self
            .results
            .iter()
            .filter(|r| r.status == Status::Fail)
            .count();
        match &self.l1_failure {
            Some(why) => {
                if !evidence.iter().any(|e| e.contains(why.as_str())) {
                    evidence.push(format!("L1 stopped outside any boot: {why}"));
                }
                // FAIL verdicts before the stop need their own proof.
                (fails <= explained_fails).then(|| evidence.join("; "))
            }
            None => {
                let only_fails = self.problems().len() == fails;
                (fails > 0 && fails <= explained_fails && only_fails && !evidence.is_empty())
                    .then(|| evidence.join("; "))
            }
        }
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

    use crate::evidence::Sign;

    fn failed_boot(n: u32, ended: bool, failures: &[&str], signs: Vec<Sign>) -> Boot {
        Boot {
            n,
            vmm: "mercury".into(),
            label: "vmlinux".into(),
            ended,
            rc: ended.then_some(3),
            failures: failures.iter().map(|f| f.to_string()).collect(),
            signs,
        }
    }

    #[test]
    fn only_proof_in_the_failing_boots_own_span_explains_a_failure() {
        let in_module = || Sign::ExitInL1Module("vCPU 1 inside kvm_amd".into());
        let hint = || Sign::FetchFaultShutdown("vCPU 0 fetch #PF".into());
        let r = report(&[("a-exit", Status::Fail)], &[]);
        let proven = [failed_boot(4, true, &["FAIL a-exit"], vec![in_module()])];
        let why = r.environment_failure_in(&proven).expect("explained");
        assert!(
            why.contains("boot 4 (mercury vmlinux)") && why.contains("kvm_amd"),
            "{why}"
        );
        // A hint alone, or no sign, is no reason to rerun.
        let hinted = [failed_boot(4, true, &["FAIL a-exit"], vec![hint()])];
        assert_eq!(r.environment_failure_in(&hinted), None);
        assert_eq!(
            r.environment_failure_in(&[failed_boot(4, true, &["FAIL a-exit"], vec![])]),
            None
        );
        // Proof in a boot that passed explains nothing about another's failure.
        let elsewhere = [
            failed_boot(3, true, &[], vec![in_module()]),
            failed_boot(4, true, &["FAIL a-exit"], vec![]),
        ];
        assert_eq!(r.environment_failure_in(&elsewhere), None);
        // A FAIL verdict outside every proven boot's span: not explained.
        let r2 = report(&[("a-exit", Status::Fail), ("rig-kvm", Status::Fail)], &[]);
        assert_eq!(r2.environment_failure_in(&proven), None);
        // Other problems (a missing check) with no L1 failure: not explained.
        let r3 = report(&[("a-exit", Status::Fail)], &["b"]);
        assert_eq!(r3.environment_failure_in(&proven), None);
        // A passing run needs no explanation.
        assert_eq!(
            report(&[("a", Status::Pass)], &[]).environment_failure_in(&proven),
            None
        );
    }

    #[test]
    fn an_l1_failure_explains_the_boot_it_interrupted_but_not_earlier_failures() {
        let mut r = report(&[("a", Status::Pass)], &["b"]);
        r.done = false;
        r.scenario_rc = None;
        r.l1_failure = Some("L1 hung: no console output for 120 s".into());
        let interrupted = [failed_boot(9, false, &[], vec![])];
        let why = r.environment_failure_in(&interrupted).expect("explained");
        assert!(
            why.contains("boot 9 (mercury vmlinux) interrupted: L1 hung"),
            "{why}"
        );
        assert!(r
            .environment_failure_in(&[])
            .unwrap()
            .contains("outside any boot"));
        // An earlier boot that failed on its own is still mercury's.
        let earlier = [
            failed_boot(8, true, &["FAIL a-exit"], vec![]),
            failed_boot(9, false, &[], vec![]),
        ];
        assert_eq!(r.environment_failure_in(&earlier), None);
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
