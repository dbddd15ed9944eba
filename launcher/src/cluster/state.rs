//! The state directory: what `up` made on this host, so `plan`, `status`,
//! `up` again and `down` see it.
//!
//! ```text
//! <state_dir>/<cluster>/
//!     lock               flock(2)ed by the command working on the cluster
//!     cluster.json       the bridge, and whether mercury created it / its address
//!     secrets/           bootstrap token, certificate key, cluster CA
//!     bundles/<machine>/ join bundles for bare-metal workers
//!     <node>/
//!         node.json      the node's record (below)
//!         vm.toml        the `mercury run --config` the node runs with
//!         root.img       its copy-on-write root disk
//!         seed.img       its cloud-init NoCloud seed
//!         console.log    its serial console
//!         mercury.log    the VMM's own messages
//! ```
//!
//! Every file is written to a temporary name and renamed into place, so a
//! record is either the old one or the new one. A node's process is known by
//! its pid *and* its start time (field 22 of `/proc/<pid>/stat`), so a pid
//! reused by another process after a crash is not taken for the node.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::nodes::Role;
use super::plan::{NodeState, Observed, ObservedNode};
use super::spec::MachineTemplate;

/// A state-directory operation that failed, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a mercury record: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "cluster {cluster} is busy: another mercury command ({holder}) holds {path}; \
         wait for it to finish"
    )]
    Busy {
        cluster: String,
        holder: String,
        path: PathBuf,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One cluster's directory.
#[derive(Debug, Clone)]
pub struct ClusterDir {
    pub state_dir: PathBuf,
    pub root: PathBuf,
    pub name: String,
}

/// What mercury did to the host's network for a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRecord {
    pub name: String,
    pub bridge: Option<BridgeRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BridgeRecord {
    pub name: String,
    /// mercury created the bridge (so `down` deletes it).
    pub created: bool,
    /// The gateway address mercury added to it (so `down` removes it from a
    /// bridge that was there before); `None` when it was already there.
    pub added_address: Option<Ipv4Net>,
}

/// The kind of machine a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Microvm,
    Baremetal,
}

/// One node's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRecord {
    pub name: String,
    pub role: Role,
    pub pool: String,
    pub kind: NodeKind,
    /// A microVM's size and images.
    pub machine: Option<MachineTemplate>,
    pub ip: Ipv4Addr,
    pub mac: Option<String>,
    /// The TAP mercury created for it.
    pub tap: Option<String>,
    /// cloud-init's instance-id in the node's seed; its ready line names it.
    pub instance_id: String,
    /// The `mercury run` process.
    pub pid: Option<i32>,
    /// Its start time in clock ticks since host boot (`/proc/<pid>/stat`).
    pub pid_start: Option<u64>,
    /// When it was started, seconds since the Unix epoch.
    pub started_at: Option<f64>,
    /// Seconds from start to its ready line, as `up` saw it.
    pub ready_after: Option<f64>,
    /// The guest's uptime in its ready line, seconds.
    pub guest_uptime_at_ready: Option<f64>,
}

/// A node's files, by the layout above.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub dir: PathBuf,
}

impl NodeFiles {
    pub fn record(&self) -> PathBuf {
        self.dir.join("node.json")
    }
    pub fn vm_config(&self) -> PathBuf {
        self.dir.join("vm.toml")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("mercury.log")
    }
    pub fn vsock(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }
}

/// Holds a cluster's lock until dropped.
#[derive(Debug)]
pub struct ClusterLock {
    _file: File,
}

impl ClusterDir {
    pub fn new(state_dir: &Path, cluster: &str) -> Self {
        ClusterDir {
            state_dir: state_dir.to_path_buf(),
            root: state_dir.join(cluster),
            name: cluster.to_string(),
        }
    }

    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    pub fn node(&self, node: &str) -> NodeFiles {
        NodeFiles {
            dir: self.root.join(node),
        }
    }

    pub fn secrets_dir(&self) -> PathBuf {
        super::secrets::secrets_dir(&self.state_dir, &self.name)
    }

    /// A bare-metal machine's join bundle ([`super::bundle`]).
    pub fn bundle(&self, machine: &str) -> PathBuf {
        super::bundle::bundle_dir(&self.state_dir, &self.name, machine)
    }

    fn cluster_record(&self) -> PathBuf {
        self.root.join("cluster.json")
    }

