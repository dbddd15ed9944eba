//! Results: what the harness measured, summarised, as a readable table and
//! as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::harness::{BootRun, Variant, Vmm, METRICS};
use crate::smaps::MemoryReport;
use crate::stats::{ratio, Summary};

/// The machine and binaries the numbers come from.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: String,
    /// First `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs available to the harness.
    pub cpus: usize,
    /// `mercury --version`.
    pub mercury_version: String,
}

impl Machine {
    /// Reads what it can about this machine; unknown fields stay empty.
    pub fn probe(mercury_version: String) -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        Machine {
            kernel_release: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model: cpu_model(&read("/proc/cpuinfo")),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            mercury_version,
        }
    }
}

fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// All boots of one variant.
#[derive(Clone, Debug, Serialize)]
pub struct VariantResult {
    /// "mercury, 1 vCPU, 128 MiB".
    pub label: String,
    /// Which VMM.
    pub vmm: Vmm,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Kernel booted.
    pub kernel: String,
    /// Kernel command line.
    pub cmdline: String,
    /// Every counted run, in order (warm-up runs excluded).
    pub runs: Vec<BootRun>,
    /// Per metric key: min/median/max over the successful runs, µs.
    pub summary: BTreeMap<&'static str, Summary>,
}

impl VariantResult {
    /// Summarises the runs of `variant`.
    pub fn new(variant: &Variant, runs: Vec<BootRun>) -> VariantResult {
        let mut summary = BTreeMap::new();
        for metric in METRICS {
            let values: Vec<f64> = runs
                .iter()
                .filter(|r| r.ok())
                .filter_map(|r| (metric.get)(r).map(|v| v as f64))
                .collect();
            if let Some(s) = Summary::of(&values) {
                summary.insert(metric.key, s);
            }
        }
        VariantResult {
            label: variant.label(),
            vmm: variant.vmm,
            vcpus: variant.spec.vcpus,
            memory_mib: variant.spec.memory_mib,
            kernel: variant.spec.kernel.display().to_string(),
            cmdline: variant.spec.cmdline.clone(),
            runs,
            summary,
        }
    }

    fn median(&self, key: &str) -> Option<f64> {
        self.summary.get(key).map(|s| s.median)
    }

    fn ok_count(&self) -> usize {
        self.runs.iter().filter(|r| r.ok()).count()
    }
}

/// Medians of one variant divided by those of another.
#[derive(Clone, Debug, Serialize)]
pub struct RatioRow {
    /// Numerator variant.
    pub variant: String,
    /// Denominator variant.
    pub baseline: String,
    /// Per metric key present in both.
    pub ratios: BTreeMap<&'static str, f64>,
}

/// The ratios worth printing: every mercury variant against the first one,
/// and every mercury variant against the comparison VMM with the same
/// kernel, command line, vCPUs and memory.
pub fn ratios(variants: &[VariantResult]) -> Vec<RatioRow> {
    let mercury: Vec<&VariantResult> = variants.iter().filter(|v| v.vmm == Vmm::Mercury).collect();
    let mut pairs: Vec<(&VariantResult, &VariantResult)> = Vec::new();
    if let Some((first, rest)) = mercury.split_first() {
        pairs.extend(rest.iter().map(|v| (*v, *first)));
    }
    for m in &mercury {
        let twin = variants.iter().find(|o| {
            o.vmm != Vmm::Mercury
                && o.vcpus == m.vcpus
                && o.memory_mib == m.memory_mib
                && o.kernel == m.kernel
                && o.cmdline == m.cmdline
        });
        if let Some(other) = twin {
            pairs.push((m, other));
        }
    }
    pairs
        .into_iter()
        .map(|(a, b)| RatioRow {
            variant: a.label.clone(),
            baseline: b.label.clone(),
            ratios: METRICS
                .iter()
                .filter_map(|m| Some((m.key, ratio(a.median(m.key), b.median(m.key))?)))
                .collect(),
        })
        .collect()
}

/// Memory samples of one variant.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    /// Variant label.
    pub label: String,
    /// One report per successful sample.
    pub samples: Vec<MemoryReport>,
    /// Why the other samples failed.
    pub failures: Vec<String>,
    /// Per field: min/median/max over the samples, KiB.
    pub summary: BTreeMap<&'static str, Summary>,
}

/// A memory field: JSON key, table label, accessor.
type MemoryField = (&'static str, &'static str, fn(&MemoryReport) -> Option<u64>);

