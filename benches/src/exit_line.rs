//! Parsing the timing line `mercury run` logs at exit.
//!
//! mercury logs, on stderr, one line such as
//!
//! ```text
//! [2026-11-23T10:00:00.000000Z INFO  launcher::cli] exit="guest reset (reboot)" boot_timer_us=41234 first_kvm_run_us=2345 first_kvm_run_cpu_us=2100
//! ```
//!
//! The prefix is whatever the logger's format is; only the `key=value` pairs
//! from `exit="` on are read. All durations are from mercury's process start
//! (the instant `main` starts, handed to `vmm_core::Vm::with_origin`).

use std::time::Duration;

/// The exit reasons a guest asks for on purpose (see `vmm_core::VmExit`).
const CLEAN_EXITS: [&str; 2] = ["guest reset (reboot)", "guest powered off"];

/// What mercury reported about one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitReport {
    /// The exit reason, as `vmm_core::VmExit` displays it.
    pub exit: String,
    /// Process start → the guest's boot-timer write.
    pub boot_timer: Option<Duration>,
    /// Process start → first `KVM_RUN`, wall time.
    pub first_kvm_run: Option<Duration>,
    /// Process CPU time used by the first `KVM_RUN`.
    pub first_kvm_run_cpu: Option<Duration>,
}

impl ExitReport {
    /// True when the guest reset or powered off (the exits it asks for).
    pub fn is_clean(&self) -> bool {
        CLEAN_EXITS.contains(&self.exit.as_str())
    }

    /// First `KVM_RUN` → boot timer: the guest's own boot time.
    pub fn kernel_time(&self) -> Option<Duration> {
        self.boot_timer?.checked_sub(self.first_kvm_run?)
    }
}

/// Finds mercury's exit line in `stderr` (the last one, should there be
/// several) and parses it. `None` when there is no such line.
pub fn find_exit_report(stderr: &str) -> Option<ExitReport> {
    stderr.lines().rev().find_map(parse_exit_line)
}

/// Parses one log line; `None` unless it holds `exit="..."` and
/// `boot_timer_us=`.
pub fn parse_exit_line(line: &str) -> Option<ExitReport> {
    const EXIT_KEY: &str = "exit=\"";
    const AFTER_EXIT: &str = "\" boot_timer_us=";
    let start = line.find(EXIT_KEY)? + EXIT_KEY.len();
    let rest = &line[start..];
    // The reason is not escaped and may itself contain quotes (a vCPU error
    // message): it ends at the quote that the next key follows.
    let end = rest.find(AFTER_EXIT)?;
    let exit = rest[..end].to_string();
    let pairs = &rest[end + 1..];
    let mut report = ExitReport {
        exit,
        boot_timer: None,
        first_kvm_run: None,
        first_kvm_run_cpu: None,
    };
    for pair in pairs.split_whitespace() {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let slot = match key {
            "boot_timer_us" => &mut report.boot_timer,
            "first_kvm_run_us" => &mut report.first_kvm_run,
            "first_kvm_run_cpu_us" => &mut report.first_kvm_run_cpu,
            _ => continue,
        };
        *slot = parse_micros(value);
    }
    Some(report)
}

/// `"1234"` → 1234 µs; `"none"` or anything unparsable → `None`.
fn parse_micros(value: &str) -> Option<Duration> {
    value.parse::<u64>().ok().map(Duration::from_micros)
}

/// The last `lines` lines of `text`, for failure reports.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "[2026-11-23T10:00:00.000000Z INFO  launcher::cli] exit=\"guest reset (reboot)\" \
                        boot_timer_us=41234 first_kvm_run_us=2345 first_kvm_run_cpu_us=2100";

    #[test]
    fn parses_the_documented_line() {
        let r = parse_exit_line(LINE).unwrap();
        assert_eq!(r.exit, "guest reset (reboot)");
        assert!(r.is_clean());
        assert_eq!(r.boot_timer, Some(Duration::from_micros(41234)));
        assert_eq!(r.first_kvm_run, Some(Duration::from_micros(2345)));
        assert_eq!(r.first_kvm_run_cpu, Some(Duration::from_micros(2100)));
        assert_eq!(r.kernel_time(), Some(Duration::from_micros(41234 - 2345)));
    }

    #[test]
    fn prefix_does_not_matter() {
        for prefix in [
            "",
            "INFO ",
            "[x] [y] random: ",
            "2026-11-23 10:00:00 launcher ",
        ] {
            let line = format!(
                "{prefix}exit=\"guest powered off\" boot_timer_us=5 first_kvm_run_us=1 first_kvm_run_cpu_us=1"
            );
            let r = parse_exit_line(&line).unwrap();
            assert_eq!(r.exit, "guest powered off");
            assert!(r.is_clean());
            assert_eq!(r.kernel_time(), Some(Duration::from_micros(4)));
        }
    }

    #[test]
    fn none_values_and_unclean_exit() {
        let line =
            "[t ERROR launcher::cli] exit=\"vCPU 0 shut down (triple fault)\" boot_timer_us=none \
                    first_kvm_run_us=1500 first_kvm_run_cpu_us=none";
        let r = parse_exit_line(line).unwrap();
        assert!(!r.is_clean());
        assert_eq!(r.boot_timer, None);
        assert_eq!(r.first_kvm_run, Some(Duration::from_micros(1500)));
        assert_eq!(r.first_kvm_run_cpu, None);
        assert_eq!(r.kernel_time(), None);
    }

    #[test]
    fn quotes_inside_the_reason() {
        let line = "exit=\"vCPU 1 failed: ioctl \"KVM_RUN\" failed\" boot_timer_us=none first_kvm_run_us=7";
        let r = parse_exit_line(line).unwrap();
        assert_eq!(r.exit, "vCPU 1 failed: ioctl \"KVM_RUN\" failed");
        assert_eq!(r.first_kvm_run, Some(Duration::from_micros(7)));
    }

    #[test]
    fn key_order_and_unknown_keys_are_tolerated() {
        let line = "exit=\"guest reset (reboot)\" boot_timer_us=9 extra=1 first_kvm_run_cpu_us=3 first_kvm_run_us=4";
        let r = parse_exit_line(line).unwrap();
        assert_eq!(r.first_kvm_run, Some(Duration::from_micros(4)));
        assert_eq!(r.first_kvm_run_cpu, Some(Duration::from_micros(3)));
    }

    #[test]
    fn boot_timer_before_first_run_gives_no_kernel_time() {
        let line = "exit=\"guest reset (reboot)\" boot_timer_us=1 first_kvm_run_us=4";
        assert_eq!(parse_exit_line(line).unwrap().kernel_time(), None);
    }

    #[test]
    fn finds_the_line_among_others() {
        let stderr = format!("[t INFO  vmm_core] building VM\n{LINE}\nmercury: something after\n");
        assert_eq!(
            find_exit_report(&stderr).unwrap().exit,
            "guest reset (reboot)"
        );
        assert_eq!(
            find_exit_report("no line here\nexit=\"x\" but no timer"),
            None
        );
        assert_eq!(find_exit_report(""), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