    /// Creates the directory (mode 0700: it holds secrets) and takes its
    /// lock without waiting: a second command on the same cluster is
    /// refused, naming the one holding it.
    pub fn lock(&self) -> Result<ClusterLock, StateError> {
        if !self.state_dir.exists() {
            // Made here, so `down` of the last cluster may remove it again.
            create_private_dir(&self.state_dir)?;
            let marker = self.state_dir.join(MADE_BY_MERCURY);
            File::create(&marker).map_err(io_at(&marker))?;
        }
        create_private_dir(&self.root)?;
        let path = self.root.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_at(&path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(StateError::Busy {
                    cluster: self.name.clone(),
                    holder: if holder.is_empty() {
                        "unknown process".to_string()
                    } else {
                        holder.to_string()
                    },
                    path,
                });
            }
            return Err(StateError::Io { path, source: err });
        }
        file.set_len(0).map_err(io_at(&path))?;
        let args: Vec<String> = std::env::args().collect();
        writeln!(file, "pid {}: {}", std::process::id(), args.join(" ")).map_err(io_at(&path))?;
        Ok(ClusterLock { _file: file })
    }

    pub fn load_cluster(&self) -> Result<ClusterRecord, StateError> {
        let path = self.cluster_record();
        match read_json(&path)? {
            Some(record) => Ok(record),
            None => Ok(ClusterRecord {
                name: self.name.clone(),
                bridge: None,
            }),
        }
    }

    pub fn save_cluster(&self, record: &ClusterRecord) -> Result<(), StateError> {
        write_json(&self.cluster_record(), record)
    }

    /// Every node recorded, by name.
    pub fn load_nodes(&self) -> Result<Vec<NodeRecord>, StateError> {
        let mut nodes = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(nodes),
            Err(e) => return Err(io_at(&self.root)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_at(&self.root))?;
            if !entry.file_type().map_err(io_at(&entry.path()))?.is_dir() {
                continue;
            }
            let record = entry.path().join("node.json");
            if let Some(node) = read_json::<NodeRecord>(&record)? {
                nodes.push(node);
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    pub fn save_node(&self, node: &NodeRecord) -> Result<(), StateError> {
        let files = self.node(&node.name);
        create_private_dir(&files.dir)?;
        write_json(&files.record(), node)
    }

    /// Removes a node's directory and everything in it.
    pub fn remove_node(&self, node: &str) -> Result<(), StateError> {
        let dir = self.node(node).dir;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(&dir)(e)),
        }
    }

    /// Removes the cluster's directory (after `down` removed the rest), and
    /// the state directory too when `lock` made it and nothing else is left
    /// in it (another cluster, the GitOps cache).
    pub fn remove_all(&self) -> Result<(), StateError> {
        match fs::remove_dir_all(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&self.root)(e)),
        }
        let marker = self.state_dir.join(MADE_BY_MERCURY);
        let only_marker = fs::read_dir(&self.state_dir)
            .map(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<Vec<_>, _>>()
                    .is_ok_and(|names| names == [MADE_BY_MERCURY])
            })
            .unwrap_or(false);
        if only_marker {
            fs::remove_file(&marker).map_err(io_at(&marker))?;
            // Another cluster's `up` may have just made its directory here.
            let _ = fs::remove_dir(&self.state_dir);
        }
        Ok(())
    }
}

/// What the planner needs from the records: each node with whether its
/// process is still the one recorded.
pub fn observed(records: &[NodeRecord]) -> Observed {
    Observed {
        nodes: records
            .iter()
            .map(|r| ObservedNode {
                name: r.name.clone(),
                role: r.role,
                machine: r.machine.clone(),
                ip: r.ip,
                mac: r.mac.as_deref().and_then(|m| vmm_core::parse_mac(m).ok()),
                state: match r.kind {
                    NodeKind::Baremetal => NodeState::Running,
                    NodeKind::Microvm if process_alive(r) => NodeState::Running,
                    NodeKind::Microvm => NodeState::Crashed,
                },
            })
            .collect(),
    }
}

/// The recorded process still runs (same pid, same start time).
pub fn process_alive(record: &NodeRecord) -> bool {
    match (record.pid, record.pid_start) {
        (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
        _ => false,
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks), or `None`
/// when there is no such process or it is a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 is the state; a zombie has exited.
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// In a state directory `up` made: `down` of its last cluster removes it.
const MADE_BY_MERCURY: &str = ".made-by-mercury";

fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt as _;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(io_at(dir)(e)),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    text.push(b'\n');
    write_atomic(path, &text).map_err(io_at(path))
}

/// Writes `bytes` to `path` through [`replace_file`], mode 0644.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file(path, 0o644, |f| f.write_all(bytes))
}

