//! The reconcile loop of `mercury cluster reconcile` (issue 9 §7): fetch
//! the spec from its [`SpecSource`], check it, and hand a good one to a
//! [`Converge`]r, which makes the host match it; with `--watch`, again on
//! every interval.
//!
//! Rules of the loop ([`Reconciler::poll`]):
//! - A spec that does not parse or validate (or whose cluster name differs
//!   from the applied one's) is never acted on: the last good spec stays,
//!   and the errors are logged once, naming the commit.
//! - A spec whose text equals the last one applied is not converged again
//!   (debug line), except every `resync` interval: then the last good spec
//!   is converged again even though nothing changed, so drift (a killed
//!   node, a deleted disk) is repaired. While the newest commit is invalid,
//!   resyncs converge the last good spec.
//! - A failed fetch or converge is retried after `interval`, then twice,
//!   four times … that, up to `max_backoff`; the first success resets it.
//! - A stop request (SIGINT, SIGTERM, SIGHUP through [`StopSignals`]) ends
//!   the loop at once when it is waiting, or when the fetch or converge in
//!   progress returns; after a stop nothing more is converged.

use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::source::{Origin, SpecSource};
use super::spec::ClusterSpec;
use super::validate;
use crate::signals::{signal_name, BlockedSignals, STOP_SIGNALS};

/// Makes the host match a spec: the convergence step of `up`.
pub trait Converge {
    /// Makes the host match `spec` (already validated); `origin` says where
    /// it came from (for logs). Called again with the same spec on resyncs:
    /// it must be safe to run any number of times.
    fn converge(&mut self, spec: &ClusterSpec, origin: &Origin) -> Result<ConvergeReport, String>;
}

/// What one [`Converge::converge`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvergeReport {
    /// What was done, one line each, in order (`create edge1-general-2`);
    /// each is logged with the commit it came from.
    pub actions: Vec<String>,
    /// Whether anything on the host changed.
    pub changed: bool,
}

/// How often the loop polls, resyncs and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Between two polls.
    pub interval: Duration,
    /// An unchanged spec is converged again once this long after the last
    /// converge (drift repair).
    pub resync: Duration,
    /// The longest wait between retries of a failed fetch or converge.
    pub max_backoff: Duration,
    /// Check that the kernel and image files the spec names exist.
    pub file_checks: bool,
}

impl Default for Options {
    /// 30 s polls, 5 min resyncs, backoff up to 5 min, file checks on.
    fn default() -> Self {
        Options {
            interval: Duration::from_secs(30),
            resync: Duration::from_secs(300),
            max_backoff: Duration::from_secs(300),
            file_checks: true,
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The spec was converged: a new one, or a resync of the last good one.
    Converged {
        origin: Origin,
        report: ConvergeReport,
        resync: bool,
    },
    /// The converger failed; the spec is tried again after a backoff.
    ConvergeFailed { origin: Origin, error: String },
    /// The source could not be fetched; tried again after a backoff.
    FetchFailed(String),
    /// The fetched spec is invalid and was not acted on.
    Invalid { origin: Origin, errors: Vec<String> },
    /// A stop was requested before converging (what asked): nothing was
    /// done.
    Stopped(String),
    /// The spec is the one applied last, and no resync is due.
    Unchanged,
}

/// Log lines: `2026-12-02T07:01:02Z reconcile: <message>`, plain, one a
/// line, debug lines only when verbose.
pub struct Log {
    out: Box<dyn Write + Send>,
    verbose: bool,
}

impl Log {
    /// A log to `out`.
    pub fn new(out: Box<dyn Write + Send>, verbose: bool) -> Self {
        Log { out, verbose }
    }

    /// A log to standard error.
    pub fn stderr(verbose: bool) -> Self {
        Log::new(Box::new(io::stderr()), verbose)
    }

    /// Writes one line.
    pub fn info(&mut self, message: &str) {
        // A log that cannot be written (a closed pipe) must not stop the
        // reconciler: the line is dropped.
        let _ = writeln!(
            self.out,
            "{} reconcile: {message}",
            utc_timestamp(SystemTime::now())
        );
        let _ = self.out.flush();
    }

    /// Writes one line when verbose.
    pub fn debug(&mut self, message: &str) {
        if self.verbose {
            self.info(message);
        }
    }
}

/// The spec applied last.
#[derive(Debug)]
struct Applied {
    text: String,
    spec: ClusterSpec,
    /// The newest origin with this text.
    origin: Origin,
    /// When it was last converged.
    at: Instant,
}

/// A spec about to be converged.
struct Candidate {
    text: String,
    spec: ClusterSpec,
    origin: Origin,
}

/// One source, one converger, and what the loop remembers between polls.
pub struct Reconciler<C> {
    source: SpecSource,
    converger: C,
    options: Options,
    log: Log,
    last_good: Option<Applied>,
    /// The last invalid spec's origin and errors, so they are logged once.
    last_rejected: Option<(Origin, Vec<String>)>,
    /// Failed fetches or converges in a row.
    failures: u32,
    /// The last converge failed: converge again even if nothing changed.
    retry_converge: bool,
}

impl<C: Converge> Reconciler<C> {
    /// A reconciler that has applied nothing yet.
    pub fn new(source: SpecSource, converger: C, options: Options, log: Log) -> Self {
        Reconciler {
            source,
            converger,
            options,
            log,
            last_good: None,
            last_rejected: None,
            failures: 0,
            retry_converge: false,
        }
    }

    /// The converger (tests read what it was given).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn converger(&self) -> &C {
        &self.converger
    }

    /// The spec applied last and where it came from.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn last_good(&self) -> Option<(&ClusterSpec, &Origin)> {
        self.last_good.as_ref().map(|a| (&a.spec, &a.origin))
    }

