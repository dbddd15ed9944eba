//! Booting L1: `qemu-system-x86_64` with TCG and an emulated AMD SVM CPU
//! (or `qemu-system-aarch64` with EL2, [`crate::arch`]), its serial console captured line by line into a log file, under a
//! deadline after which QEMU is killed.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::results::{ConsoleSummary, Event};

/// The L1 emulator.
pub const QEMU: &str = "qemu-system-x86_64";
/// L1's CPU: an AMD EPYC with SVM and nested paging, so that L1's kvm-amd
/// offers real KVM; without XSAVE, because QEMU's TCG does not intercept a
/// nested guest's XSETBV, which leaves L1's KVM with a stale XCR0 for its
/// guests (docs/RIG.md, "Known defects of the environment").
pub const L1_CPU: &str = "EPYC,+svm,+npt,-xsave";
/// L1's accelerator: TCG, one host thread per L1 vCPU (MTTCG).
pub const L1_ACCEL: &str = "tcg";
/// L1's kernel command line: serial console, reboot (and so exit, with
/// `-no-reboot`) at once on panic, and no boot chatter. L1's memory
/// settings stay Debian's (THP `always`): `transparent_hugepage=never` did
/// not remove the environment's failures (docs/RIG.md, "The emulated
/// host"); `rig run --l1-append` tries others.
pub const L1_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";
/// How long L1 may take to power off after printing RIG-DONE.
pub const POWEROFF_GRACE: Duration = Duration::from_secs(20);
/// How often L1's /init prints `RIG-HEARTBEAT` while the scenario runs.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);
/// A console silent this long after RIG-INIT (four heartbeats missed)
/// means L1 hung: the rig stops it instead of waiting out the timeout.
pub const L1_SILENCE_LIMIT: Duration = Duration::from_secs(120);
/// How long L1 keeps running after its own kernel reported failing (an
/// oops, a soft lockup): long enough for the rest of the report to reach
/// the console, instead of waiting out the run's timeout.
pub const L1_FAILURE_GRACE: Duration = Duration::from_secs(20);

/// Errors from running QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot write the console log `{path}`")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start `{0}` (scripts/setup.sh installs the pinned qemu-system-x86 and qemu-system-arm)")]
    Spawn(PathBuf, #[source] io::Error),
    #[error("waiting for QEMU failed")]
    Wait(#[source] io::Error),
}

/// One L1 boot.
#[derive(Clone, Debug)]
pub struct BootSpec {
    /// The QEMU binary ([`QEMU`] from `PATH` unless `rig run --qemu`).
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// QEMU `-M`, when not the binary's default machine (aarch64: `virt,...`).
    pub machine: Option<String>,
    /// QEMU `-accel` (TCG and its options).
    pub accel: String,
    /// QEMU `-cpu` model.
    pub cpu: String,
    pub memory_mib: u32,
    pub smp: u32,
    /// L1's kernel command line: [`L1_CMDLINE`] plus `rig run --l1-append`.
    pub append: String,
    pub timeout: Duration,
    pub console_log: PathBuf,
    /// QEMU's human monitor, a Unix socket: on a timeout the rig asks it
    /// where L1's CPUs are before killing QEMU.
    pub monitor: PathBuf,
    /// A raw ext4 scratch disk, L1's `/dev/vda` (virtio-blk over PCI).
    pub disk: Option<PathBuf>,
}

impl BootSpec {
    /// The full QEMU command line.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.qemu);
        if let Some(machine) = &self.machine {
            command.args(["-M", machine]);
        }
        command
            .args(["-accel", &self.accel, "-cpu", &self.cpu])
            .args([
                "-smp",
                &self.smp.to_string(),
                "-m",
                &self.memory_mib.to_string(),
            ])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-monitor")
            .arg(format!(
                "unix:{},server=on,wait=off",
                self.monitor.display()
            ))
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(&self.append);
        if let Some(disk) = &self.disk {
            command.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,cache=unsafe",
                disk.display()
            ));
        }
        command
    }
}

