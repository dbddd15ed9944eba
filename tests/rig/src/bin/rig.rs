//! `rig`: run rig scenarios in an L1 VM with real (nested) KVM.
//!
//! ```text
//! rig list
//! rig boots CONSOLE-LOG...
//! rig run <scenario> [--timeout SECS] [--cpu MODEL] [--accel ACCEL] [--qemu PATH]
//!                    [--l1-kernel PACKAGE] [--l1-append ARGS] [--keep] [--quiet]
//! ```
//!
//! Exit codes: 0 all checks passed; 1 a check failed, a promised check is
//! missing, RIG-DONE was not seen or the run timed out; 2 usage error;
//! 3 the run could not start (fetch, build or QEMU error).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use mercury_rig::{Rig, RunOptions};

const USAGE: &str =
    "usage: rig list\n       rig boots CONSOLE-LOG...\n       rig run <scenario> [--timeout SECS] [--cpu MODEL] [--accel ACCEL] [--qemu PATH]\n\
    \x20              [--l1-kernel PACKAGE] [--l1-append ARGS] [--keep] [--quiet]\n\n\
    Runs tests/rig/scenarios/<scenario>.sh inside an L1 QEMU-TCG VM with nested KVM.\n\
    --timeout SECS  limit for the whole L1 run (default: the scenario's rig-timeout, else 600)\n\
    --cpu MODEL     L1's QEMU -cpu (default: see docs/RIG.md); must keep +svm,+npt\n\
    --accel ACCEL   L1's QEMU -accel (default: see docs/RIG.md), e.g. tcg,thread=single\n\
    --qemu PATH     L1's QEMU binary (default: qemu-system-x86_64 from PATH, pinned by scripts/setup.sh)\n\
    --l1-kernel PACKAGE  L1's Debian kernel package (default: see docs/RIG.md)\n\
    --l1-append ARGS     appended to L1's kernel command line, e.g. transparent_hugepage=never\n\
    --keep          keep the work directory (L1 initramfs) under $MERCURY_CACHE/rig/runs\n\
    --quiet         do not stream the L1 console\n\
    Environment: MERCURY_CACHE (default ~/.cache/mercury), MERCURY_BIN (a static mercury),\n\
    MERCURY_BIN_AARCH64 (a static aarch64 mercury for `# rig-arch: aarch64` scenarios),\n\
    MERCURY_REPO (the checkout; default: the one rig was built from), RIG_COMPARE_WITH\n\
    (a static Firecracker-compatible VMM, /bin/compare-vmm in L1 for `boot-bench`).";

/// Progress messages from the library, on stderr.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!("rig: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn main() -> ExitCode {
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Info));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rig = Rig::from_env();
    match args.first().map(String::as_str) {
        Some("list") if args.len() == 1 => list(&rig),
        Some("boots") if args.len() > 1 => boots(&args[1..]),
        Some("run") => match parse_run(&args[1..]) {
            Ok((name, options, quiet)) => run(&rig, &name, &options, quiet),
            Err(message) => usage(&message),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage("expected `list`, `boots <console log>...` or `run <scenario>`"),
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("rig: {message}\n{USAGE}");
    ExitCode::from(2)
}

fn parse_run(args: &[String]) -> Result<(String, RunOptions, bool), String> {
    let mut name = None;
    let mut options = RunOptions::default();
    let mut quiet = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--keep" => options.keep = true,
            "--quiet" => quiet = true,
            "--timeout" => {
                let value = iter.next().ok_or("--timeout needs a value in seconds")?;
                let secs: u64 = value
                    .parse()
                    .map_err(|_| format!("invalid --timeout `{value}`"))?;
                options.timeout = Some(Duration::from_secs(secs));
            }
            "--accel" => {
                let value = iter.next().ok_or("--accel needs a QEMU accelerator")?;
                options.accel = Some(value.clone());
            }
            "--qemu" => {
                let value = iter
                    .next()
                    .ok_or("--qemu needs the path of a QEMU binary")?;
                options.qemu = Some(value.into());
            }
            "--l1-kernel" => {
                let value = iter
                    .next()
                    .ok_or("--l1-kernel needs a Debian kernel package name")?;
                if !value.starts_with("linux-image-") {
                    return Err(format!(
                        "--l1-kernel `{value}` is not a Debian kernel package (linux-image-...)"
                    ));
                }
                options.l1_kernel = Some(value.clone());
            }
            "--l1-append" => {
                let value = iter
                    .next()
                    .ok_or("--l1-append needs kernel command-line arguments")?;
                options.l1_append = Some(value.clone());
            }
            "--cpu" => {
                let value = iter.next().ok_or("--cpu needs a QEMU CPU model")?;
                options.cpu = Some(value.clone());
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option `{flag}`")),
            scenario if name.is_none() => name = Some(scenario.to_string()),
            extra => return Err(format!("unexpected argument `{extra}`")),
        }
    }
    let name = name.ok_or("run needs a scenario name (see `rig list`)")?;
    Ok((name, options, quiet))
}

