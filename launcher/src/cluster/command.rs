//! `mercury cluster ...`: the subcommands; `plan` is here, `up`, `status`
//! and `down` in [`super::ops`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::plan::{self, Action, Plan};
use super::state::{self, ClusterDir};
use super::watch;
use crate::cli::EXIT_ERROR;

/// Where cluster state lives unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mercury/clusters";

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Print what `up` would do for a cluster spec, without doing it.
    ///
    /// Parses and validates the spec (errors on stderr, one a line, exit
    /// 1; warnings on stderr), then plans it against the nodes the state
    /// directory records. Exit status: 0 planned; 1 invalid spec.
    Plan(PlanArgs),
    /// Create or converge a cluster: bridge, TAPs, disks, seeds, nodes.
    ///
    /// Validates the spec (nothing is made if it is invalid), plans it
    /// against the state directory, makes what is missing, replaces what
    /// changed or crashed, removes what the spec dropped, starts the
    /// control plane and waits for it to be ready, then the workers. Nodes
    /// keep running after `up` exits. Running it again with the same spec
    /// does nothing. Exit status: 0 converged; 1 error.
    Up(super::ops::UpArgs),
    /// Show the cluster's nodes and whether the host matches the spec.
    ///
    /// Exit status: 0 every node is as the spec asks and ready; 1 error;
    /// 2 the host differs from the spec (the differences on stderr).
    Status(super::ops::StatusArgs),
    /// Stop a cluster's nodes and remove everything mercury made for it.
    ///
    /// Each node gets its power button (ACPI on x86_64, a GPIO key on
    /// arm64), then is stopped after --timeout; its TAP, disk, seed and
    /// logs go, then the bridge (or the address mercury put on a bridge
    /// that was already there) and the cluster's state directory.
    /// Idempotent. Exit status: 0 or 1 (error).
    Down(super::ops::DownArgs),
    /// Make the host match a spec from a file or a git repository, once or
    /// (`--watch`) on every change (GitOps).
    ///
    /// Fetches the spec (a git branch is fetched into
    /// `<state-dir>/gitops/`, and the spec read from its tip commit),
    /// validates it and converges the host to it. Log lines on stderr, each
    /// naming the commit (or file) it is about. An invalid spec is never
    /// acted on. With `--watch`: polls every `--interval`, converges each
    /// new valid spec, converges the last good one again every `--resync`
    /// (repairing drift), backs off on failures, and stops on
    /// SIGINT/SIGTERM/SIGHUP without touching the cluster (exit 0).
    /// Exit status without `--watch`: 0 converged; 1 invalid spec, or a
    /// source that cannot be fetched; 2 bad arguments; 3 converge failed.
    Reconcile(ReconcileArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The cluster spec (YAML, `kind: Cluster`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// The state directory `up` records the cluster's nodes in.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Output format (json and yaml carry every field of the plan: sizes,
    /// images, disk and seed paths).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Skip checking that the kernel and image files exist (to plan on a
    /// machine without the images).
    #[arg(long)]
    no_file_checks: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Yaml,
}

pub(crate) fn run(command: ClusterCommand) -> ExitCode {
    match command {
        ClusterCommand::Plan(args) => run_plan(&args),
        ClusterCommand::Up(args) => super::ops::run_up(&args),
        ClusterCommand::Status(args) => super::ops::run_status(&args),
        ClusterCommand::Down(args) => super::ops::run_down(&args),
        ClusterCommand::Reconcile(args) => run_reconcile(args),
    }
}

fn run_plan(args: &PlanArgs) -> ExitCode {
    let Some(spec) = super::ops::load_valid(&args.file, !args.no_file_checks) else {
        return ExitCode::from(EXIT_ERROR);
    };
    let cluster = ClusterDir::new(&args.state_dir, &spec.metadata.name);
    let observed = match cluster.load_nodes() {
        Ok(records) => state::observed(&records),
        Err(e) => {
            eprintln!("mercury: error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let plan = match plan::plan(&spec, &observed, &args.state_dir) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("mercury: error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match args.output {
        Format::Table => print!("{}", table(&plan)),
        Format::Json => match serde_json::to_string_pretty(&plan) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("mercury: error: cannot write the plan as JSON: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        },
        Format::Yaml => match serde_yaml_ng::to_string(&plan) {
            Ok(yaml) => print!("{yaml}"),
            Err(e) => {
                eprintln!("mercury: error: cannot write the plan as YAML: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        },
    }
    ExitCode::SUCCESS
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "git"])))]
pub(crate) struct ReconcileArgs {
    /// The cluster spec file on this host.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A git repository holding the spec: a URL (`https://…`, `file://…`)
    /// or a local repository's path.
    #[arg(long, value_name = "URL_OR_PATH")]
    git: Option<String>,
    /// The branch to follow [default: the remote's default branch, else main].
    #[arg(long, value_name = "BRANCH", requires = "git", conflicts_with = "file")]
    branch: Option<String>,
    /// The spec's path inside the repository [default: cluster.yaml].
    #[arg(long, value_name = "PATH", requires = "git", conflicts_with = "file")]
    path: Option<String>,
    /// Keep polling and converging until stopped.
    #[arg(long)]
    watch: bool,
    /// Between polls (`30s`, `5m`, `1m30s`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = watch::parse_duration)]
    interval: std::time::Duration,
    /// An unchanged spec is converged again this long after the last
    /// converge, to repair drift.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = watch::parse_duration)]
    resync: std::time::Duration,
    /// Node disks and seeds, and the git cache (`<DIR>/gitops/`).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Skip checking that the kernel and image files exist.
    #[arg(long)]
    no_file_checks: bool,
    /// Also log the polls that find nothing new.
    #[arg(short, long)]
    verbose: bool,
}

/// Exit code of a one-shot reconcile whose converge failed (2 is clap's,
/// for bad arguments; 3 as `mercury run`'s "the guest failed").
const EXIT_CONVERGE_FAILED: u8 = 3;

fn run_reconcile(args: ReconcileArgs) -> ExitCode {
    use super::source::{GitSource, SpecSource};
    use super::watch::{Options, Outcome, Reconciler};

    // Blocked before any thread exists, so none takes a stop signal.
    let mut stop = if args.watch {
        match watch::StopSignals::block() {
            Ok(signals) => Some(signals),
            Err(e) => {
                eprintln!("mercury: error: cannot block the stop signals: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        }
    } else {
        None
    };
    let source = match (&args.file, &args.git) {
        (Some(file), _) => SpecSource::File(file.clone()),
        (None, Some(url)) => {
            // SAFETY: no other thread exists yet (mercury starts none
            // before a subcommand runs).
            if let Err(e) = unsafe { GitSource::set_network_timeouts() } {
                eprintln!("mercury: warning: cannot set git network timeouts: {e}");
            }
            match GitSource::open(
                url,
                args.branch.as_deref(),
                args.path.as_deref(),
                &args.state_dir,
            ) {
                Ok(git) => SpecSource::Git(git),
                Err(e) => {
                    eprintln!("mercury: error: {e}");
                    return ExitCode::from(EXIT_ERROR);
                }
            }
        }
        (None, None) => unreachable!("clap requires --file or --git"),
    };
    let options = Options {
        interval: args.interval,
        resync: args.resync,
        file_checks: !args.no_file_checks,
        ..Options::default()
    };
    let converger = super::ops::UpConverger {
        opts: super::up::UpOptions {
            state_dir: args.state_dir.clone(),
            ready_timeout: std::time::Duration::from_secs(super::ops::READY_TIMEOUT_SECS),
            stop_grace: std::time::Duration::from_secs(super::ops::STOP_TIMEOUT_SECS),
            boot_restarts: super::up::BOOT_RESTARTS,
        },
    };
    let mut reconciler =
        Reconciler::new(source, converger, options, watch::Log::stderr(args.verbose));
    if let Some(stop) = &mut stop {
        watch::watch(&mut reconciler, stop);
        return ExitCode::SUCCESS;
    }
    match reconciler.poll(std::time::Instant::now(), &mut watch::NoStop) {
        Outcome::Converged { .. } | Outcome::Unchanged | Outcome::Stopped(_) => ExitCode::SUCCESS,
        Outcome::Invalid { .. } | Outcome::FetchFailed(_) => ExitCode::from(EXIT_ERROR),
        Outcome::ConvergeFailed { .. } => ExitCode::from(EXIT_CONVERGE_FAILED),
    }
}

/// The plan as aligned columns: ACTION NODE ROLE KIND IP MAC TAP, then the
/// endpoint and any deferred control-plane replacements.
pub(crate) fn table(plan: &Plan) -> String {
    let mut rows = vec![["ACTION", "NODE", "ROLE", "KIND", "IP", "MAC", "TAP"].map(String::from)];
    for action in &plan.actions {
        let row = match action {
            Action::Create(n) | Action::Keep(n) | Action::Replace { node: n, .. } => [
                action.verb().to_string(),
                n.name.clone(),
                n.role.to_string(),
                match n.machine {
                    plan::MachinePlan::Microvm { .. } => "microvm".to_string(),
                    plan::MachinePlan::Baremetal => "baremetal".to_string(),
                },
                n.ip.to_string(),
                n.mac.clone().unwrap_or_else(|| "-".into()),
                n.tap().unwrap_or("-").to_string(),
            ],
            Action::Delete(d) => [
                action.verb().to_string(),
                d.name.clone(),
                d.role.to_string(),
                "-".into(),
                d.ip.to_string(),
                "-".into(),
                "-".into(),
            ],
        };
        rows.push(row);
    }
    let mut out = super::table::aligned(&rows);
    for action in &plan.actions {
        if let Action::Replace { node, reasons } = action {
            let _ = writeln!(out, "replace {}: {}", node.name, reasons.join(", "));
        }
    }
    for d in &plan.deferred {
        let _ = writeln!(
            out,
            "deferred {}: {} (control-plane nodes are replaced one per run)",
            d.name,
            d.reasons.join(", ")
        );
    }
    if let Some(endpoint) = plan.endpoint {
        let _ = writeln!(out, "control-plane endpoint: {endpoint}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cluster::fixtures::example;
    use crate::cluster::plan::{NodeState, Observed, ObservedNode};

    /// A plan with every kind of row: the example with a control-plane size
    /// change on three nodes (one replaced, two deferred), the pool shrunk
    /// from 2 to 1 and a crashed worker.
    #[test]
    fn table_shows_every_action_with_reasons_and_deferrals() {
        let mut spec = example();
        spec.spec.control_plane.count = 3;
        let first = plan::plan(&spec, &Observed::default(), Path::new("/s")).unwrap();
        let mut observed = Observed::default();
        for action in &first.actions {
            let Action::Create(n) = action else { panic!() };
            let machine = match &n.machine {
                plan::MachinePlan::Microvm {
                    vcpus,
                    memory_mib,
                    kernel,
                    image,
                    ..
                } => Some(crate::cluster::spec::MachineTemplate {
                    vcpus: *vcpus,
                    memory_mib: *memory_mib,
                    kernel: kernel.clone(),
                    image: image.clone(),
                }),
                plan::MachinePlan::Baremetal => None,
            };
            observed.nodes.push(ObservedNode {
                name: n.name.clone(),
                role: n.role,
                machine,
                ip: n.ip,
                mac: n.mac.as_deref().map(|m| vmm_core::parse_mac(m).unwrap()),
                state: NodeState::Running,
            });
        }
        spec.spec.control_plane.vcpus = 4;
        match &mut spec.spec.workers[0] {
            crate::cluster::spec::WorkerPool::Microvm(p) => p.count = 1,
            crate::cluster::spec::WorkerPool::Baremetal(_) => unreachable!(),
        }
        observed.nodes[3].state = NodeState::Crashed; // edge1-general-0
        let out = table(&plan::plan(&spec, &observed, Path::new("/s")).unwrap());
        let verbs: Vec<(&str, &str)> = out
            .lines()
            .skip(1)
            .take(6)
            .map(|l| {
                let mut w = l.split_whitespace();
                (w.next().unwrap(), w.next().unwrap())
            })
            .collect();
        assert_eq!(
            verbs,
            [
                ("replace", "edge1-cp-0"),
                ("keep", "edge1-cp-1"),
                ("keep", "edge1-cp-2"),
                ("replace", "edge1-general-0"),
                ("keep", "rack1-a"),
                ("delete", "edge1-general-1"),
            ],
            "{out}"
        );
        assert!(out.contains("replace edge1-cp-0: vcpus 2 -> 4\n"), "{out}");
        assert!(out.contains("replace edge1-general-0: crashed\n"), "{out}");
        assert!(
            out.contains(
                "deferred edge1-cp-1: vcpus 2 -> 4 (control-plane nodes are replaced one per run)"
            ),
            "{out}"
        );
        assert!(
            out.ends_with("control-plane endpoint: 10.42.0.2\n"),
            "{out}"
        );
    }
}
