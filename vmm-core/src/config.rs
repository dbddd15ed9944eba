//! The VM configuration: plain serde data, validated before anything is built.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device_config::{self, DiskConfig, NetConfig, VsockConfig};

/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u8 = 32;
/// Least guest memory we accept, in MiB. The kernel and initrd must also fit;
/// that is checked when they are loaded.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Most guest memory we accept, in MiB (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// The command line used when none is given: serial console, reboot through
/// the i8042 controller, reboot one second after a panic, and `quiet`: only
/// kernel warnings and errors on the console, because every console byte
/// costs two VM exits (in the L1 rig `quiet` cut boot time ×0.46,
/// docs/BENCHMARKS.md).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 quiet";

/// Where the guest's serial console (COM1) output goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum SerialSink {
    /// The VMM process's standard output.
    #[default]
    Stdout,
    /// Discarded.
    None,
    /// Appended to a file, created if missing.
    File(PathBuf),
}

impl From<String> for SerialSink {
    fn from(s: String) -> Self {
        match s.as_str() {
            "stdout" => SerialSink::Stdout,
            "none" => SerialSink::None,
            _ => SerialSink::File(PathBuf::from(s)),
        }
    }
}

impl From<SerialSink> for String {
    fn from(s: SerialSink) -> Self {
        s.to_string()
    }
}

impl fmt::Display for SerialSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialSink::Stdout => write!(f, "stdout"),
            SerialSink::None => write!(f, "none"),
            SerialSink::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Everything needed to build a VM.
///
/// Construct with [`VmConfig::new`] (or deserialize) and adjust the public
/// fields; [`VmConfig::validate`] runs before a VM is built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VmConfig {
    /// Number of vCPUs, 1..=[`MAX_VCPUS`].
    #[serde(default = "default_vcpus", deserialize_with = "deserialize_vcpus")]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Kernel image: ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Optional initial ramdisk.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Where serial console output goes.
    #[serde(default)]
    pub serial: SerialSink,
    /// Feed the VMM's standard input to the guest's serial console.
    #[serde(default)]
    pub serial_stdin: bool,
    /// virtio-blk disks, in guest order (`/dev/vda` first).
    #[serde(default, rename = "disk")]
    pub disks: Vec<DiskConfig>,
    /// virtio-net interfaces, in guest order (`eth0` first).
    #[serde(default, rename = "net")]
    pub nets: Vec<NetConfig>,
    /// A virtio-vsock device.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// A virtio-rng entropy device.
    #[serde(default)]
    pub rng: bool,
}

fn default_vcpus() -> u8 {
    1
}

/// The vCPU count from any integer, with [`check_vcpus`]'s message (serde's
/// own for a `u8` would say "expected u8").
fn deserialize_vcpus<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    let count = i64::deserialize(deserializer)?;
    check_vcpus(count).map_err(serde::de::Error::custom)
}

/// A vCPU count as given by a user (CLI flag, config file), checked against
/// 1..=[`MAX_VCPUS`]: the one place this range is enforced.
pub fn check_vcpus(count: i64) -> Result<u8, ConfigError> {
    u8::try_from(count)
        .ok()
        .filter(|n| (1..=MAX_VCPUS).contains(n))
        .ok_or(ConfigError::VcpusOutOfRange(count))
}

