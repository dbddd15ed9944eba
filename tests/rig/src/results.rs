//! The L1 console protocol: what the rig's /init and the scenario print.
//!
//! ```text
//! RIG-INIT uptime=<s> kernel=<release>      /init started (L1 uptime in seconds)
//! RIG-RESULT <check> PASS|FAIL <detail...>  one check's verdict
//! RIG-SCENARIO-END rc=<n> secs=<s>          the scenario script returned
//! RIG-DONE                                  /init is about to power L1 off
//! ```
//!
//! Markers are found anywhere in a line, because a kernel message can land on
//! the console in the middle of a line the scenario is printing.

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
        }
    }
}

/// One `RIG-RESULT` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

/// One recognised console event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Init { uptime: Option<f64> },
    Result(CheckResult),
    ScenarioEnd { rc: Option<i32>, secs: Option<f64> },
    Done,
}

const RESULT: &str = "RIG-RESULT";
const INIT: &str = "RIG-INIT";
const SCENARIO_END: &str = "RIG-SCENARIO-END";
const DONE: &str = "RIG-DONE";

/// Recognises one console line.
pub fn parse_line(line: &str) -> Option<Event> {
    if let Some(rest) = after_marker(line, RESULT) {
        return Some(Event::Result(parse_result(rest)));
    }
    if let Some(rest) = after_marker(line, SCENARIO_END) {
        let rc = field(rest, "rc").and_then(|v| v.parse().ok());
        let secs = field(rest, "secs").and_then(|v| v.parse().ok());
        return Some(Event::ScenarioEnd { rc, secs });
    }
    if let Some(rest) = after_marker(line, INIT) {
        return Some(Event::Init {
            uptime: field(rest, "uptime").and_then(|v| v.parse().ok()),
        });
    }
    after_marker(line, DONE).map(|_| Event::Done)
}

