//! `boot-harness`: boots a guest with `mercury run` N times and reports VMM
//! setup, kernel and total boot times (min/median/max), optionally the VMM's
//! memory overhead and a comparison with a Firecracker-compatible VMM.
//!
//! ```text
//! cargo build --release -p launcher
//! cargo run --release -p mercury-benches --bin boot-harness -- \
//!     --kernel "$(guest-images/build test-guest)" --cmdline checks=timer \
//!     --vcpus 1,2 --runs 10 --rss --json boot.json
//! ```
//!
//! `--kernel` and `--cmdline` may repeat: every kernel × command line ×
//! vCPU count × memory size is one variant, all booted interleaved, so two
//! kernels or two command lines are compared under the same noise.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use mercury_benches::firecracker::{self, BootSpec};
use mercury_benches::harness::{
    boot_once, exec_floor_once, measure_memory, BootRun, Variant, Vmm, DEFAULT_CMDLINE,
};
use mercury_benches::report::{self, ExecFloor, Machine, MemoryResult, Results, VariantResult};

/// Boot-time and memory-overhead harness for mercury.
#[derive(Debug, Parser)]
#[command(name = "boot-harness", version, about)]
struct Args {
    /// Guest kernel (ELF vmlinux or bzImage); repeat to compare kernels.
    #[arg(long, value_name = "FILE", required = true)]
    kernel: Vec<PathBuf>,
    /// Initial ramdisk.
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// Kernel command line of the boot runs; repeat to compare command lines.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    cmdline: Vec<String>,
    /// vCPU counts to compare, comma-separated: one variant each.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    vcpus: Vec<u8>,
    /// Guest memory sizes in MiB to compare, comma-separated.
    #[arg(long, value_name = "MIB", value_delimiter = ',', default_value = "128")]
    memory: Vec<u64>,
    /// Counted boots per variant.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Uncounted boots per variant first (page cache, lazy binding).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// The mercury binary [default: target/release/mercury].
    #[arg(long, value_name = "PATH")]
    mercury: Option<PathBuf>,
    /// Also boot a Firecracker-compatible binary (`--no-api --config-file`)
    /// with the same settings, interleaved, and print mercury/other ratios.
    #[arg(long, value_name = "PATH")]
    compare_with: Option<PathBuf>,
    /// Also measure mercury's memory overhead (Rss besides guest memory)
    /// with a guest that stays up.
    #[arg(long)]
    rss: bool,
    /// Command line for the memory runs: the guest must stay up.
    #[arg(long, default_value = "checks=halt")]
    rss_cmdline: String,
    /// Memory samples per mercury variant.
    #[arg(long, default_value_t = 5)]
    rss_runs: usize,
    /// Wait this long after guest memory holds the kernel before sampling.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    settle_ms: u64,
    /// Kill a run after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("boot-harness: error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs everything; `Ok(false)` when some run failed.
fn run(args: &Args) -> Result<bool, String> {
    let mercury = args.mercury.clone().unwrap_or_else(default_mercury);
    if !mercury.is_file() {
        return Err(format!(
            "no mercury binary at {}: build it with `cargo build --release -p launcher` or pass --mercury PATH",
            mercury.display()
        ));
    }
    if let Some(missing) = args.kernel.iter().find(|k| !k.is_file()) {
        return Err(format!("no kernel at {}", missing.display()));
    }
    let timeout = Duration::from_secs(args.timeout);
    let variants = variants(args, &mercury)?;

    let mut runs: Vec<Vec<BootRun>> = vec![Vec::new(); variants.len()];
    let mut binaries: Vec<PathBuf> = vec![mercury.clone()];
    binaries.extend(args.compare_with.clone());
    let mut floors: Vec<Vec<Option<u64>>> = vec![Vec::new(); binaries.len()];
    for round in 0..args.warmup + args.runs {
        let counted = round.checked_sub(args.warmup);
        // Interleaved: every variant sees the same background noise.
        for (variant, results) in variants.iter().zip(&mut runs) {
            let index = counted.map_or(0, |i| i + 1);
            let boot = boot_once(variant, index, timeout);
            progress(variant, counted, &boot);
            if counted.is_some() {
                results.push(boot);
            }
        }
        if counted.is_some() {
            for (binary, results) in binaries.iter().zip(&mut floors) {
                results.push(exec_floor_once(binary, timeout));
            }
        }
    }
    let variant_results: Vec<VariantResult> = variants
        .iter()
        .zip(runs)
        .map(|(v, r)| VariantResult::new(v, r))
        .collect();

    let memory = if args.rss {
        measure_memory_all(args, &variants, timeout)
    } else {
        Vec::new()
    };

    let results = Results {
        harness_version: env!("CARGO_PKG_VERSION"),
        machine: Machine::probe(version_of(&mercury)),
        runs: args.runs,
        warmup: args.warmup,
        kernels: args
            .kernel
            .iter()
            .map(|k| k.display().to_string())
            .collect(),
        initrd: args.initrd.as_ref().map(|p| p.display().to_string()),
        cmdlines: args.cmdline.clone(),
        ratios: report::ratios(&variant_results),
        exec_floor: binaries
            .iter()
            .zip(&floors)
            .map(|(b, runs)| ExecFloor::new(b.display().to_string(), runs))
            .collect(),
        variants: variant_results,
        memory,
    };
    print!("{}", report::render(&results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results)
            .map_err(|e| format!("cannot encode results: {e}"))?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    for v in &variants {
        if let Some(file) = &v.config_file {
            let _ = std::fs::remove_file(file);
        }
    }
    let all_ok = results
        .variants
        .iter()
        .all(|v| v.runs.iter().all(BootRun::ok))
        && results.memory.iter().all(|m| m.failures.is_empty());
    Ok(all_ok)
}

/// target/release/mercury of this workspace.
fn default_mercury() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    workspace.join("target/release/mercury")
}

/// Every kernel × command line × vCPU × memory combination for mercury,
/// then for the comparison VMM.
fn variants(args: &Args, mercury: &Path) -> Result<Vec<Variant>, String> {
    let mut specs = Vec::new();
    for kernel in &args.kernel {
        for (c, cmdline) in args.cmdline.iter().enumerate() {
            let mut tag = Vec::new();
            if args.kernel.len() > 1 {
                let name = kernel.file_name().unwrap_or(kernel.as_os_str());
                tag.push(name.to_string_lossy().into_owned());
            }
            if args.cmdline.len() > 1 {
                tag.push(format!("cmdline {}", c + 1));
            }
            for &vcpus in &args.vcpus {
                for &memory_mib in &args.memory {
                    let spec = BootSpec {
                        kernel: kernel.clone(),
                        initrd: args.initrd.clone(),
                        cmdline: cmdline.clone(),
                        vcpus,
                        memory_mib,
                    };
                    specs.push((spec, tag.join(", ")));
                }
            }
        }
    }
    let mut variants: Vec<Variant> = specs
        .iter()
        .map(|(spec, tag)| Variant {
            vmm: Vmm::Mercury,
            binary: mercury.to_path_buf(),
            spec: spec.clone(),
            config_file: None,
            tag: tag.clone(),
        })
        .collect();
    if let Some(other) = &args.compare_with {
        for (i, (spec, tag)) in specs.into_iter().enumerate() {
            let file = std::env::temp_dir().join(format!(
                "boot-harness-{}-{i}-{}vcpu-{}mib.json",
                std::process::id(),
                spec.vcpus,
                spec.memory_mib
            ));
            std::fs::write(&file, firecracker::config_json(&spec))
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            variants.push(Variant {
                vmm: Vmm::Firecracker,
                binary: other.clone(),
                spec,
                config_file: Some(file),
                tag,
            });
        }
    }
    Ok(variants)
}

fn measure_memory_all(args: &Args, variants: &[Variant], timeout: Duration) -> Vec<MemoryResult> {
    let settle = Duration::from_millis(args.settle_ms);
    // The memory runs use their own command line, so one per kernel, vCPU
    // count and memory size: the variants of the first command line.
    let mercury: Vec<Variant> = variants
        .iter()
        .filter(|v| v.vmm == Vmm::Mercury && Some(&v.spec.cmdline) == args.cmdline.first())
        .map(|v| {
            let mut v = v.clone();
            v.spec.cmdline = args.rss_cmdline.clone();
            v
        })
        .collect();
    let mut samples = vec![Vec::new(); mercury.len()];
    let mut failures = vec![Vec::new(); mercury.len()];
    for round in 1..=args.rss_runs {
        for (i, variant) in mercury.iter().enumerate() {
            match measure_memory(variant, settle, timeout) {
                Ok(report) => {
                    eprintln!(
                        "memory {} #{round}: overhead {} KiB, guest {} KiB",
                        variant.label(),
                        report.overhead_kib,
                        report.guest_rss_kib
                    );
                    samples[i].push(report);
                }
                Err(e) => {
                    eprintln!("memory {} #{round}: FAILED: {e}", variant.label());
                    failures[i].push(e);
                }
            }
        }
    }
    mercury
        .iter()
        .zip(samples.into_iter().zip(failures))
        .map(|(v, (s, f))| MemoryResult::new(v.label(), s, f))
        .collect()
}

fn progress(variant: &Variant, counted: Option<usize>, boot: &BootRun) {
    let which = counted.map_or("warm-up".to_string(), |i| format!("#{}", i + 1));
    let status = match &boot.failure {
        None => format!(
            "total {} us, wall {} us",
            boot.total_us.unwrap_or_default(),
            boot.process_wall_us.unwrap_or_default()
        ),
        Some(why) => format!("FAILED: {}", why.lines().next().unwrap_or_default()),
    };
    eprintln!("{} {which}: {status}", variant.label());
}

/// First line of `<binary> --version`, or "" if it has none.
fn version_of(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}