/// The memory fields, in table order.
const MEMORY_FIELDS: [MemoryField; 7] = [
    ("overhead_kib", "VMM overhead (Rss - guest Rss)", |r| {
        Some(r.overhead_kib)
    }),
    ("overhead_file_kib", "  of which file-backed", |r| {
        Some(r.overhead_file_kib)
    }),
    (
        "overhead_anon_kib",
        "  of which in non-file mappings",
        |r| Some(r.overhead_anon_kib),
    ),
    (
        "overhead_anonymous_kib",
        "  of which Anonymous (per process)",
        |r| Some(r.overhead_anonymous_kib),
    ),
    ("guest_rss_kib", "guest memory Rss", |r| {
        Some(r.guest_rss_kib)
    }),
    ("vm_rss_kib", "VmRSS (total)", |r| r.vm_rss_kib),
    ("vm_hwm_kib", "VmHWM (peak)", |r| r.vm_hwm_kib),
];

impl MemoryResult {
    /// Summarises the samples of one variant.
    pub fn new(label: String, samples: Vec<MemoryReport>, failures: Vec<String>) -> MemoryResult {
        let mut summary = BTreeMap::new();
        for (key, _, get) in MEMORY_FIELDS {
            let values: Vec<f64> = samples
                .iter()
                .filter_map(|s| get(s).map(|v| v as f64))
                .collect();
            if let Some(s) = Summary::of(&values) {
                summary.insert(key, s);
            }
        }
        MemoryResult {
            label,
            samples,
            failures,
            summary,
        }
    }
}

/// Spawn → exit of `<binary> --version`, per binary.
#[derive(Clone, Debug, Serialize)]
pub struct ExecFloor {
    /// The binary.
    pub binary: String,
    /// Runs that failed.
    pub failed: usize,
    /// Min/median/max, µs.
    pub summary: Option<Summary>,
}

impl ExecFloor {
    /// Summarises the runs of one binary (`None`: a failed run).
    pub fn new(binary: String, runs: &[Option<u64>]) -> ExecFloor {
        let values: Vec<f64> = runs.iter().flatten().map(|&v| v as f64).collect();
        ExecFloor {
            binary,
            failed: runs.iter().filter(|r| r.is_none()).count(),
            summary: Summary::of(&values),
        }
    }
}

/// Everything one harness invocation measured.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// This harness's version.
    pub harness_version: &'static str,
    /// Where it ran.
    pub machine: Machine,
    /// Counted runs per variant.
    pub runs: usize,
    /// Uncounted warm-up runs per variant before them.
    pub warmup: usize,
    /// Kernels booted (one or more variants each).
    pub kernels: Vec<String>,
    /// Initrd, if any.
    pub initrd: Option<String>,
    /// Command lines of the boot runs (one or more variants each).
    pub cmdlines: Vec<String>,
    /// Boot timings per variant.
    pub variants: Vec<VariantResult>,
    /// Ratios of medians between variants.
    pub ratios: Vec<RatioRow>,
    /// Process floor per binary, measured in the same rounds.
    pub exec_floor: Vec<ExecFloor>,
    /// Memory overhead per mercury variant (with `--rss`).
    pub memory: Vec<MemoryResult>,
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn opt_ms(us: Option<u64>) -> String {
    us.map_or_else(|| "-".to_string(), |v| ms(v as f64))
}

fn mib(kib: f64) -> String {
    format!("{:.2}", kib / 1024.0)
}

/// The readable report.
pub fn render(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let _ = writeln!(
        out,
        "boot-harness {} | {}",
        results.harness_version, m.mercury_version
    );
    let _ = writeln!(
        out,
        "host: Linux {}, {} CPUs, {}",
        m.kernel_release, m.cpus, m.cpu_model
    );
    let _ = writeln!(
        out,
        "kernel{}: {}{}",
        if results.kernels.len() > 1 { "s" } else { "" },
        results.kernels.join(", "),
        results
            .initrd
            .as_deref()
            .map(|i| format!(" | initrd: {i}"))
            .unwrap_or_default(),
    );
    match results.cmdlines.as_slice() {
        [one] => {
            let _ = writeln!(out, "cmdline: {one:?}");
        }
        many => {
            for (i, cmdline) in many.iter().enumerate() {
                let _ = writeln!(out, "cmdline {}: {cmdline:?}", i + 1);
            }
        }
    }
    let _ = writeln!(
        out,
        "{} runs per variant after {} warm-up, variants interleaved; times in ms",
        results.runs, results.warmup
    );
    for v in results.variants.iter().filter(|v| !v.runs.is_empty()) {
        render_variant(&mut out, v);
    }
    render_ratios(&mut out, &results.ratios);
    render_floor(&mut out, &results.exec_floor);
    render_memory(&mut out, &results.memory);
    out
}