fn default_memory_mib() -> u64 {
    128
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// A disk serial number longer than virtio-blk's 20 bytes.
    #[error("disk {path}: id `{id}` is longer than 20 bytes")]
    DiskIdTooLong {
        /// The disk.
        path: PathBuf,
        /// The id given.
        id: String,
    },
    /// The same image file given as two disks.
    #[error("disk {0} is given twice")]
    DuplicateDisk(PathBuf),
    /// Two network interfaces on one TAP.
    #[error("TAP {0} is given for two network interfaces")]
    DuplicateTap(String),
    /// A file could not be opened for reading.
    #[error("cannot read {what} {path}: {source}")]
    FileUnreadable {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path is a directory or another non-file.
    #[error("{what} {path} is not a regular file")]
    NotAFile {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// A MAC address that is malformed, multicast or zero.
    #[error("invalid MAC address `{0}` (want a unicast aa:bb:cc:dd:ee:ff)")]
    Mac(String),
    /// A TAP name Linux would not accept.
    #[error("invalid TAP name `{0}` (1..=15 printable ASCII characters, no `/`, `:` or `%`, not `.` or `..`)")]
    TapName(String),
    /// A vsock CID out of range.
    #[error("vsock cid {0} is out of range (3..={max})", max = device_config::MAX_GUEST_CID)]
    VsockCid(u64),
    /// The vsock socket's directory does not exist.
    #[error("vsock socket {0}: its directory does not exist")]
    VsockDir(PathBuf),
    /// Memory size out of range.
    #[error("memory {0} MiB is out of range ({MIN_MEMORY_MIB}..={MAX_MEMORY_MIB} MiB)")]
    MemoryOutOfRange(u64),
    /// vCPU count out of range.
    #[error("vcpus {0} is out of range (1..={MAX_VCPUS})")]
    VcpusOutOfRange(i64),
}

impl VmConfig {
    /// A configuration with defaults: 1 vCPU, 128 MiB, [`DEFAULT_CMDLINE`],
    /// serial to stdout.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            vcpus: default_vcpus(),
            memory_mib: default_memory_mib(),
            kernel: kernel.into(),
            initrd: None,
            cmdline: default_cmdline(),
            serial: SerialSink::default(),
            serial_stdin: false,
            disks: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            rng: false,
        }
    }

    /// Checks every value that can be checked without building the VM.
    /// Whether kernel and initrd fit in memory is checked when loading them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_vcpus(self.vcpus.into())?;
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::MemoryOutOfRange(self.memory_mib));
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        check_readable_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_readable_file("initrd", initrd)?;
        }
        device_config::validate_devices(&self.disks, &self.nets, self.vsock.as_ref())
    }
}

pub(crate) fn check_readable_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    let file = std::fs::File::open(path).map_err(|source| ConfigError::FileUnreadable {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file
        .metadata()
        .map_err(|source| ConfigError::FileUnreadable {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_kernel() -> (vmm_sys_util::tempfile::TempFile, VmConfig) {
        let f = vmm_sys_util::tempfile::TempFile::new().unwrap();
        let cfg = VmConfig::new(f.as_path());
        (f, cfg)
    }

    #[test]
    fn defaults_validate() {
        let (_f, cfg) = with_kernel();
        cfg.validate().unwrap();
        assert_eq!(cfg.vcpus, 1);
        assert_eq!(cfg.memory_mib, 128);
        assert_eq!(cfg.cmdline, DEFAULT_CMDLINE);
    }

    #[test]
    fn vcpus_out_of_range() {
        let (_f, mut cfg) = with_kernel();
        for bad in [0, MAX_VCPUS + 1] {
            cfg.vcpus = bad;
            let e = cfg.validate().unwrap_err();
            assert!(matches!(e, ConfigError::VcpusOutOfRange(v) if v == i64::from(bad)));
            assert!(e.to_string().contains(&bad.to_string()));
        }
        cfg.vcpus = MAX_VCPUS;
        cfg.validate().unwrap();
    }

    #[test]
    fn memory_out_of_range() {
        let (_f, mut cfg) = with_kernel();
        cfg.memory_mib = MIN_MEMORY_MIB - 1;
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::MemoryOutOfRange(15))
        ));
    }

    #[test]
    fn missing_and_non_file_kernel() {
        let cfg = VmConfig::new("/nonexistent/vmlinux");
        let e = cfg.validate().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
        let cfg = VmConfig::new("/");
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::NotAFile { what: "kernel", .. })
        ));
    }

    #[test]
    fn missing_initrd_named() {
        let (_f, mut cfg) = with_kernel();
        cfg.initrd = Some("/nonexistent/initrd".into());
        let e = cfg.validate().unwrap_err();
        assert!(matches!(
            e,
            ConfigError::FileUnreadable { what: "initrd", .. }
        ));
    }

    #[test]
    fn serial_sink_strings() {
        assert_eq!(SerialSink::from("stdout".to_string()), SerialSink::Stdout);
        assert_eq!(SerialSink::from("none".to_string()), SerialSink::None);
        assert_eq!(
            SerialSink::from("/tmp/x".to_string()),
            SerialSink::File("/tmp/x".into())
        );
        assert_eq!(String::from(SerialSink::File("/a/b".into())), "/a/b");
    }
}
