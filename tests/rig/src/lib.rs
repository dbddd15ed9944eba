//! The L1 VM test rig: runs a scenario inside a QEMU-TCG VM ("L1") whose
//! Debian kernel gets a real, nested KVM from QEMU's emulated AMD SVM, so
//! mercury can boot unmodified Linux guests on a host whose own /dev/kvm
//! cannot: the development and CI machines' own /dev/kvm is a paravirtual
//! KVM that interprets guest kernel code (docs/RIG.md, "The host's KVM and
//! the two test paths"). An aarch64 L1 (`# rig-arch: aarch64`) is QEMU's
//! `virt` board with EL2 instead, whose arm64 kernel runs KVM in VHE mode
//! ([`arch`]).
//!
//! One run, top to bottom ([`Rig::run`]):
//! 1. load `tests/rig/scenarios/<name>.sh` and its header ([`scenario`]);
//! 2. fetch the L1 kernel and busybox from Debian into the cache ([`debian`]),
//!    resolve the kernel modules and their dependencies ([`kmod`]), build a
//!    static `mercury`, the declared tools and guest images ([`inputs`]);
//! 3. write the L1 initramfs with a generated /init ([`initramfs`], [`cpio`]);
//! 4. boot L1 once, following its serial console under a deadline ([`qemu`]);
//! 5. collect RIG-RESULT lines into a [`RunReport`] ([`results`], [`report`]).

pub mod arch;
pub mod cache;
pub mod command;
pub mod control;
pub mod cpio;
pub mod debian;
pub mod elf;
pub mod evidence;
pub mod initramfs;
pub mod inputs;
pub mod kmod;
pub mod qemu;
pub mod report;
pub mod reruns;
pub mod results;
pub mod scenario;

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use arch::Arch;
pub use cache::Cache;
pub use report::{RunFailure, RunReport, Timings};
pub use results::{CheckResult, Status};
pub use scenario::Scenario;

/// Modules every scenario gets: KVM for AMD SVM (dependencies are added from `.modinfo`).
pub const KVM_MODULES: [&str; 3] = ["irqbypass", "kvm", "kvm-amd"];

/// Errors that stop a run before it can produce a [`RunReport`].
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    #[error(transparent)]
    Command(#[from] command::CommandError),
    #[error(transparent)]
    Debian(#[from] debian::DebianError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Input(#[from] inputs::InputError),
    #[error("cannot use `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Kmod(#[from] kmod::KmodError),
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
}

/// Per-run choices.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the scenario's `# rig-timeout:`.
    pub timeout: Option<Duration>,
    /// Keep the work directory (initramfs, /init) for inspection.
    pub keep: bool,
    /// L1's QEMU `-cpu` model instead of [`Arch::cpu`].
    pub cpu: Option<String>,
    /// L1's QEMU `-accel` instead of [`qemu::L1_ACCEL`].
    pub accel: Option<String>,
    /// The QEMU binary instead of [`Arch::qemu`] from `PATH`.
    pub qemu: Option<PathBuf>,
    /// The L1 kernel package instead of [`Arch::kernel_package`].
    pub l1_kernel: Option<String>,
    /// Appended to L1's kernel command line ([`Arch::cmdline`]), e.g.
    /// `transparent_hugepage=never numa_balancing=disable`.
    pub l1_append: Option<String>,
}

/// The rig, bound to a repository checkout and a cache.
#[derive(Clone, Debug)]
pub struct Rig {
    pub repo: PathBuf,
    pub cache: Cache,
}

impl Rig {
    /// `$MERCURY_REPO` (default: the checkout this crate was built from) and
    /// `$MERCURY_CACHE` (default `~/.cache/mercury`).
    pub fn from_env() -> Self {
        let repo = env::var_os("MERCURY_REPO")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
        let repo = repo.canonicalize().unwrap_or(repo);
        Rig {
            repo,
            cache: Cache::from_env(),
        }
    }

    /// `tests/rig/scenarios`.
    pub fn scenarios_dir(&self) -> PathBuf {
        self.repo.join("tests/rig/scenarios")
    }

    /// The scenario names.
    pub fn list(&self) -> Result<Vec<String>, RigError> {
        Ok(scenario::list(&self.scenarios_dir())?)
    }

    /// Runs one scenario in one L1 boot.
    pub fn run(&self, name: &str, options: &RunOptions) -> Result<RunReport, RigError> {
        self.run_streaming(name, options, &mut |_| {})
    }