/// `rig boots LOG...`: the per-boot summary of saved console logs, as `rig
/// run` prints it (the L1 failure, if any, is not in the log: boots L1
/// interrupted show as "never ended").
fn boots(logs: &[String]) -> ExitCode {
    for log in logs {
        match std::fs::read(log) {
            Ok(bytes) => {
                let boots = mercury_rig::evidence::boots(&String::from_utf8_lossy(&bytes));
                println!("{log}\n{}", mercury_rig::evidence::summary(&boots, None));
            }
            Err(err) => {
                eprintln!("rig: cannot read console log `{log}`: {err}");
                return ExitCode::from(3);
            }
        }
    }
    ExitCode::SUCCESS
}

fn list(rig: &Rig) -> ExitCode {
    match rig.list() {
        Ok(names) => {
            names.iter().for_each(|name| println!("{name}"));
            ExitCode::SUCCESS
        }
        Err(err) => fail_to_start(&err),
    }
}

fn run(rig: &Rig, name: &str, options: &RunOptions, quiet: bool) -> ExitCode {
    let mut echo = |line: &str| {
        if !quiet {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "L1| {line}");
        }
    };
    match rig.run_streaming(name, options, &mut echo) {
        Ok(report) => {
            let boots = report.boots();
            if !boots.is_empty() {
                println!(
                    "{}",
                    mercury_rig::evidence::summary(&boots, report.l1_failure.as_deref())
                );
            }
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => fail_to_start(&err),
    }
}

fn fail_to_start(err: &dyn std::error::Error) -> ExitCode {
    eprintln!("rig: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    ExitCode::from(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_run_arguments() {
        let (name, options, quiet) = parse_run(&args(&[
            "smoke",
            "--timeout",
            "90",
            "--keep",
            "--cpu",
            "EPYC,+svm",
        ]))
        .unwrap();
        assert_eq!(name, "smoke");
        assert_eq!(options.timeout, Some(Duration::from_secs(90)));
        assert!(options.keep && !quiet);
        assert_eq!(options.cpu.as_deref(), Some("EPYC,+svm"));
        let (_, options, _) = parse_run(&args(&[
            "smp-stress",
            "--qemu",
            "/opt/q/qemu",
            "--l1-kernel",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "--l1-append",
            "transparent_hugepage=never",
        ]))
        .unwrap();
        assert_eq!(
            options.qemu.as_deref(),
            Some(std::path::Path::new("/opt/q/qemu"))
        );
        assert_eq!(
            options.l1_kernel.as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64-unsigned")
        );
        assert_eq!(
            options.l1_append.as_deref(),
            Some("transparent_hugepage=never")
        );
        let err = parse_run(&args(&["smoke", "--l1-kernel", "6.12"])).unwrap_err();
        assert!(err.contains("`6.12`"), "{err}");
        assert!(parse_run(&args(&["--timeout", "x", "smoke"])).is_err());
        assert!(parse_run(&args(&["a", "b"])).is_err());
        assert!(parse_run(&args(&["--bogus"])).is_err());
        assert!(parse_run(&args(&[])).is_err());
    }
}
