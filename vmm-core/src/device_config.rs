//! The virtio devices of a [`VmConfig`](crate::VmConfig): disks, network
//! interfaces, vsock and the entropy device. Plain serde data, validated
//! with the rest of the configuration before anything is built.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

pub use devices::virtio::vsock::{MAX_GUEST_CID, MIN_GUEST_CID};

/// Longest network interface name Linux accepts (IFNAMSIZ less the NUL).
pub const MAX_TAP_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// A virtio-blk disk backed by a raw image file. The first disk is the
/// guest's `/dev/vda`, the second `/dev/vdb`, and so on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The raw image file; its size must be a multiple of 512 bytes.
    pub path: PathBuf,
    /// Open the file read-only and offer the disk read-only.
    #[serde(default)]
    pub read_only: bool,
    /// The serial number the guest reads (`VIRTIO_BLK_T_GET_ID`, at most 20
    /// bytes); derived from the file when absent.
    #[serde(default)]
    pub id: Option<String>,
}

/// A virtio-net interface backed by a host TAP device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The TAP's name; created (and removed when the VM ends) if absent.
    pub tap: String,
    /// The guest's MAC address (`52:54:00:12:34:56`); derived from the TAP
    /// name when absent.
    #[serde(default)]
    pub mac: Option<String>,
}

/// A virtio-vsock device whose host side is a Unix socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context id, [`MIN_GUEST_CID`]..=[`MAX_GUEST_CID`].
    pub cid: u64,
    /// The Unix socket the VMM listens on; guest connections to host port
    /// P go to `<uds>_P`.
    pub uds: PathBuf,
}

/// Checks the device part of a configuration: files that must exist, names
/// that must be unique, values in range.
pub(crate) fn validate_devices(
    disks: &[DiskConfig],
    nets: &[NetConfig],
    vsock: Option<&VsockConfig>,
) -> Result<(), ConfigError> {
    let mut seen_disks = BTreeSet::new();
    for disk in disks {
        crate::config::check_readable_file("disk", &disk.path)?;
        // The same file under two names is the same disk.
        let canonical = disk
            .path
            .canonicalize()
            .unwrap_or_else(|_| disk.path.clone());
        if !seen_disks.insert(canonical) {
            return Err(ConfigError::DuplicateDisk(disk.path.clone()));
        }
        if let Some(id) = &disk.id {
            if id.len() > devices::virtio::block::ID_BYTES {
                return Err(ConfigError::DiskIdTooLong {
                    path: disk.path.clone(),
                    id: id.clone(),
                });
            }
        }
    }
    let mut seen_taps = BTreeSet::new();
    for net in nets {
        check_tap_name(&net.tap)?;
        if !seen_taps.insert(net.tap.as_str()) {
            return Err(ConfigError::DuplicateTap(net.tap.clone()));
        }
        if let Some(mac) = &net.mac {
            parse_mac(mac)?;
        }
    }
    if let Some(vsock) = vsock {
        devices::virtio::vsock::check_guest_cid(vsock.cid)
            .map_err(|_| ConfigError::VsockCid(vsock.cid))?;
        let dir = vsock.uds.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(ConfigError::VsockDir(vsock.uds.clone()));
            }
        }
    }
    Ok(())
}