/// How an L1 boot went, as seen from the host.
#[derive(Clone, Debug, Default)]
pub struct BootOutcome {
    pub console: ConsoleSummary,
    /// QEMU's exit status; `None` if it had to be killed.
    pub exit: Option<ExitStatus>,
    pub timed_out: bool,
    /// Why the rig stopped L1 early: the first console line in which L1's
    /// own kernel reported failing (QEMU is stopped [`L1_FAILURE_GRACE`]
    /// later), or L1's console went silent for [`L1_SILENCE_LIMIT`].
    pub l1_failure: Option<String>,
    /// RIG-DONE was printed but L1 did not power off within [`POWEROFF_GRACE`].
    pub poweroff_hung: bool,
    /// Host time from spawning QEMU to the RIG-INIT line.
    pub to_init: Option<Duration>,
    /// Host time from spawning QEMU to the RIG-DONE line.
    pub to_done: Option<Duration>,
    /// Host time from spawning QEMU to its exit.
    pub wall: Duration,
    /// What QEMU itself printed on stderr.
    pub qemu_stderr: String,
}

/// Boots L1 and follows its console until QEMU exits or the deadline
/// passes. `on_line` sees every console line as it arrives.
pub fn boot(spec: &BootSpec, on_line: &mut dyn FnMut(&str)) -> Result<BootOutcome, QemuError> {
    let log_err = |source| QemuError::Log {
        path: spec.console_log.clone(),
        source,
    };
    let mut log = File::create(&spec.console_log).map_err(log_err)?;
    writeln!(log, "# {}", crate::command::render(&spec.command())).map_err(log_err)?;

    let start = Instant::now();
    let mut child = spec
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| QemuError::Spawn(spec.qemu.clone(), e))?;
    let lines = spawn_line_reader(child.stdout.take());
    let stderr = spawn_collector(child.stderr.take());

    let deadline = start + spec.timeout;
    let mut outcome = BootOutcome::default();
    let console = Console {
        lines: &lines,
        log: &mut log,
        path: &spec.console_log,
        start,
    };
    let limits = Limits {
        deadline,
        silence: L1_SILENCE_LIMIT,
        failure_grace: L1_FAILURE_GRACE,
    };
    let follow = follow_console(&mut child, console, limits, &mut outcome, on_line);
    if let (Some(status), None, false) = (outcome.exit, &outcome.l1_failure, outcome.console.done) {
        if outcome.to_init.is_some() {
            outcome.l1_failure = Some(ended_silently(status));
        }
    }
    if (outcome.timed_out || outcome.l1_failure.is_some()) && outcome.exit.is_none() {
        // QEMU still runs a stuck L1: say where its CPUs are.
        let state = monitor_query(&spec.monitor, "info registers -a");
        let _ = writeln!(
            log,
            "# L1 CPU state when it was stopped (QEMU monitor `info registers -a`):\n{state}"
        );
    }
    let _ = std::fs::remove_file(&spec.monitor);
    if follow.is_err() || outcome.exit.is_none() {
        // Timed out, hung at poweroff, or the log failed: never leave QEMU behind.
        let _ = child.kill();
        let _ = child.wait();
    }
    // Drain what QEMU printed before it died.
    for line in lines.try_iter() {
        let _ = writeln!(log, "{line}");
        record(&line, &mut outcome, start, on_line);
    }
    outcome.wall = start.elapsed();
    outcome.qemu_stderr = stderr.join().unwrap_or_default();
    let stderr_text = summarize_stderr(&outcome.qemu_stderr);
    if !stderr_text.is_empty() {
        let _ = writeln!(log, "# qemu stderr:\n{stderr_text}");
    }
    follow?;
    Ok(outcome)
}