    /// How long to wait before the next poll: the interval, or the backoff
    /// after failures.
    pub fn next_delay(&self) -> Duration {
        let interval = self.options.interval;
        if self.failures == 0 {
            return interval;
        }
        let factor = 1u32 << (self.failures - 1).min(16);
        interval
            .saturating_mul(factor)
            .min(self.options.max_backoff.max(interval))
    }

    /// One round: fetch, check, converge if needed (see the module docs).
    /// `now` decides whether a resync is due; `stop` is asked, without
    /// waiting, right before converging.
    pub fn poll(&mut self, now: Instant, stop: &mut dyn Wait) -> Outcome {
        let fetched = match self.source.fetch() {
            Ok(fetched) => fetched,
            Err(e) => match e.origin() {
                Some(origin) => {
                    let origin = origin.clone();
                    return self.reject(now, stop, origin, vec![e.to_string()]);
                }
                None => {
                    self.failures += 1;
                    let error = e.to_string();
                    self.log.info(&format!("error: {error}"));
                    return Outcome::FetchFailed(error);
                }
            },
        };
        if !self.retry_converge {
            self.failures = 0;
        }
        let retrying = self.retry_converge;
        if let Some(good) = &mut self.last_good {
            if good.text == fetched.text {
                if good.origin != fetched.origin {
                    self.log
                        .debug(&format!("{}: same spec as {}", fetched.origin, good.origin));
                    good.origin = fetched.origin;
                }
                self.last_rejected = None;
                let due = now.saturating_duration_since(good.at) >= self.options.resync;
                if !due && !retrying {
                    self.log
                        .debug(&format!("{}: unchanged, nothing to do", good.origin));
                    return Outcome::Unchanged;
                }
                let again = Candidate {
                    text: fetched.text,
                    spec: good.spec.clone(),
                    origin: good.origin.clone(),
                };
                return self.apply(now, stop, again, true);
            }
        }
        match self.check(&fetched.text) {
            Ok((spec, warnings)) => {
                for warning in warnings {
                    self.log
                        .info(&format!("{}: warning: {warning}", fetched.origin));
                }
                self.last_rejected = None;
                let new = Candidate {
                    text: fetched.text,
                    spec,
                    origin: fetched.origin,
                };
                self.apply(now, stop, new, false)
            }
            Err(errors) => self.reject(now, stop, fetched.origin, errors),
        }
    }

    /// Parses and validates `text`; the errors as lines naming the field.
    fn check(&self, text: &str) -> Result<(ClusterSpec, Vec<String>), Vec<String>> {
        let spec = ClusterSpec::from_yaml(text).map_err(|e| vec![e.to_string()])?;
        let mut report = validate::validate(&spec);
        if self.options.file_checks {
            report.errors.extend(validate::check_files(&spec));
        }
        let mut errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        if let Some(good) = &self.last_good {
            let (was, now) = (&good.spec.metadata.name, &spec.metadata.name);
            if was != now {
                errors.push(format!(
                    "metadata.name: {now:?} is not the cluster this reconciler manages ({was:?}, \
                     from {}); to rename a cluster, stop the reconciler and take the old one down",
                    good.origin
                ));
            }
        }
        if errors.is_empty() {
            Ok((
                spec,
                report.warnings.iter().map(ToString::to_string).collect(),
            ))
        } else {
            Err(errors)
        }
    }

    /// Refuses an invalid spec; a due resync still converges the last good
    /// one.
    fn reject(
        &mut self,
        now: Instant,
        stop: &mut dyn Wait,
        origin: Origin,
        errors: Vec<String>,
    ) -> Outcome {
        let seen = (origin, errors);
        let (origin, errors) = &seen;
        if self.last_rejected.as_ref() == Some(&seen) {
            self.log
                .debug(&format!("{origin}: still invalid, still not applied"));
        } else {
            for error in errors {
                self.log.info(&format!("{origin}: invalid: {error}"));
            }
            let kept = match &self.last_good {
                Some(good) => format!("keeping the spec from {}", good.origin),
                None => "nothing applied yet".to_string(),
            };
            self.log.info(&format!(
                "{origin}: not applied ({} error(s)); {kept}",
                errors.len()
            ));
            self.last_rejected = Some(seen.clone());
        }
        let (origin, errors) = seen;
        let outcome = Outcome::Invalid { origin, errors };
        let resync = match &self.last_good {
            Some(good)
                if self.retry_converge
                    || now.saturating_duration_since(good.at) >= self.options.resync =>
            {
                Some(Candidate {
                    text: good.text.clone(),
                    spec: good.spec.clone(),
                    origin: good.origin.clone(),
                })
            }
            _ => None,
        };
        if let Some(good) = resync {
            if let Outcome::Stopped(why) = self.apply(now, stop, good, true) {
                return Outcome::Stopped(why);
            }
        }
        outcome
    }