/// The device's own rule (`devices::virtio::net::check_tap_name`), checked
/// here so that a bad name fails before any device exists.
fn check_tap_name(name: &str) -> Result<(), ConfigError> {
    devices::virtio::net::check_tap_name(name).map_err(|_| ConfigError::TapName(name.to_string()))
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff` (the virtio-net device's
/// rules: unicast, not all-zero).
pub fn parse_mac(text: &str) -> Result<[u8; 6], ConfigError> {
    devices::virtio::net::parse_mac(text).map_err(|_| ConfigError::Mac(text.to_string()))
}

/// A NIC's MAC address: the one configured, else derived from the TAP
/// name (locally administered, stable), so a configuration always gets the
/// same address.
pub fn mac_of(net: &NetConfig) -> Result<[u8; 6], ConfigError> {
    match &net.mac {
        Some(mac) => parse_mac(mac),
        None => Ok(devices::virtio::net::mac_from_name(&net.tap)),
    }
}

/// Formats a MAC address the way [`parse_mac`] reads it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `path` with `_<port>` appended: where a guest connection to host port
/// `port` goes.
pub fn vsock_port_path(uds: &Path, port: u32) -> PathBuf {
    let mut name = uds.as_os_str().to_os_string();
    name.push(format!("_{port}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(path: &Path) -> DiskConfig {
        DiskConfig {
            path: path.to_path_buf(),
            read_only: false,
            id: None,
        }
    }

    fn net(tap: &str, mac: Option<&str>) -> NetConfig {
        NetConfig {
            tap: tap.into(),
            mac: mac.map(Into::into),
        }
    }

    #[test]
    fn disks_must_exist_be_files_and_be_distinct() {
        let file = vmm_sys_util::tempfile::TempFile::new().unwrap();
        let path = file.as_path();
        validate_devices(&[disk(path)], &[], None).unwrap();
        let missing = Path::new("/nonexistent/disk.img");
        let e = validate_devices(&[disk(missing)], &[], None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/disk.img"), "{e}");
        let e = validate_devices(&[disk(Path::new("/tmp"))], &[], None).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // The same file through another path.
        let dir = path.parent().unwrap();
        let other = dir.join(".").join(path.file_name().unwrap());
        let e = validate_devices(&[disk(path), disk(&other)], &[], None).unwrap_err();
        assert!(matches!(e, ConfigError::DuplicateDisk(_)), "{e}");
        let mut long_id = disk(path);
        long_id.id = Some("x".repeat(21));
        assert!(validate_devices(&[long_id], &[], None).is_err());
    }

    #[test]
    fn tap_names_and_macs() {
        validate_devices(&[], &[net("tap0", Some("52:54:00:12:34:56"))], None).unwrap();
        for bad in ["", "a-name-of-16-chr", "a/b", "a b", ".."] {
            let e = validate_devices(&[], &[net(bad, None)], None).unwrap_err();
            assert!(matches!(e, ConfigError::TapName(_)), "{bad:?}: {e}");
        }
        let e = validate_devices(&[], &[net("t", None), net("t", None)], None).unwrap_err();
        assert!(matches!(e, ConfigError::DuplicateTap(_)), "{e}");
        for bad in [
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "52:54:00:12:34:zz",
            "525400123456",
        ] {
            let e = validate_devices(&[], &[net("t", Some(bad))], None).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid MAC address `{bad}` (want a unicast aa:bb:cc:dd:ee:ff)")
            );
        }
    }

    #[test]
    fn macs_are_the_configured_one_or_derived_from_the_tap() {
        let derived = mac_of(&net("tap0", None)).unwrap();
        assert_eq!(derived, mac_of(&net("tap0", None)).unwrap());
        assert_ne!(derived, mac_of(&net("tap1", None)).unwrap());
        assert_eq!(derived[0] & 0x03, 0x02, "locally administered unicast");
        let given = mac_of(&net("tap0", Some("52:54:00:12:34:56"))).unwrap();
        assert_eq!(format_mac(&given), "52:54:00:12:34:56");
    }

    #[test]
    fn vsock_cid_range_and_socket_directory() {
        let ok = |cid| VsockConfig {
            cid,
            uds: std::env::temp_dir().join("v.sock"),
        };
        validate_devices(&[], &[], Some(&ok(3))).unwrap();
        for bad in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
            let e = validate_devices(&[], &[], Some(&ok(bad))).unwrap_err();
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
        }
        let nodir = VsockConfig {
            cid: 3,
            uds: "/nonexistent/dir/v.sock".into(),
        };
        let e = validate_devices(&[], &[], Some(&nodir)).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/v.sock"), "{e}");
        assert_eq!(
            vsock_port_path(Path::new("/run/v.sock"), 52),
            Path::new("/run/v.sock_52")
        );
    }
}