/// Why L1 is counted as failed when QEMU exited after /init started but
/// before RIG-DONE, with no failure on L1's console: /init never exits and
/// L1 panics loudly (`panic=-1`), so what is left is a reset of L1 itself
/// (a triple fault of L1's own CPU), which ends QEMU under `-no-reboot`.
fn ended_silently(status: ExitStatus) -> String {
    format!(
        "L1 ended without RIG-DONE and without printing a failure (QEMU exited, {status}): \
         under -no-reboot that is a reset of L1 itself, e.g. a triple fault of its own CPU"
    )
}

/// Sends one command to QEMU's human monitor at `socket` and returns what it
/// printed, or why it could not be asked. Never waits more than a few
/// seconds: QEMU is about to be killed.
fn monitor_query(socket: &Path, command: &str) -> String {
    use std::os::unix::net::UnixStream;
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) => return format!("(monitor {} unreachable: {e})", socket.display()),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1500)));
    if let Err(e) = writeln!(stream, "{command}") {
        return format!("(monitor write failed: {e})");
    }
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    // Read until QEMU has been quiet for a read timeout (or 5 s in all).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    crate::results::strip_escapes(&text.replace('\r', ""))
}

/// The console stream of one boot and where it is logged.
struct Console<'a> {
    lines: &'a Receiver<String>,
    log: &'a mut File,
    path: &'a Path,
    start: Instant,
}

/// When [`follow_console`] gives up on L1.
#[derive(Clone, Copy)]
struct Limits {
    /// The whole run's deadline.
    deadline: Instant,
    /// Console silence after RIG-INIT that means L1 hung.
    silence: Duration,
    /// How long L1 may go on after its kernel reported failing.
    failure_grace: Duration,
}

