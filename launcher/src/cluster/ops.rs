//! `mercury cluster up | status | down`: argument handling, progress and
//! output around [`super::up`] and [`super::status`].

use std::io::IsTerminal as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::command::DEFAULT_STATE_DIR;
use super::spec::ClusterSpec;
use super::status::{self, ClusterStatus};
use super::up::{self, Progress, UpOptions};
use super::validate;
use crate::cli::{error_chain, fail, EXIT_ERROR};

/// `up`'s default wait for each group of nodes, seconds.
pub(crate) const READY_TIMEOUT_SECS: u64 = 900;
/// The default time a node gets to power off, seconds.
pub(crate) const STOP_TIMEOUT_SECS: u64 = 60;

/// `status`: the host does not match the spec.
const EXIT_DIFFERS: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

/// What `up` and `status` both take: the spec, the state directory and the
/// format of the node table they print.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// The cluster spec (YAML, `kind: Cluster`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// Where the cluster's state, disks, seeds and logs go.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Output format of the node table.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Seconds to wait for the control plane, and then for the workers, to
    /// report ready.
    #[arg(long, value_name = "SECS", default_value_t = READY_TIMEOUT_SECS)]
    timeout: u64,
    /// Seconds a node being replaced or deleted gets to power off before
    /// it is stopped.
    #[arg(long, value_name = "SECS", default_value_t = STOP_TIMEOUT_SECS)]
    stop_timeout: u64,
    /// Times a node whose VMM exits before it is ready is started again
    /// from its disk before `up` fails (0: never).
    #[arg(long, value_name = "N", default_value_t = up::BOOT_RESTARTS)]
    boot_restarts: u32,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["file", "cluster"]))]
pub(crate) struct DownArgs {
    /// The cluster spec (only its name is used).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// The cluster's name, instead of its spec.
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Seconds each node gets to power off before it is stopped.
    #[arg(long, value_name = "SECS", default_value_t = STOP_TIMEOUT_SECS)]
    timeout: u64,
}

/// Progress on stderr: one line per event; on a terminal also a line,
/// rewritten in place, with the nodes still awaited.
pub(crate) struct Lines {
    terminal: bool,
    status_shown: bool,
}

impl Lines {
    pub(crate) fn new() -> Self {
        Lines {
            terminal: std::io::stderr().is_terminal(),
            status_shown: false,
        }
    }

    fn clear_status(&mut self) {
        if self.status_shown {
            eprint!("\r\x1b[2K");
            self.status_shown = false;
        }
    }
}

impl Progress for Lines {
    fn event(&mut self, line: &str) {
        self.clear_status();
        eprintln!("mercury: {line}");
    }

    fn waiting(&mut self, pending: &[(String, f64)]) {
        if !self.terminal {
            return;
        }
        let list: Vec<String> = pending
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.0}s"))
            .collect();
        eprint!("\r\x1b[2Kmercury: waiting for {}", list.join(", "));
        let _ = std::io::stderr().flush();
        self.status_shown = true;
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.clear_status();
    }
}

/// Reads and validates a spec, printing its problems; `None` if invalid.
pub(crate) fn load_valid(file: &Path, check_files: bool) -> Option<ClusterSpec> {
    let spec = match ClusterSpec::load(file) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("mercury: error: {e}");
            return None;
        }
    };
    let mut report = validate::validate(&spec);
    if check_files {
        report.errors.extend(validate::check_files(&spec));
    }
    for warning in &report.warnings {
        eprintln!("mercury: warning: {warning}");
    }
    if report.errors.is_empty() {
        return Some(spec);
    }
    for error in &report.errors {
        eprintln!("mercury: error: {error}");
    }
    eprintln!(
        "mercury: {}: {} error(s); nothing done",
        file.display(),
        report.errors.len()
    );
    None
}

/// `reconcile`'s converger: one [`up::up`] per spec it is given.
pub(crate) struct UpConverger {
    pub(crate) opts: UpOptions,
}

