//! The device flags of `mercury run`: `--disk`, `--net`, `--vsock`.
//! Comma-separated `key=value` lists, as Firecracker's and Cloud
//! Hypervisor's users know them; each error names the flag and the value.

use std::path::PathBuf;

use vmm_core::{DiskConfig, NetConfig, VsockConfig};

/// A device flag that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("--{flag} {value}: {why}")]
pub(crate) struct DeviceArgError {
    flag: &'static str,
    value: String,
    why: String,
}

fn error(flag: &'static str, value: &str, why: impl Into<String>) -> DeviceArgError {
    DeviceArgError {
        flag,
        value: value.to_string(),
        why: why.into(),
    }
}

/// `PATH[,ro][,id=ID]`.
pub(crate) fn parse_disk(value: &str) -> Result<DiskConfig, DeviceArgError> {
    let mut parts = value.split(',');
    let path = parts.next().unwrap_or_default();
    if path.is_empty() {
        return Err(error("disk", value, "no image path"));
    }
    let mut disk = DiskConfig {
        path: PathBuf::from(path),
        read_only: false,
        id: None,
    };
    for part in parts {
        match part.split_once('=') {
            None if part == "ro" => disk.read_only = true,
            Some(("id", id)) if !id.is_empty() => disk.id = Some(id.to_string()),
            _ => {
                return Err(error(
                    "disk",
                    value,
                    format!("unknown option `{part}` (want ro or id=ID)"),
                ))
            }
        }
    }
    Ok(disk)
}

/// `tap=NAME[,mac=MAC]`.
pub(crate) fn parse_net(value: &str) -> Result<NetConfig, DeviceArgError> {
    let mut tap = None;
    let mut mac = None;
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("tap", name)) if !name.is_empty() => tap = Some(name.to_string()),
            Some(("mac", m)) if !m.is_empty() => mac = Some(m.to_string()),
            _ => {
                return Err(error(
                    "net",
                    value,
                    format!("unknown option `{part}` (want tap=NAME or mac=MAC)"),
                ))
            }
        }
    }
    let tap = tap.ok_or_else(|| error("net", value, "tap=NAME is required"))?;
    Ok(NetConfig { tap, mac })
}

/// `cid=N,uds=PATH`.
pub(crate) fn parse_vsock(value: &str) -> Result<VsockConfig, DeviceArgError> {
    let mut cid = None;
    let mut uds = None;
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("cid", n)) => {
                let n = n
                    .parse()
                    .map_err(|_| error("vsock", value, format!("cid `{n}` is not a number")))?;
                cid = Some(n);
            }
            Some(("uds", path)) if !path.is_empty() => uds = Some(PathBuf::from(path)),
            _ => {
                return Err(error(
                    "vsock",
                    value,
                    format!("unknown option `{part}` (want cid=N and uds=PATH)"),
                ))
            }
        }
    }
    match (cid, uds) {
        (Some(cid), Some(uds)) => Ok(VsockConfig { cid, uds }),
        _ => Err(error(
            "vsock",
            value,
            "both cid=N and uds=PATH are required",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks() {
        let d = parse_disk("/img/root.ext4").unwrap();
        assert_eq!(
            (d.path.to_str(), d.read_only, d.id),
            (Some("/img/root.ext4"), false, None)
        );
        let d = parse_disk("data.img,ro,id=data0").unwrap();
        assert!(d.read_only);
        assert_eq!(d.id.as_deref(), Some("data0"));
        for bad in ["", ",ro", "x.img,rw", "x.img,id=", "x.img,ro=1"] {
            let e = parse_disk(bad).unwrap_err();
            assert!(e.to_string().starts_with(&format!("--disk {bad}: ")), "{e}");
        }
    }

    #[test]
    fn nets() {
        let n = parse_net("tap=tap0").unwrap();
        assert_eq!((n.tap.as_str(), n.mac), ("tap0", None));
        let n = parse_net("tap=t1,mac=52:54:00:00:00:01").unwrap();
        assert_eq!(n.mac.as_deref(), Some("52:54:00:00:00:01"));
        for bad in [
            "",
            "tap0",
            "mac=52:54:00:00:00:01",
            "tap=t,speed=10",
            "tap=",
        ] {
            let e = parse_net(bad).unwrap_err();
            assert!(e.to_string().starts_with(&format!("--net {bad}: ")), "{e}");
        }
    }

    #[test]
    fn vsocks() {
        let v = parse_vsock("cid=3,uds=/run/v.sock").unwrap();
        assert_eq!((v.cid, v.uds.to_str()), (3, Some("/run/v.sock")));
        for bad in ["cid=3", "uds=/x", "cid=x,uds=/x", "cid=3,uds=/x,port=1"] {
            let e = parse_vsock(bad).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("--vsock {bad}: ")),
                "{e}"
            );
        }
    }
}