fn follow_console(
    child: &mut Child,
    console: Console,
    limits: Limits,
    outcome: &mut BootOutcome,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), QemuError> {
    let Console {
        lines,
        log,
        path,
        start,
    } = console;
    let log_err = |source| QemuError::Log {
        path: path.to_path_buf(),
        source,
    };
    let mut deadline = limits.deadline;
    let mut last_line = Instant::now();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                last_line = Instant::now();
                writeln!(log, "{line}").map_err(log_err)?;
                record(&line, outcome, start, on_line);
                if outcome.l1_failure.is_none() {
                    if let Some(failure) = crate::report::l1_kernel_failure(&line) {
                        outcome.l1_failure = Some(format!(
                            "L1's own kernel failed (`{failure}`); stopped {} s later",
                            limits.failure_grace.as_secs()
                        ));
                        deadline = deadline.min(Instant::now() + limits.failure_grace);
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait().map_err(QemuError::Wait)? {
            outcome.exit = Some(status);
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            // After an L1 kernel failure the stop is on purpose, not a timeout.
            outcome.timed_out = outcome.l1_failure.is_none();
            return Ok(());
        }
        if outcome.to_init.is_some()
            && outcome.to_done.is_none()
            && outcome.l1_failure.is_none()
            && now.duration_since(last_line) >= limits.silence
        {
            outcome.l1_failure = Some(format!(
                "L1 hung: no console output for {} s, not even its heartbeat",
                limits.silence.as_secs()
            ));
            return Ok(());
        }
        if let Some(done) = outcome.to_done {
            if now.duration_since(start) > done + POWEROFF_GRACE {
                outcome.poweroff_hung = true;
                return Ok(());
            }
        }
    }
}

fn record(line: &str, outcome: &mut BootOutcome, start: Instant, on_line: &mut dyn FnMut(&str)) {
    on_line(line);
    if let Some(event) = crate::results::parse_line(line) {
        match event {
            Event::Init { .. } if outcome.to_init.is_none() => {
                outcome.to_init = Some(start.elapsed())
            }
            Event::Done if outcome.to_done.is_none() => outcome.to_done = Some(start.elapsed()),
            _ => {}
        }
        outcome.console.record(event);
    }
}

/// Lines of `out` (CR stripped, invalid UTF-8 replaced), over a channel.
fn spawn_line_reader(out: Option<impl Read + Send + 'static>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = out {
        thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                        let line = crate::results::strip_escapes(&line);
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    rx
}

fn spawn_collector(out: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut out) = out {
            let mut bytes = Vec::new();
            let _ = out.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// QEMU's stderr without the warnings that `-cpu EPYC` under TCG always
/// prints (features TCG lacks), which would crowd a failure's log tail.
fn summarize_stderr(stderr: &str) -> String {
    const NOISE: &str = "TCG doesn't support requested feature";
    let noise = stderr.lines().filter(|l| l.contains(NOISE)).count();
    let mut kept: Vec<String> = stderr
        .lines()
        .filter(|l| !l.contains(NOISE) && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if noise > 0 {
        kept.push(format!("({noise} \"{NOISE}\" warnings omitted)"));
    }
    kept.join("\n")
}

/// Whether `qemu` can be started at all.
pub fn available(qemu: &Path) -> bool {
    Command::new(qemu)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first line of `qemu --version` (e.g. `QEMU emulator version 10.0.2
/// (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`), for the report.
pub fn version(qemu: &Path) -> Option<String> {
    let output = Command::new(qemu).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.lines().next()?.trim().to_string())
}

/// The Debian version of `qemu-system-x86` that `scripts/setup.sh` pins
/// (keep the two in step).
pub const PINNED_VERSION: &str = "1:10.0.2+ds-2+deb13u1~bpo12+1";

/// A note for the report when `version` (a `qemu --version` line) is not
/// the pinned build: its results are not comparable with the docs'.
pub fn pin_note(version: &str) -> Option<String> {
    (!version.contains(PINNED_VERSION)).then(|| {
        format!(
            "L1 QEMU is not the pinned qemu-system-x86 {PINNED_VERSION} (scripts/setup.sh installs it): {version}"
        )
    })
}

/// Installs the pinned QEMU with the repository's `scripts/setup.sh` (the
/// rig runs as root on dev and CI machines).
pub fn install(repo: &Path) -> Result<(), crate::command::CommandError> {
    crate::command::run(Command::new("bash").arg(repo.join("scripts/setup.sh"))).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;

    /// The L1 boot of `arch` with `memory_mib`, on placeholder paths.
    fn l1_spec(arch: Arch, memory_mib: u32) -> BootSpec {
        BootSpec {
            qemu: arch.qemu().into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            machine: arch.machine(None),
            accel: L1_ACCEL.into(),
            cpu: arch.cpu().into(),
            memory_mib,
            smp: 2,
            append: arch.cmdline().into(),
            timeout: Duration::from_secs(1),
            console_log: "/l".into(),
            monitor: "/m".into(),
            disk: None,
        }
    }

    #[test]
    fn command_line_matches_the_documented_l1() {
        assert_eq!(
            crate::command::render(&l1_spec(Arch::X86_64, 3072).command()),
            "qemu-system-x86_64 -accel tcg -cpu EPYC,+svm,+npt,-xsave -smp 2 -m 3072 -nographic -no-reboot \
             -nic none -monitor unix:/m,server=on,wait=off -kernel /k -initrd /i -append console=ttyS0 panic=-1 quiet"
        );
    }

    #[test]
    fn aarch64_command_line_selects_the_virt_machine_with_el2() {
        assert_eq!(
            crate::command::render(&l1_spec(Arch::Aarch64, 2048).command()),
            "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -accel tcg -cpu max,pauth-impdef=on \
             -smp 2 -m 2048 -nographic -no-reboot -nic none -monitor unix:/m,server=on,wait=off \
             -kernel /k -initrd /i -append console=ttyAMA0 panic=-1 quiet"
        );
    }

    #[test]
    fn a_qemu_other_than_the_pinned_one_is_noted() {
        let pinned = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)";
        assert_eq!(pin_note(pinned), None);
        let old = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)";
        let note = pin_note(old).expect("noted");
        assert!(
            note.contains("7.2.22") && note.contains(PINNED_VERSION),
            "{note}"
        );
        let setup = include_str!("../../../scripts/setup.sh");
        assert!(
            setup.contains(&format!("QEMU_VERSION='{PINNED_VERSION}'")),
            "scripts/setup.sh pins another QEMU than qemu::PINNED_VERSION"
        );
    }

    #[test]
    fn stderr_summary_drops_tcg_feature_noise() {
        let stderr = "qemu: warning: TCG doesn't support requested feature: CPUID.07H:EBX.rdseed\n\
                      qemu: warning: TCG doesn't support requested feature: x\n\
                      qemu: something real\n";
        assert_eq!(
            summarize_stderr(stderr),
            "qemu: something real\n(2 \"TCG doesn't support requested feature\" warnings omitted)"
        );
        assert_eq!(summarize_stderr(""), "");
    }

    /// Follows the console of `script` run by `sh` (standing in for QEMU)
    /// with short limits.
    fn follow_script(script: &str) -> BootOutcome {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = spawn_line_reader(child.stdout.take());
        let path = std::env::temp_dir().join(format!("rig-follow-{}.log", std::process::id()));
        let mut log = File::create(&path).unwrap();
        let start = Instant::now();
        let mut outcome = BootOutcome::default();
        let console = Console {
            lines: &lines,
            log: &mut log,
            path: &path,
            start,
        };
        let limits = Limits {
            deadline: start + Duration::from_secs(20),
            silence: Duration::from_millis(400),
            failure_grace: Duration::from_millis(400),
        };
        follow_console(&mut child, console, limits, &mut outcome, &mut |_| {}).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
        outcome
    }

    /// `script` must make the rig stop L1 early, for a reason that says
    /// `why`: before the 20 s deadline, so not as a timeout.
    fn assert_stopped_early(script: &str, why: &str) {
        let outcome = follow_script(script);
        let stopped = outcome.l1_failure.expect("L1 stopped early");
        assert!(stopped.contains(why), "{stopped}");
        assert!(!outcome.timed_out);
    }

    #[test]
    fn a_silent_l1_is_stopped_as_hung_long_before_the_deadline() {
        assert_stopped_early("echo 'RIG-INIT uptime=1.0'; exec sleep 30", "L1 hung");
    }

    #[test]
    fn an_l1_kernel_failure_stops_l1_after_the_grace_period() {
        assert_stopped_early(
            "echo 'RIG-INIT uptime=1.0'; \
             while :; do echo '[  284.57] watchdog: BUG: soft lockup - CPU#0 stuck for 27s!'; sleep 0.1; done",
            "BUG: soft lockup",
        );
    }

    #[test]
    fn a_healthy_l1_ends_by_itself() {
        let outcome = follow_script(
            "echo 'RIG-INIT uptime=1.0'; echo 'RIG-HEARTBEAT uptime=2.0'; echo RIG-DONE; exit 0",
        );
        assert_eq!(outcome.l1_failure, None);
        assert!(outcome.exit.is_some_and(|s| s.success()));
    }

    #[test]
    fn an_l1_that_ends_without_rig_done_failed() {
        use std::os::unix::process::ExitStatusExt;
        let why = ended_silently(ExitStatus::from_raw(0));
        assert!(
            why.contains("without RIG-DONE") && why.contains("exit status: 0"),
            "{why}"
        );
    }

    #[test]
    fn reader_splits_lines_and_strips_cr() {
        let rx = spawn_line_reader(Some(&b"one\r\ntwo\r\r\nthree"[..]));
        let lines: Vec<String> = rx.iter().collect();
        assert_eq!(lines, ["one", "two", "three"]);
    }
}