    /// Converges a spec and records the result; `resync`: the spec is the
    /// one applied last.
    fn apply(
        &mut self,
        now: Instant,
        stop: &mut dyn Wait,
        candidate: Candidate,
        resync: bool,
    ) -> Outcome {
        if let Some(why) = stop.wait(Duration::ZERO) {
            return Outcome::Stopped(why);
        }
        let Candidate { text, spec, origin } = candidate;
        if resync {
            self.log.info(&format!(
                "{origin}: resync (converging again every {})",
                format_duration(self.options.resync)
            ));
        }
        match self.converger.converge(&spec, &origin) {
            Ok(report) => {
                for action in &report.actions {
                    self.log.info(&format!("{origin}: {action}"));
                }
                if report.actions.is_empty() {
                    self.log.info(&format!("{origin}: in sync, nothing to do"));
                }
                self.failures = 0;
                self.retry_converge = false;
                self.last_good = Some(Applied {
                    text,
                    spec,
                    origin: origin.clone(),
                    at: now,
                });
                Outcome::Converged {
                    origin,
                    report,
                    resync,
                }
            }
            Err(error) => {
                self.failures += 1;
                self.retry_converge = true;
                self.log
                    .info(&format!("{origin}: converge failed: {error}"));
                Outcome::ConvergeFailed { origin, error }
            }
        }
    }
}

/// Polls, then waits, until a stop is requested. Logs the source first and
/// the stop last; the cluster is left as the last converge made it.
pub fn watch<C: Converge>(reconciler: &mut Reconciler<C>, stop: &mut dyn Wait) {
    let first = format!(
        "watching {} every {} (resync every {})",
        reconciler.source.describe(),
        format_duration(reconciler.options.interval),
        format_duration(reconciler.options.resync)
    );
    reconciler.log.info(&first);
    loop {
        let why = match reconciler.poll(Instant::now(), stop) {
            Outcome::Stopped(why) => Some(why),
            Outcome::FetchFailed(_) | Outcome::ConvergeFailed { .. } => {
                let delay = reconciler.next_delay();
                let retry = format!("retrying in {}", format_duration(delay));
                reconciler.log.info(&retry);
                stop.wait(delay)
            }
            _ => stop.wait(reconciler.next_delay()),
        };
        if let Some(why) = why {
            reconciler
                .log
                .info(&format!("{why}: stopped; the cluster is left as it is"));
            return;
        }
    }
}

/// What the loop sleeps on between polls.
pub trait Wait {
    /// Waits up to `timeout` (zero: only looks) for a stop request; returns
    /// what asked to stop (`received SIGTERM`), or `None` on timeout.
    fn wait(&mut self, timeout: Duration) -> Option<String>;
}

/// Never asked to stop (one-shot reconciles): waits sleep.
#[derive(Debug, Default)]
pub struct NoStop;

impl Wait for NoStop {
    fn wait(&mut self, timeout: Duration) -> Option<String> {
        std::thread::sleep(timeout);
        None
    }
}

/// SIGINT, SIGTERM and SIGHUP, blocked in the thread that made this and
/// taken synchronously with `sigtimedwait` while the loop waits: a signal
/// stops the wait at once, and one that arrives during a fetch or converge
/// waits, pending, until that step returns (a converge is never cut off
/// half-way).
#[derive(Debug)]
pub struct StopSignals {
    signals: BlockedSignals,
}

impl StopSignals {
    /// Blocks the stop signals in the calling thread. Call it before
    /// creating any thread (threads inherit the mask), and wait from this
    /// thread.
    pub fn block() -> io::Result<Self> {
        Ok(StopSignals {
            signals: BlockedSignals::block(&STOP_SIGNALS)?,
        })
    }
}

impl Wait for StopSignals {
    fn wait(&mut self, timeout: Duration) -> Option<String> {
        let signal = self.signals.wait_timeout(timeout)?;
        Some(format!("received {}", signal_name(signal)))
    }
}

/// Parses `30s`, `5m`, `1m30s`, `1h`, `500ms`: numbers each followed by a
/// unit (h, m, s, ms), adding up to more than zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (like 30s, 5m, 1m30s, 1h, 500ms)");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = unit.checked_mul(u32::try_from(n).map_err(|_| bad())?);
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(bad)?;
    }
    if total.is_zero() {
        return Err(format!("{text:?}: the duration must be more than zero"));
    }
    Ok(total)
}

/// `1m30s`, `5m`, `250ms`: the inverse of [`parse_duration`] (to the
/// millisecond).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// `2026-12-02T07:01:02Z`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm,
    // counting from 0000-03-01 so leap days fall at the ends of years).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60
    )
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