fn render_variant(out: &mut String, v: &VariantResult) {
    let _ = writeln!(
        out,
        "\n== {} ({}/{} ok)",
        v.label,
        v.ok_count(),
        v.runs.len()
    );
    let _ = writeln!(
        out,
        "  {:>3} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "run", "setup", "setup cpu", "kernel", "total", "proc wall", "proc cpu"
    );
    for r in &v.runs {
        let values: Vec<String> = METRICS.iter().map(|m| opt_ms((m.get)(r))).collect();
        let _ = write!(out, "  {:>3}", r.index);
        for value in values {
            let _ = write!(out, " {value:>10}");
        }
        let _ = writeln!(out, "{}", if r.ok() { "" } else { "  FAILED" });
    }
    let _ = writeln!(
        out,
        "  {:<40} {:>10} {:>10} {:>10}",
        "metric", "min", "median", "max"
    );
    for metric in METRICS {
        if let Some(s) = v.summary.get(metric.key) {
            let _ = writeln!(
                out,
                "  {:<40} {:>10} {:>10} {:>10}",
                metric.label,
                ms(s.min),
                ms(s.median),
                ms(s.max)
            );
        }
    }
    for r in v.runs.iter().filter(|r| !r.ok()) {
        let why = r
            .failure
            .as_deref()
            .unwrap_or_default()
            .replace('\n', "\n      | ");
        let _ = writeln!(out, "  run {} failed: {why}", r.index);
    }
}

fn render_ratios(out: &mut String, rows: &[RatioRow]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n== ratios of medians (variant / baseline)");
    for row in rows {
        let _ = writeln!(out, "  {}  /  {}", row.variant, row.baseline);
        for metric in METRICS {
            if let Some(r) = row.ratios.get(metric.key) {
                let _ = writeln!(out, "    {:<40} {r:>7.3}", metric.label);
            }
        }
    }
}

fn render_floor(out: &mut String, floors: &[ExecFloor]) {
    let floors: Vec<&ExecFloor> = floors
        .iter()
        .filter(|f| f.summary.is_some() || f.failed > 0)
        .collect();
    if floors.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n== exec floor: `<binary> --version`, spawn -> exit (no VM)"
    );
    let _ = writeln!(
        out,
        "  {:<40} {:>10} {:>10} {:>10}",
        "binary", "min", "median", "max"
    );
    for f in floors {
        let name = f.binary.rsplit('/').next().unwrap_or_default();
        match &f.summary {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "  {name:<40} {:>10} {:>10} {:>10}",
                    ms(s.min),
                    ms(s.median),
                    ms(s.max)
                );
            }
            None => {
                let _ = writeln!(out, "  {name:<40} failed");
            }
        }
        if f.failed > 0 {
            let _ = writeln!(out, "  ({} runs of {name} --version failed)", f.failed);
        }
    }
}

