//! Running a Firecracker-compatible VMM for comparison: its JSON config file
//! and its boot-timer log line.
//!
//! Firecracker is started as `firecracker --no-api --boot-timer --level Info
//! --config-file <file>`; the config has the same kernel, initrd, command
//! line, vCPUs and memory as the mercury run, and no devices. With
//! `--boot-timer` it logs, when the guest writes the boot timer,
//!
//! ```text
//! ... Guest-boot-time =  41234 us 41 ms,  30000 CPU us 30 CPU ms
//! ```
//!
//! measured, like mercury's, from its process start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// What the comparison VM is booted with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSpec {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory, MiB.
    pub memory_mib: u64,
}

#[derive(Serialize)]
struct Config<'a> {
    #[serde(rename = "boot-source")]
    boot_source: BootSource<'a>,
    // Firecracker requires the key, even when empty.
    drives: [(); 0],
    #[serde(rename = "machine-config")]
    machine_config: MachineConfig,
}

#[derive(Serialize)]
struct BootSource<'a> {
    kernel_image_path: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    initrd_path: Option<&'a Path>,
    boot_args: &'a str,
}

#[derive(Serialize)]
struct MachineConfig {
    vcpu_count: u8,
    mem_size_mib: u64,
}

/// The `--config-file` JSON for `spec`.
pub fn config_json(spec: &BootSpec) -> String {
    let config = Config {
        boot_source: BootSource {
            kernel_image_path: &spec.kernel,
            initrd_path: spec.initrd.as_deref(),
            boot_args: &spec.cmdline,
        },
        drives: [],
        machine_config: MachineConfig {
            vcpu_count: spec.vcpus,
            mem_size_mib: spec.memory_mib,
        },
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// The command-line arguments, after the binary, for a config file.
pub fn args(config_file: &Path) -> Vec<String> {
    vec![
        "--no-api".into(),
        "--boot-timer".into(),
        "--level".into(),
        "Info".into(),
        "--config-file".into(),
        config_file.display().to_string(),
    ]
}

/// The boot time logged in `output` (its stdout and stderr), if any: the
/// first `Guest-boot-time = <n> us` line.
pub fn find_boot_time(output: &str) -> Option<Duration> {
    const KEY: &str = "Guest-boot-time =";
    output.lines().find_map(|line| {
        let rest = line[line.find(KEY)? + KEY.len()..].trim_start();
        let (number, rest) = rest.split_once(char::is_whitespace)?;
        if !rest.trim_start().starts_with("us") {
            return None;
        }
        number.parse().ok().map(Duration::from_micros)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BootSpec {
        BootSpec {
            kernel: "/images/vmlinux".into(),
            initrd: Some("/images/initramfs.cpio".into()),
            cmdline: "console=ttyS0 reboot=k panic=1 \"quoted\"".into(),
            vcpus: 2,
            memory_mib: 256,
        }
    }

    #[test]
    fn config_has_boot_source_machine_config_and_no_devices() {
        let json: serde_json::Value = serde_json::from_str(&config_json(&spec())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "boot-source": {
                    "kernel_image_path": "/images/vmlinux",
                    "initrd_path": "/images/initramfs.cpio",
                    "boot_args": "console=ttyS0 reboot=k panic=1 \"quoted\"",
                },
                "drives": [],
                "machine-config": { "vcpu_count": 2, "mem_size_mib": 256 },
            })
        );
    }

    #[test]
    fn config_without_initrd_omits_the_key() {
        let mut spec = spec();
        spec.initrd = None;
        let json: serde_json::Value = serde_json::from_str(&config_json(&spec)).unwrap();
        assert!(json["boot-source"].get("initrd_path").is_none());
    }

    #[test]
    fn arguments() {
        assert_eq!(
            args(Path::new("/tmp/fc.json")),
            [
                "--no-api",
                "--boot-timer",
                "--level",
                "Info",
                "--config-file",
                "/tmp/fc.json"
            ]
        );
    }

    #[test]
    fn parses_the_boot_time_line() {
        let out = "2026-11-23T10:00:00.000000000 [anonymous-instance:main] Running Firecracker v1.16.0\n\
                   2026-11-23T10:00:00.041234000 [anonymous-instance:fc_vcpu 0] Guest-boot-time =  41234 us 41 ms,  30120 CPU us 30 CPU ms\n";
        assert_eq!(find_boot_time(out), Some(Duration::from_micros(41234)));
    }

    #[test]
    fn no_or_malformed_boot_time_line() {
        assert_eq!(find_boot_time("Running Firecracker\n"), None);
        assert_eq!(find_boot_time("Guest-boot-time = soon\n"), None);
        assert_eq!(find_boot_time("Guest-boot-time = 12 ms\n"), None);
        assert_eq!(
            find_boot_time("Guest-boot-time = 12 us\n"),
            Some(Duration::from_micros(12))
        );
    }
}