/// Replaces `path` whole or not at all: `fill` writes a new file of `mode`
/// (a unique name beside `path`, so concurrent writers and the leftovers of
/// a crash never collide), which is synced and renamed over `path`, and the
/// directory is synced. On failure the temporary file is removed and `path`
/// is as it was.
pub fn replace_file(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(".{}.{}", name.to_string_lossy(), temp_suffix()));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open is masked by the umask; set it outright.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        fill(&mut file)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A suffix for temporary names that no other process (or earlier run)
/// uses: the pid and 48 random bits.
pub(crate) fn temp_suffix() -> String {
    let mut r = [0u8; 6];
    // Without randomness the pid alone still tells processes apart.
    let _ = getrandom::getrandom(&mut r);
    format!("tmp-{}-{}", std::process::id(), super::secrets::hex(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.to_string(),
            role: Role::Worker,
            pool: "general".to_string(),
            kind: NodeKind::Microvm,
            machine: None,
            ip: Ipv4Addr::new(10, 42, 0, 3),
            mac: Some("02:00:00:00:00:01".to_string()),
            tap: Some("m000000000000-0".to_string()),
            instance_id: format!("{name}-1"),
            pid: None,
            pid_start: None,
            started_at: None,
            ready_after: None,
            guest_uptime_at_ready: None,
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mercury-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn replace_file_is_whole_or_nothing_and_sets_the_mode() {
        let dir = temp_dir("replace");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seed.img");
        replace_file(&path, 0o600, |f| f.write_all(b"first")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = replace_file(&path, 0o600, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["seed.img"], "a temporary file was left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_round_trip_and_list_sorted() {
        let dir = temp_dir("round-trip");
        let cluster = ClusterDir::new(&dir, "edge1");
        let _lock = cluster.lock().unwrap();
        cluster.save_node(&record("edge1-general-1")).unwrap();
        cluster.save_node(&record("edge1-general-0")).unwrap();
        let nodes = cluster.load_nodes().unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["edge1-general-0", "edge1-general-1"]);
        assert_eq!(nodes[1], record("edge1-general-1"));
        cluster.remove_node("edge1-general-0").unwrap();
        cluster.remove_node("edge1-general-0").unwrap();
        assert_eq!(cluster.load_nodes().unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_state_directory_goes_with_its_last_cluster_only_if_mercury_made_it() {
        let made = temp_dir("made");
        let (a, b) = (ClusterDir::new(&made, "a"), ClusterDir::new(&made, "b"));
        drop(a.lock().unwrap());
        drop(b.lock().unwrap());
        a.remove_all().unwrap();
        assert!(made.exists(), "cluster b is still there");
        b.remove_all().unwrap();
        assert!(!made.exists(), "made by lock, left empty: removed");

        let given = temp_dir("given");
        fs::create_dir_all(&given).unwrap();
        let c = ClusterDir::new(&given, "c");
        drop(c.lock().unwrap());
        c.remove_all().unwrap();
        assert!(given.exists(), "a state directory that existed stays");
        fs::remove_dir_all(&given).unwrap();
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let dir = temp_dir("lock");
        let cluster = ClusterDir::new(&dir, "edge1");
        let held = cluster.lock().unwrap();
        let err = cluster.lock().unwrap_err().to_string();
        assert!(err.contains("cluster edge1 is busy"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        // A flock belongs to the open file, which a child another test is
        // spawning shares between its fork and exec (CLOEXEC closes it
        // only then): wait out such a moment, never a held lock.
        let mut again = cluster.lock();
        for _ in 0..200 {
            if again.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            again = cluster.lock();
        }
        again.expect("free again once dropped");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_is_named() {
        let dir = temp_dir("corrupt");
        let cluster = ClusterDir::new(&dir, "edge1");
        cluster.save_node(&record("edge1-cp-0")).unwrap();
        let path = cluster.node("edge1-cp-0").record();
        fs::write(&path, b"{ not json").unwrap();
        let err = cluster.load_nodes().unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_live_process_is_known_by_pid_and_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = process_start_time(pid).expect("a running child has a start time");
        let mut r = record("edge1-cp-0");
        r.pid = Some(pid);
        r.pid_start = Some(start);
        assert!(process_alive(&r));
        assert_eq!(observed(&[r.clone()]).nodes[0].state, NodeState::Running);
        r.pid_start = Some(start + 1);
        assert!(!process_alive(&r), "a reused pid is not the node");
        r.pid_start = Some(start);
        child.kill().unwrap();
        // A zombie (killed, not yet reaped) is not alive either.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(&r) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            !process_alive(&r),
            "killed child {pid} still counts as alive"
        );
        child.wait().unwrap();
        assert_eq!(observed(&[r]).nodes[0].state, NodeState::Crashed);
    }
}