fn render_memory(out: &mut String, memory: &[MemoryResult]) {
    for mem in memory {
        let _ = writeln!(
            out,
            "\n== memory: {} ({} samples, {} failed); MiB",
            mem.label,
            mem.samples.len(),
            mem.failures.len()
        );
        let _ = writeln!(
            out,
            "  {:<40} {:>10} {:>10} {:>10}",
            "", "min", "median", "max"
        );
        for (key, label, _) in MEMORY_FIELDS {
            if let Some(s) = mem.summary.get(key) {
                let _ = writeln!(
                    out,
                    "  {label:<40} {:>10} {:>10} {:>10}",
                    mib(s.min),
                    mib(s.median),
                    mib(s.max)
                );
            }
        }
        for f in &mem.failures {
            let _ = writeln!(out, "  failed: {}", f.replace('\n', "\n      | "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firecracker::BootSpec;

    fn variant(vmm: Vmm, vcpus: u8) -> Variant {
        Variant {
            vmm,
            binary: "b".into(),
            spec: BootSpec {
                kernel: "/k".into(),
                initrd: None,
                cmdline: "c".into(),
                vcpus,
                memory_mib: 128,
            },
            config_file: None,
            tag: String::new(),
        }
    }

    fn run(index: usize, total: u64, ok: bool) -> BootRun {
        BootRun {
            index,
            failure: (!ok).then(|| "boom".to_string()),
            setup_wall_us: Some(total / 10),
            total_us: Some(total),
            process_wall_us: Some(total + 5000),
            ..BootRun::default()
        }
    }

    #[test]
    fn summary_counts_only_successful_runs() {
        let v = VariantResult::new(
            &variant(Vmm::Mercury, 1),
            vec![
                run(1, 40_000, true),
                run(2, 1_000_000, false),
                run(3, 42_000, true),
            ],
        );
        let total = v.summary["total_us"];
        assert_eq!(
            (total.n, total.min, total.median, total.max),
            (2, 40_000.0, 41_000.0, 42_000.0)
        );
        assert!(
            !v.summary.contains_key("kernel_us"),
            "no values, no summary"
        );
        assert_eq!(v.ok_count(), 2);
    }

    #[test]
    fn ratio_pairs() {
        let m1 = VariantResult::new(&variant(Vmm::Mercury, 1), vec![run(1, 40_000, true)]);
        let m2 = VariantResult::new(&variant(Vmm::Mercury, 2), vec![run(1, 60_000, true)]);
        let f1 = VariantResult::new(&variant(Vmm::Firecracker, 1), vec![run(1, 80_000, true)]);
        let rows = ratios(&[m1, m2, f1]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].variant, "mercury, 2 vCPUs, 128 MiB");
        assert_eq!(rows[0].baseline, "mercury, 1 vCPU, 128 MiB");
        assert_eq!(rows[0].ratios["total_us"], 1.5);
        assert_eq!(rows[1].baseline, "firecracker, 1 vCPU, 128 MiB");
        assert_eq!(rows[1].ratios["total_us"], 0.5);
        assert!(!rows[1].ratios.contains_key("kernel_us"));
    }

    #[test]
    fn comparison_twin_boots_the_same_kernel_and_cmdline() {
        let m1 = VariantResult::new(&variant(Vmm::Mercury, 1), vec![run(1, 40_000, true)]);
        let mut other_kernel = variant(Vmm::Firecracker, 1);
        other_kernel.spec.kernel = "/bzImage".into();
        let mut other_cmdline = variant(Vmm::Firecracker, 1);
        other_cmdline.spec.cmdline = "c quiet".into();
        let twin = variant(Vmm::Firecracker, 1);
        let rows = ratios(&[
            m1,
            VariantResult::new(&other_kernel, vec![run(1, 10_000, true)]),
            VariantResult::new(&other_cmdline, vec![run(1, 20_000, true)]),
            VariantResult::new(&twin, vec![run(1, 80_000, true)]),
        ]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].ratios["total_us"], 0.5);
    }

    #[test]
    fn memory_summary() {
        let sample = |overhead: u64| MemoryReport {
            total_rss_kib: overhead + 100,
            guest_rss_kib: 100,
            overhead_kib: overhead,
            overhead_file_kib: overhead / 2,
            overhead_anon_kib: overhead - overhead / 2,
            overhead_anonymous_kib: overhead / 4,
            vm_rss_kib: None,
            vm_hwm_kib: Some(overhead + 200),
        };
        let m = MemoryResult::new(
            "x".into(),
            vec![sample(3000), sample(1000), sample(2000)],
            vec![],
        );
        assert_eq!(m.summary["overhead_kib"].median, 2000.0);
        assert!(!m.summary.contains_key("vm_rss_kib"));
        assert_eq!(m.summary["vm_hwm_kib"].max, 3200.0);
    }

    #[test]
    fn cpu_model_line() {
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"),
            "AMD EPYC 7B13"
        );
        assert_eq!(cpu_model(""), "");
    }

    #[test]
    fn renders_tables_and_failures() {
        let m1 = VariantResult::new(
            &variant(Vmm::Mercury, 1),
            vec![run(1, 40_000, true), run(2, 1, false)],
        );
        let m2 = VariantResult::new(&variant(Vmm::Mercury, 2), vec![run(1, 60_000, true)]);
        let results = Results {
            harness_version: "0.1.0",
            machine: Machine::default(),
            runs: 2,
            warmup: 1,
            kernels: vec!["/k".into()],
            initrd: None,
            cmdlines: vec!["checks=timer".into()],
            ratios: ratios(&[m1.clone(), m2.clone()]),
            variants: vec![m1, m2],
            exec_floor: vec![ExecFloor::new(
                "/x/mercury".into(),
                &[Some(1500), None, Some(2500)],
            )],
            memory: vec![],
        };
        let text = render(&results);
        assert!(
            text.contains("== mercury, 1 vCPU, 128 MiB (1/2 ok)"),
            "{text}"
        );
        assert!(text.contains("40.000"), "{text}");
        assert!(text.contains("run 2 failed: boom"), "{text}");
        assert!(text.contains("1.500"), "{text}");
        assert!(
            text.contains("  mercury ") && text.contains("2.000"),
            "{text}"
        );
        assert!(
            text.contains("1 runs of mercury --version failed"),
            "{text}"
        );
        let json = serde_json::to_value(&results).unwrap();
        assert_eq!(
            json["variants"][0]["summary"]["total_us"]["median"],
            40_000.0
        );
        assert_eq!(json["variants"][0]["runs"][1]["failure"], "boom");
        assert!(text.contains("cmdline: \"checks=timer\"\n"), "{text}");

        let mut two = results.clone();
        two.kernels.push("/bz".into());
        two.cmdlines.push("quiet".into());
        let text = render(&two);
        assert!(text.contains("kernels: /k, /bz\n"), "{text}");
        assert!(
            text.contains("cmdline 1: \"checks=timer\"\ncmdline 2: \"quiet\"\n"),
            "{text}"
        );
    }
}