impl super::watch::Converge for UpConverger {
    fn converge(
        &mut self,
        spec: &ClusterSpec,
        _origin: &super::source::Origin,
    ) -> Result<super::watch::ConvergeReport, String> {
        let mut progress = Lines::new();
        let outcome = up::up(spec, &self.opts, &mut progress).map_err(|e| error_chain(&e))?;
        Ok(super::watch::ConvergeReport {
            changed: !outcome.done.is_empty(),
            actions: outcome.done,
        })
    }
}

pub(crate) fn run_up(args: &UpArgs) -> ExitCode {
    let ClusterArgs {
        file,
        state_dir,
        output,
    } = &args.cluster;
    let Some(spec) = load_valid(file, true) else {
        return ExitCode::from(EXIT_ERROR);
    };
    let opts = UpOptions {
        state_dir: state_dir.clone(),
        ready_timeout: Duration::from_secs(args.timeout),
        stop_grace: Duration::from_secs(args.stop_timeout),
        boot_restarts: args.boot_restarts,
    };
    let mut progress = Lines::new();
    let outcome = match up::up(&spec, &opts, &mut progress) {
        Ok(outcome) => outcome,
        Err(e) => return fail(&e),
    };
    drop(progress);
    if outcome.done.is_empty() {
        eprintln!("mercury: cluster {}: nothing to do", spec.metadata.name);
    }
    for (name, bundle) in &outcome.bundles {
        eprintln!(
            "mercury: bare-metal {name}: run on the machine: {}",
            bundle.command
        );
    }
    match status::status(&spec, state_dir) {
        Ok(s) => {
            print_status(&s, *output);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

pub(crate) fn run_status(args: &StatusArgs) -> ExitCode {
    let ClusterArgs {
        file,
        state_dir,
        output,
    } = &args.cluster;
    let Some(spec) = load_valid(file, false) else {
        return ExitCode::from(EXIT_ERROR);
    };
    match status::status(&spec, state_dir) {
        Ok(s) => {
            print_status(&s, *output);
            if s.differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                for d in &s.differences {
                    eprintln!("mercury: {d}");
                }
                ExitCode::from(EXIT_DIFFERS)
            }
        }
        Err(e) => fail(&e),
    }
}

pub(crate) fn run_down(args: &DownArgs) -> ExitCode {
    let name = match (&args.cluster, &args.file) {
        (Some(name), _) => name.clone(),
        (None, Some(file)) => match ClusterSpec::load(file) {
            Ok(spec) => spec.metadata.name,
            Err(e) => return fail(&e),
        },
        (None, None) => unreachable!("clap requires one"),
    };
    let mut progress = Lines::new();
    match status::down(
        &name,
        &args.state_dir,
        Duration::from_secs(args.timeout),
        &mut progress,
    ) {
        Ok(report) if report.nodes.is_empty() && report.bridge.is_none() => {
            eprintln!("mercury: cluster {name}: nothing to remove");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            eprintln!(
                "mercury: cluster {name}: removed {} node(s), {} TAP(s){}",
                report.nodes.len(),
                report.taps.len(),
                report
                    .bridge
                    .map(|b| format!(", bridge {b}"))
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn print_status(s: &ClusterStatus, output: Output) {
    match output {
        Output::Json => match serde_json::to_string_pretty(s) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("mercury: error: cannot write JSON: {e}"),
        },
        Output::Table => print!("{}", status_table(s)),
    }
}

/// NAME ROLE KIND IP MAC STATE UPTIME READY-AFTER GUEST-BOOT.
pub(crate) fn status_table(s: &ClusterStatus) -> String {
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}s"));
    let mut rows = vec![[
        "NAME",
        "ROLE",
        "KIND",
        "IP",
        "MAC",
        "STATE",
        "UPTIME",
        "READY-AFTER",
        "GUEST-BOOT",
    ]
    .map(String::from)];
    for n in &s.nodes {
        rows.push([
            n.name.clone(),
            n.role.to_string(),
            n.kind.to_string(),
            n.ip.to_string(),
            n.mac.clone().unwrap_or_else(|| "-".into()),
            if n.in_spec {
                n.state.to_string()
            } else {
                format!("{} (not in spec)", n.state)
            },
            secs(n.uptime),
            secs(n.ready_after),
            secs(n.guest_uptime_at_ready),
        ]);
    }
    super::table::aligned(&rows)
}