    /// [`Self::run`], handing every L1 console line to `on_line` as it arrives.
    pub fn run_streaming(
        &self,
        name: &str,
        options: &RunOptions,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<RunReport, RigError> {
        let scenario = scenario::load(&self.scenarios_dir(), name)?;
        let arch = scenario.header.arch;
        let mut timings = Timings::default();
        let mut notes = Vec::new();
        let mut step = |label: &str, started: Instant| {
            timings.prepare.push((label.to_string(), started.elapsed()))
        };

        let started = Instant::now();
        let qemu_bin = options
            .qemu
            .clone()
            .unwrap_or_else(|| PathBuf::from(arch.qemu()));
        if options.qemu.is_none() && !qemu::available(&qemu_bin) {
            log::info!("{} missing: running scripts/setup.sh", arch.qemu());
            qemu::install(&self.repo)?;
            notes.push("installed QEMU with scripts/setup.sh".to_string());
        }
        let qemu_version = qemu::version(&qemu_bin)
            .unwrap_or_else(|| format!("`{} --version` failed", qemu_bin.display()));
        notes.push(format!("L1 QEMU: {} ({qemu_version})", qemu_bin.display()));
        notes.extend(qemu::pin_note(&qemu_version));
        log::info!(
            "fetching the L1 kernel and busybox (cached under {})",
            self.cache.root().display()
        );
        let kernel = debian::l1_kernel(&self.cache, arch, options.l1_kernel.as_deref())?;
        notes.push(format!("L1 kernel: {}", kernel.package));
        notes.extend(kernel.note.clone());
        let busybox_of = |arch: Arch| -> Result<PathBuf, RigError> {
            let unpacked = debian::fetch(&self.cache, &arch.qualify(debian::BUSYBOX_PACKAGE))?;
            Ok(unpacked.root.join("bin/busybox"))
        };
        let busybox = busybox_of(arch)?;
        // The host cannot run a foreign busybox; its own lists the same applets.
        let applet_lister = if arch == arch::HOST {
            busybox.clone()
        } else {
            busybox_of(arch::HOST)?
        };
        step("debian packages", started);

        let started = Instant::now();
        let mut wanted: Vec<String> = arch.kvm_modules().iter().map(|m| m.to_string()).collect();
        if !scenario.header.disk_images.is_empty() {
            wanted.extend(arch.disk_modules().iter().map(|m| m.to_string()));
        }
        wanted.extend(scenario.header.modules.iter().cloned());
        let modules = kmod::ModuleIndex::scan(&kernel.modules)?.resolve(&wanted)?;
        step("modules", started);

        let started = Instant::now();
        log::info!("a static mercury ({})", arch.musl_target());
        let mercury = Some(inputs::mercury_binary(&self.repo, arch)?);
        step("mercury", started);

        let mut tools = Vec::new();
        let mut files = Vec::new();
        for tool in &scenario.header.tools {
            let started = Instant::now();
            log::info!("rig tool {tool}");
            if tool == control::CONTROL_VMM && arch == Arch::X86_64 {
                let host_qemu = Path::new(qemu::QEMU);
                files.extend(control::files(host_qemu)?);
                notes.push(format!(
                    "control VMM in L1: {} ({})",
                    qemu::QEMU,
                    qemu::version(host_qemu).unwrap_or_default()
                ));
                step(&format!("tool {tool}"), started);
                continue;
            }
            match inputs::tool_binary(&self.repo, arch, tool)? {
                Some(path) => tools.push((tool.clone(), path)),
                None => notes.push(format!(
                    "{tool} not installed in L1: ${} is not set",
                    inputs::COMPARE_WITH_ENV
                )),
            }
            step(&format!("tool {tool}"), started);
        }

        let mut images = Vec::new();
        for image in &scenario.header.images {
            let started = Instant::now();
            log::info!(
                "guest-images/build {image} (a first guest kernel build takes ~4 min on 2 cores)"
            );
            images.push((
                image.clone(),
                inputs::guest_image(&self.repo, &self.cache, image)?,
            ));
            step(&format!("image {image}"), started);
        }

        let mut disk_images = Vec::new();
        for image in &scenario.header.disk_images {
            let started = Instant::now();
            log::info!("guest-images/build {image} (for L1's scratch disk)");
            disk_images.push((
                image.clone(),
                inputs::guest_image(&self.repo, &self.cache, image)?,
            ));
            step(&format!("disk image {image}"), started);
        }

        let started = Instant::now();
        let stamp = unix_time();
        let work_dir = self
            .cache
            .runs()
            .join(format!("{name}-{stamp}-{}", std::process::id()));
        create_dir(&work_dir)?;
        create_dir(&self.cache.logs())?;
        let initrd = work_dir.join("initramfs.cpio");
        let payload = initramfs::Payload {
            scenario: &scenario,
            busybox: &busybox,
            applet_lister: &applet_lister,
            mercury: mercury.as_deref(),
            tools: &tools,
            modules: &modules,
            images: &images,
            files: &files,
        };
        let size = initramfs::write(&initrd, &payload)?;
        log::info!("L1 initramfs: {} MiB", size >> 20);
        step("initramfs", started);
        let disk = if disk_images.is_empty() {
            None
        } else {
            let started = Instant::now();
            let disk = scratch_disk(&work_dir, &disk_images, scenario.header.disk_mib)?;
            step("scratch disk", started);
            Some(disk)
        };

        let append = match options.l1_append.as_deref().map(str::trim) {
            Some(extra) if !extra.is_empty() => format!("{} {extra}", arch.cmdline()),
            _ => arch.cmdline().to_string(),
        };
        let spec = qemu::BootSpec {
            qemu: qemu_bin,
            kernel: kernel.vmlinuz.clone(),
            initrd,
            machine: arch.machine(scenario.header.gic),
            accel: options
                .accel
                .clone()
                .unwrap_or_else(|| qemu::L1_ACCEL.to_string()),
            cpu: options
                .cpu
                .clone()
                .unwrap_or_else(|| arch.cpu().to_string()),
            memory_mib: scenario.header.memory_mib,
            smp: scenario.header.smp,
            append,
            timeout: options.timeout.unwrap_or(scenario.header.timeout),
            console_log: self
                .cache
                .logs()
                .join(format!("{name}-{stamp}-{}.log", std::process::id())),
            // Short: a socket path has a 108-byte limit.
            monitor: env::temp_dir().join(format!("rig-{}-{stamp}.monitor", std::process::id())),
            disk,
        };
        log::info!(
            "booting L1 ({}, timeout {} s)",
            kernel.package,
            spec.timeout.as_secs()
        );
        let outcome = qemu::boot(&spec, on_line);
        let work_dir = if options.keep {
            Some(work_dir)
        } else {
            let _ = fs::remove_dir_all(&work_dir);
            None
        };
        let outcome = outcome?;
        prune_logs(&self.cache.logs(), name);

        timings.to_init = outcome.to_init;
        timings.l1_uptime_at_init = outcome.console.init_uptime;
        timings.scenario_secs = outcome.console.scenario_secs;
        timings.to_done = outcome.to_done;
        timings.l1_wall = outcome.wall;
        Ok(RunReport {
            scenario: name.to_string(),
            results: outcome.console.results,
            expected: scenario.header.expect.clone(),
            done: outcome.console.done,
            timed_out: outcome.timed_out,
            l1_failure: outcome.l1_failure.clone(),
            timeout: spec.timeout,
            poweroff_hung: outcome.poweroff_hung,
            qemu_exit: outcome.exit,
            scenario_rc: outcome.console.scenario_rc,
            console_log: spec.console_log,
            work_dir,
            timings,
            notes,
        })
    }
}

/// An ext4 image holding `images` under `/images/<name>` with `free_mib`
/// to spare, made without mounting (`mke2fs -d`, which keeps sparse files
/// sparse). L1 sees it as `/dev/vda`; scenarios mount it themselves.
fn scratch_disk(
    work_dir: &Path,
    images: &[(String, PathBuf)],
    free_mib: u32,
) -> Result<PathBuf, RigError> {
    use std::os::unix::fs::MetadataExt as _;
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RigError::Io { path, source }
    };
    let root = work_dir.join("disk-root");
    let dir = root.join("images");
    create_dir(&dir)?;
    let mut used: u64 = 0;
    for (name, path) in images {
        let dest = dir.join(name);
        // A hard link when the cache is on the same filesystem, else a copy.
        if fs::hard_link(path, &dest).is_err() {
            fs::copy(path, &dest).map_err(io_err(&dest))?;
        }
        used += fs::metadata(path).map_err(io_err(path))?.blocks() * 512;
    }
    let disk = work_dir.join("disk.img");
    let mib = used / (1 << 20) * 11 / 10 + 64 + u64::from(free_mib);
    fs::File::create(&disk)
        .and_then(|f| f.set_len(mib << 20))
        .map_err(io_err(&disk))?;
    command::run(
        std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d"])
            .arg(&root)
            .arg(&disk),
    )?;
    let _ = fs::remove_dir_all(&root);
    log::info!(
        "L1 scratch disk: {} MiB ({} MiB of images)",
        mib,
        used >> 20
    );
    Ok(disk)
}

fn create_dir(path: &Path) -> Result<(), RigError> {
    fs::create_dir_all(path).map_err(|source| RigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Keeps the newest [`cache::LOGS_KEPT_PER_SCENARIO`] logs of `scenario`.
fn prune_logs(dir: &Path, scenario: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{scenario}-");
    let mut logs: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // `<scenario>-<digits>-...`: not another scenario that shares a prefix.
            name.strip_prefix(&prefix).is_some_and(|rest| {
                rest.starts_with(|c: char| c.is_ascii_digit()) && name.ends_with(".log")
            })
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(cache::LOGS_KEPT_PER_SCENARIO);
    for (_, path) in logs.into_iter().take(excess) {
        let _ = fs::remove_file(path);
    }
}
