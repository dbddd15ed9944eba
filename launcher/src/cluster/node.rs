//! A microVM node's process: `mercury run --config <node>/vm.toml`, started
//! in its own session so it outlives the command that started it, its
//! console in `console.log` and the VMM's own messages in `mercury.log`.
//!
//! Why plain processes and not systemd units or a resident agent: the
//! hosts this runs on (edge boxes, the rig's L1, a CI container) do not all
//! run systemd, and a node needs nothing from a supervisor while it runs —
//! restarting a crashed node is the reconciler's job (`up`, `reconcile
//! --watch`), which already knows the spec. Every node is recorded by pid
//! and start time ([`super::state`]), so any later command finds it again.
//!
//! Stopping is graceful first: SIGPWR asks `mercury run` to press the
//! guest's power button (x86_64: ACPI; arm64: a GPIO key; the guest's
//! systemd-logind powers off), then SIGTERM
//! (the VMM stops the VM at once), then SIGKILL.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use vmm_core::{DiskConfig, NetConfig, SerialSink, VmConfig, VsockConfig};

use super::plan::{MachinePlan, NodePlan};
use super::state::{self, NodeFiles, NodeRecord};

/// A node's kernel command line: mercury's default plus the root disk.
pub const NODE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 quiet root=/dev/vda rw";
/// The guest CID every node's vsock device has (each VMM has its own vsock
/// backend, so CIDs do not collide between nodes).
pub const NODE_CID: u64 = 3;
/// How the ready line starts (cloud-init's `final_message`, written by the
/// seed's user-data).
pub const READY_PREFIX: &str = "mercury-ready ";

/// The VM configuration a microVM node runs with.
pub fn vm_config(node: &NodePlan, files: &NodeFiles) -> Option<VmConfig> {
    let MachinePlan::Microvm {
        vcpus,
        memory_mib,
        kernel,
        tap,
        disk,
        seed,
        ..
    } = &node.machine
    else {
        return None;
    };
    let mut config = VmConfig::new(kernel.clone());
    config.vcpus = u8::try_from(*vcpus).unwrap_or(u8::MAX);
    config.memory_mib = *memory_mib;
    config.cmdline = NODE_CMDLINE.to_string();
    config.serial = SerialSink::File(files.console());
    config.disks = vec![
        DiskConfig {
            path: disk.clone(),
            read_only: false,
            id: Some("root".to_string()),
        },
        DiskConfig {
            path: seed.clone(),
            read_only: true,
            id: Some("cidata".to_string()),
        },
    ];
    config.nets = vec![NetConfig {
        tap: tap.clone(),
        mac: node.mac.clone(),
    }];
    config.vsock = Some(VsockConfig {
        cid: NODE_CID,
        uds: files.vsock(),
    });
    config.rng = true;
    Some(config)
}

/// A started node process.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub pid: i32,
    pub pid_start: u64,
    pub started_at: f64,
}

/// Writes `vm.toml` and starts `mercury run` on it in a new session. The
/// previous console log, if any, is kept as `console.log.1`.
pub fn start(config: &VmConfig, files: &NodeFiles) -> io::Result<Started> {
    let toml = toml::to_string(config).map_err(io::Error::other)?;
    state::write_atomic(&files.vm_config(), toml.as_bytes())?;
    let console = files.console();
    if console.exists() {
        fs::rename(&console, console.with_extension("log.1"))?;
    }
    let _ = fs::remove_file(files.vsock());
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(files.vmm_log())?;
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    if std::env::var_os("MERCURY_LOG").is_none() {
        // The UART's registers at exit, for a console that went quiet.
        command.env("MERCURY_LOG", "info,devices::legacy::serial=debug");
    }
    command
        .arg("run")
        .arg("--config")
        .arg(files.vm_config())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
    let started_at = unix_now();
    // The child is not waited for: it outlives this command. Until this
    // command exits it stays our child, so a node that dies meanwhile is a
    // zombie, which `process_start_time` already counts as gone.
    drop(child);
    let pid_start = state::process_start_time(pid)
        .ok_or_else(|| io::Error::other(format!("mercury run (pid {pid}) exited at once")))?;
    Ok(Started {
        pid,
        pid_start,
        started_at,
    })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How a node stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// The guest powered off after the power button.
    PoweredOff,
    /// It needed SIGTERM.
    Terminated,
    /// It needed SIGKILL.
    Killed,
}