/// The text after `marker` when it stands as a whole word in `line`.
fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let mut search = 0;
    while let Some(found) = line[search..].find(marker) {
        let start = search + found;
        let end = start + marker.len();
        let before_ok = !matches!(line[..start].chars().next_back(), Some(c) if is_word(c));
        let after_ok = !matches!(line[end..].chars().next(), Some(c) if is_word(c));
        if before_ok && after_ok {
            return Some(line[end..].trim());
        }
        search = end;
    }
    None
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn parse_result(rest: &str) -> CheckResult {
    let mut parts = rest.splitn(3, char::is_whitespace);
    let check = parts.next().unwrap_or_default().to_string();
    let status_word = parts.next().unwrap_or_default();
    let detail = parts.next().unwrap_or_default().trim().to_string();
    match status_word {
        "PASS" if !check.is_empty() => CheckResult {
            check,
            status: Status::Pass,
            detail,
        },
        "FAIL" if !check.is_empty() => CheckResult {
            check,
            status: Status::Fail,
            detail,
        },
        // A malformed verdict is a failure, never a silent pass.
        _ => CheckResult {
            check: if check.is_empty() {
                "<unnamed>".to_string()
            } else {
                check
            },
            status: Status::Fail,
            detail: format!("malformed RIG-RESULT line: `{}`", rest.trim()),
        },
    }
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// Everything the console said, in order.
#[derive(Clone, Debug, Default)]
pub struct ConsoleSummary {
    pub results: Vec<CheckResult>,
    pub init_uptime: Option<f64>,
    pub init_seen: bool,
    pub scenario_rc: Option<i32>,
    pub scenario_secs: Option<f64>,
    pub scenario_ended: bool,
    pub done: bool,
}

impl ConsoleSummary {
    /// Folds one event in.
    pub fn record(&mut self, event: Event) {
        match event {
            Event::Init { uptime } => {
                self.init_seen = true;
                self.init_uptime = uptime;
            }
            Event::Result(result) => self.results.push(result),
            Event::ScenarioEnd { rc, secs } => {
                self.scenario_ended = true;
                self.scenario_rc = rc;
                self.scenario_secs = secs;
            }
            Event::Done => self.done = true,
        }
    }

    /// Parses a whole console log.
    pub fn parse(text: &str) -> Self {
        let mut summary = ConsoleSummary::default();
        text.lines()
            .filter_map(parse_line)
            .for_each(|event| summary.record(event));
        summary
    }
}

/// `line` without terminal escape sequences (SeaBIOS and the kernel clear
/// the screen with `ESC c`, `ESC [2J`, ... right before /init's first line).
pub fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // CSI (`ESC [`): parameters and intermediates, then one final byte
        // in @..~. Any other escape is ESC plus one character.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(line: &str) -> CheckResult {
        match parse_line(line) {
            Some(Event::Result(r)) => r,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_result_lines() {
        let r = result("RIG-RESULT kvm-dev PASS /dev/kvm is 10:232");
        assert_eq!(
            (r.check.as_str(), r.status, r.detail.as_str()),
            ("kvm-dev", Status::Pass, "/dev/kvm is 10:232")
        );
        let r = result("RIG-RESULT vmlinux-smp2-info FAIL nproc=1 want 2\r");
        assert_eq!(
            (r.status, r.detail.as_str()),
            (Status::Fail, "nproc=1 want 2")
        );
        let r = result("RIG-RESULT bare PASS");
        assert_eq!((r.status, r.detail.as_str()), (Status::Pass, ""));
    }

    #[test]
    fn finds_markers_inside_interleaved_kernel_output() {
        let r = result("[   12.345678] random: crng init done RIG-RESULT smoke PASS ok");
        assert_eq!((r.check.as_str(), r.status), ("smoke", Status::Pass));
        assert_eq!(parse_line("xx RIG-DONE"), Some(Event::Done));
    }

    #[test]
    fn malformed_results_fail() {
        for line in [
            "RIG-RESULT x ok fine",
            "RIG-RESULT",
            "RIG-RESULT x pass lower-case",
        ] {
            assert_eq!(result(line).status, Status::Fail, "{line}");
        }
        assert!(result("RIG-RESULT x maybe").detail.contains("malformed"));
    }

    #[test]
    fn strips_terminal_escapes() {
        let line = "\x1bc\x1b[?7l\x1b[2JRIG-INIT uptime=4.60 kernel=6.1";
        assert_eq!(strip_escapes(line), "RIG-INIT uptime=4.60 kernel=6.1");
        assert_eq!(
            parse_line(&strip_escapes(line)),
            Some(Event::Init { uptime: Some(4.6) })
        );
        assert_eq!(strip_escapes("plain \x1b[0mtext"), "plain text");
    }

    #[test]
    fn ignores_lookalikes() {
        for line in [
            "RIG-DONEX",
            "echo NOT-RIG-DONE",
            "RIG-RESULTS x PASS",
            "MERCURY-GUEST INIT",
            "",
        ] {
            assert_eq!(parse_line(line), None, "{line}");
        }
    }

    #[test]
    fn summarises_a_console_log() {
        let log = "Linux version 6.1\n\
            RIG-INIT uptime=3.91 kernel=6.1.0-50-cloud-amd64\n\
            RIG-RESULT rig-kvm PASS /dev/kvm present\n\
            RIG-RESULT a FAIL broke\n\
            RIG-SCENARIO-END rc=0 secs=12.50\n\
            RIG-DONE\n";
        let s = ConsoleSummary::parse(log);
        assert!(s.init_seen && s.scenario_ended && s.done);
        assert_eq!(s.init_uptime, Some(3.91));
        assert_eq!((s.scenario_rc, s.scenario_secs), (Some(0), Some(12.5)));
        assert_eq!(s.results.len(), 2);
        assert_eq!(s.results[1].status, Status::Fail);

        let truncated = ConsoleSummary::parse("RIG-INIT uptime=x\nRIG-RESULT a PASS\n");
        assert!(truncated.init_seen && !truncated.done && !truncated.scenario_ended);
        assert_eq!(truncated.init_uptime, None);
    }
}
