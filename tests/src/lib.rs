//! Shared helpers for the integration tests: guest images, running a guest
//! on real KVM, and reading what the guest reported over its serial port.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_core::{SerialSink, Vm, VmConfig, VmExit};

pub mod netns;

/// Longest a test guest may run before a test gives up on it. Generous: the
/// test guest's kernel-mode code is interpreted on some hosts.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds (if needed) a guest image with `guest-images/build <name>` and
/// returns its path. Panics with the build's stderr if it fails.
pub fn guest_image(name: &str) -> PathBuf {
    static CACHE: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // Hold the lock while building so parallel tests don't build twice.
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache.get(name) {
        return p.clone();
    }
    let out = Command::new(repo_root().join("guest-images/build"))
        .arg(name)
        .output()
        .expect("run guest-images/build");
    assert!(
        out.status.success(),
        "guest-images/build {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        path.is_file(),
        "guest-images/build {name} printed {path:?}, not a file"
    );
    cache.insert(name.to_string(), path.clone());
    path
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mercury-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a guest run produced.
#[derive(Debug)]
pub struct GuestRun {
    /// Why the VM ended.
    pub exit: VmExit,
    /// Everything the guest wrote to its serial console.
    pub serial: String,
    /// Boot-timer value, if the guest wrote it.
    pub boot_time: Option<Duration>,
}

impl GuestRun {
    /// The `CHECK <name> PASS|FAIL <detail>` lines, by check name:
    /// (passed, detail).
    pub fn checks(&self) -> BTreeMap<String, (bool, String)> {
        parse_checks(&self.serial)
    }

    /// Asserts check `name` passed and returns its detail.
    pub fn passed(&self, name: &str) -> String {
        match self.checks().get(name) {
            Some((true, detail)) => detail.clone(),
            Some((false, detail)) => {
                panic!("check {name} failed: {detail}\nserial:\n{}", self.serial)
            }
            None => panic!("check {name} not reported\nserial:\n{}", self.serial),
        }
    }
}

/// Parses `CHECK <name> PASS|FAIL <detail>` lines.
pub fn parse_checks(serial: &str) -> BTreeMap<String, (bool, String)> {
    serial
        .lines()
        .filter_map(|line| {
            let rest = line.trim_end_matches('\r').strip_prefix("CHECK ")?;
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next()?.to_string();
            let passed = match parts.next()? {
                "PASS" => true,
                "FAIL" => false,
                _ => return None,
            };
            Some((name, (passed, parts.next().unwrap_or("").to_string())))
        })
        .collect()
}

/// Finds `key=value` in a check's detail.
pub fn detail_value<'a>(detail: &'a str, key: &str) -> Option<&'a str> {
    detail
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// What `serial` holds after the first line starting with `line_start`
/// (`None` if there is no such line). For guests that end the VM right
/// after a line: anything here was printed while the VM should have been
/// gone.
pub fn output_after<'a>(serial: &'a str, line_start: &str) -> Option<&'a str> {
    let mut offset = 0;
    for line in serial.split_inclusive('\n') {
        offset += line.len();
        if line.starts_with(line_start) {
            return Some(&serial[offset..]);
        }
    }
    None
}

/// How many `HEARTBEAT` lines the test guest (`checks=heartbeat`) has
/// printed to the serial file `path` so far.
pub fn heartbeats(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("HEARTBEAT"))
        .count()
}

/// A config for `kernel` whose serial output goes to a file in `dir`.
pub fn config_with_serial_file(kernel: &Path, dir: &TempDir) -> VmConfig {
    let mut config = VmConfig::new(kernel);
    config.serial = SerialSink::File(dir.path().join("serial.log"));
    config
}

/// Boots `config` (its serial must go to a file), waits for the exit within
/// [`GUEST_TIMEOUT`], and collects the serial output.
pub fn run_guest(config: VmConfig) -> GuestRun {
    let SerialSink::File(serial_path) = config.serial.clone() else {
        panic!("run_guest needs a serial file sink");
    };
    let mut vm = Vm::new(config).expect("build VM");
    vm.start().expect("start VM");
    let exit = match vm.wait_timeout(GUEST_TIMEOUT) {
        Some(exit) => exit,
        None => {
            vm.stop();
            let serial = std::fs::read_to_string(&serial_path).unwrap_or_default();
            panic!("guest did not exit within {GUEST_TIMEOUT:?}\nserial:\n{serial}");
        }
    };
    GuestRun {
        exit,
        serial: std::fs::read_to_string(&serial_path).unwrap_or_default(),
        boot_time: vm.boot_time(),
    }
}

/// Longest a child process (a `mercury` run) may take before a test kills
/// it and fails. Generous for the same reason as [`GUEST_TIMEOUT`].
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `command` to completion with stdin closed and its output captured,
/// like [`Command::output`], but kills it and panics, with what it printed,
/// if it runs longer than `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    wait_within(child, limit, &format!("{command:?}"))
}

/// Waits for `child` (its stdout and stderr piped, or already taken) and
/// collects its output; kills it and panics with that output if it has not
/// exited within `limit`.
pub fn wait_within(mut child: Child, limit: Duration, what: &str) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => break None,
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} did not exit within {limit:?}; killed.\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
            String::from_utf8_lossy(&stderr.join().unwrap_or_default()),
        );
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_check_lines() {
        let checks = parse_checks(
            "noise\nCHECK smp PASS cpus=4 expected=4\r\nCHECK x FAIL why\nCHECK bad MAYBE\n",
        );
        assert_eq!(checks.len(), 2);
        assert_eq!(checks["smp"], (true, "cpus=4 expected=4".to_string()));
        assert_eq!(checks["x"], (false, "why".to_string()));
        assert_eq!(detail_value("cpus=4 expected=4", "expected"), Some("4"));
        assert_eq!(detail_value("cpus=4", "cpu"), None);
    }

    #[test]
    fn a_child_that_outlives_its_limit_is_killed_and_reported() {
        let out = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 7"]),
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        let started = Instant::now();
        let hung = std::panic::catch_unwind(|| {
            output_within(
                Command::new("sh").args(["-c", "echo before-hang; exec sleep 600"]),
                Duration::from_millis(300),
            )
        });
        let message = *hung
            .expect_err("a hung child must fail the test")
            .downcast::<String>()
            .unwrap();
        assert!(message.contains("did not exit within"), "{message}");
        assert!(message.contains("before-hang"), "{message}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child was not killed"
        );
    }

    #[test]
    fn output_after_a_line() {
        let serial = "START\nCHECK x PASS a\nmore\n";
        assert_eq!(output_after(serial, "CHECK x PASS"), Some("more\n"));
        assert_eq!(output_after(serial, "more"), Some(""));
        assert_eq!(output_after("CHECK x PASS", "CHECK x"), Some(""));
        assert_eq!(output_after(serial, "ASS a"), None);
        assert_eq!(output_after(serial, "CHECK y"), None);
    }
}