/// Stops a node: power button, then SIGTERM after `grace`, then SIGKILL
/// after 10 s more.
pub fn stop(record: &NodeRecord, grace: Duration) -> io::Result<Stopped> {
    let (Some(pid), true) = (record.pid, state::process_alive(record)) else {
        return Ok(Stopped::NotRunning);
    };
    for (signal, wait, outcome) in [
        (libc::SIGPWR, grace, Stopped::PoweredOff),
        (libc::SIGTERM, Duration::from_secs(10), Stopped::Terminated),
        (libc::SIGKILL, Duration::from_secs(10), Stopped::Killed),
    ] {
        // SAFETY: kill with a pid checked just before (same start time).
        if unsafe { libc::kill(pid, signal) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                return Ok(outcome);
            }
            return Err(err);
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !state::process_alive(record) {
                return Ok(outcome);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(io::Error::other(format!(
        "mercury run (pid {pid}) survived SIGKILL"
    )))
}

/// A ready line read off a node's console.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    /// The guest's uptime in the line, seconds.
    pub uptime: Option<f64>,
}

/// Looks for the node's ready line — `mercury-ready node=<name>
/// instance-id=<id> uptime=<s>` — in its console log. Only a line naming
/// this node and this seed's instance-id counts.
pub fn find_ready(console: &PathBuf, node: &str, instance_id: &str) -> io::Result<Option<Ready>> {
    let file = match File::open(console) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        let line = String::from_utf8_lossy(&line);
        if let Some(ready) = parse_ready(&line, node, instance_id) {
            return Ok(Some(ready));
        }
    }
    Ok(None)
}

fn parse_ready(line: &str, node: &str, instance_id: &str) -> Option<Ready> {
    let start = line.find(READY_PREFIX)?;
    let mut name = None;
    let mut id = None;
    let mut uptime = None;
    for field in line[start + READY_PREFIX.len()..].split_whitespace() {
        match field.split_once('=') {
            Some(("node", v)) => name = Some(v),
            Some(("instance-id", v)) => id = Some(v),
            Some(("uptime", v)) => uptime = v.parse().ok(),
            _ => {}
        }
    }
    (name == Some(node) && id == Some(instance_id)).then_some(Ready { uptime })
}

/// The last `lines` lines of a log, for error messages.
pub fn tail(path: &PathBuf, lines: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {}", l.trim_end_matches('\r')))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_must_name_the_node_and_its_instance() {
        let line = "[   41.2] cloud-init[400]: mercury-ready node=edge1-cp-0 instance-id=edge1-cp-0-1a2b uptime=41.20\r";
        assert_eq!(
            parse_ready(line, "edge1-cp-0", "edge1-cp-0-1a2b"),
            Some(Ready { uptime: Some(41.2) })
        );
        assert_eq!(parse_ready(line, "edge1-cp-1", "edge1-cp-0-1a2b"), None);
        assert_eq!(parse_ready(line, "edge1-cp-0", "edge1-cp-0-ffff"), None);
        assert_eq!(
            parse_ready("mercury-ready node=edge1-cp-0", "edge1-cp-0", "x"),
            None
        );
    }

    #[test]
    fn a_stopped_process_is_reported_by_how_it_went() {
        // `sleep` dies of SIGPWR's default action: the first step suffices.
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let record = NodeRecord {
            name: "n".into(),
            role: super::super::nodes::Role::Worker,
            pool: "p".into(),
            kind: state::NodeKind::Microvm,
            machine: None,
            ip: "10.0.0.2".parse().unwrap(),
            mac: None,
            tap: None,
            instance_id: "n-1".into(),
            pid: Some(pid),
            pid_start: state::process_start_time(pid),
            started_at: None,
            ready_after: None,
            guest_uptime_at_ready: None,
        };
        assert_eq!(
            stop(&record, Duration::from_secs(5)).unwrap(),
            Stopped::PoweredOff
        );
        assert!(!state::process_alive(&record));
        assert_eq!(
            stop(&record, Duration::from_secs(5)).unwrap(),
            Stopped::NotRunning
        );
        drop(child);
    }
}
