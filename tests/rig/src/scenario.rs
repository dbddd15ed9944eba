//! Scenarios: `tests/rig/scenarios/<name>.sh`, run by busybox `sh` inside L1.
//!
//! The leading comment block is the scenario's header; lines of the form
//! `# rig-<key>: <value>` declare what the rig must provide:
//!
//! ```text
//! #!/bin/sh
//! # Boots the microVM kernel under mercury.        (free text is ignored)
//! # rig-images: linux-kernel initramfs              guest-images/build names -> /images/<name>
//! # rig-modules: tun bridge veth                    extra L1 modules (kvm ones always load)
//! # rig-tools: boot-harness compare-vmm             extra static binaries -> /bin/<name> (inputs::TOOLS)
//! # rig-memory: 2048                                L1 RAM in MiB (default 2048)
//! # rig-smp: 2                                      L1 vCPUs (default 2)
//! # rig-timeout: 600                                seconds for the whole L1 run (default 600)
//! # rig-expect: kvm-dev mercury-help                checks that must report a RIG-RESULT
//! # rig-disk-images: node-rootfs linux-kernel        guest images on an ext4 disk L1 sees as /dev/vda
//!                                                    (for images too big for L1's RAM), as /images/<name> on it
//! # rig-disk-mib: 8192                               free MiB on that disk besides the images (default 4096)
//! # rig-arch: aarch64                               L1's architecture (default x86_64, crate::arch)
//! # rig-gic: 2                                      aarch64 L1's GIC version, 2 or 3 (default 3)
//! ```
//!
//! A key may repeat; list values accumulate. Unknown `rig-` keys are errors,
//! so a typo cannot silently drop an image or an expected check.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::arch::Arch;

/// Default L1 RAM (MiB).
pub const DEFAULT_MEMORY_MIB: u32 = 2048;
/// Default L1 vCPU count.
pub const DEFAULT_SMP: u32 = 2;
/// Default limit for one L1 run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Free MiB on a scratch disk besides its images.
pub const DEFAULT_DISK_MIB: u32 = 4096;

/// Errors from finding or parsing a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {name}, line {line}: invalid value `{value}` for rig-{key}")]
    BadValue {
        name: String,
        line: usize,
        key: String,
        value: String,
    },
    #[error("invalid scenario name `{0}` (use lowercase letters, digits and `-`)")]
    BadName(String),
    #[error("scenario {name}, line {line}: unknown header key `rig-{key}`")]
    UnknownKey {
        name: String,
        line: usize,
        key: String,
    },
    #[error("cannot read scenarios from `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no scenario `{name}` in {dir} (available: {available})")]
    NotFound {
        name: String,
        dir: PathBuf,
        available: String,
    },
}

/// What a scenario declares in its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// L1's architecture (`# rig-arch:`, default x86_64).
    pub arch: Arch,
    pub images: Vec<String>,
    pub modules: Vec<String>,
    /// Extra static binaries, from [`crate::inputs::TOOLS`].
    pub tools: Vec<String>,
    pub memory_mib: u32,
    pub smp: u32,
    pub timeout: Duration,
    pub expect: Vec<String>,
    /// Images put on L1's scratch disk rather than in its initramfs.
    pub disk_images: Vec<String>,
    /// Free space on the scratch disk besides the images, MiB.
    pub disk_mib: u32,
    /// An aarch64 L1's GIC version (`# rig-gic:`, 2 or 3; `None`: 3).
    pub gic: Option<u32>,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            arch: Arch::X86_64,
            images: Vec::new(),
            modules: Vec::new(),
            tools: Vec::new(),
            memory_mib: DEFAULT_MEMORY_MIB,
            smp: DEFAULT_SMP,
            timeout: DEFAULT_TIMEOUT,
            expect: Vec::new(),
            disk_images: Vec::new(),
            disk_mib: DEFAULT_DISK_MIB,
            gic: None,
        }
    }
}

/// A scenario script and its header.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub path: PathBuf,
    pub script: String,
    pub header: Header,
}

/// Names of the scenarios in `dir`, sorted.
pub fn list(dir: &Path) -> Result<Vec<String>, ScenarioError> {
    let io_err = |source| ScenarioError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let file_name = entry
            .map_err(io_err)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(name) = file_name.strip_suffix(".sh") {
            if valid_name(name) {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Reads and parses `dir/<name>.sh`.
pub fn load(dir: &Path, name: &str) -> Result<Scenario, ScenarioError> {
    if !valid_name(name) {
        return Err(ScenarioError::BadName(name.to_string()));
    }
    let path = dir.join(format!("{name}.sh"));
    if !path.is_file() {
        let available = list(dir)?.join(", ");
        return Err(ScenarioError::NotFound {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            available,
        });
    }
    let script = fs::read_to_string(&path).map_err(|source| ScenarioError::Io {
        path: path.clone(),
        source,
    })?;
    let header = parse_header(name, &script)?;
    Ok(Scenario {
        name: name.to_string(),
        path,
        script,
        header,
    })
}

/// Parses the leading comment block of a scenario script.
pub fn parse_header(name: &str, script: &str) -> Result<Header, ScenarioError> {
    let mut header = Header::default();
    for (index, raw) in script.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        let Some(rest) = comment.trim_start().strip_prefix("rig-") else {
            continue;
        };
        let Some((key, value)) = rest.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let words = || value.split_whitespace().map(str::to_string);
        let bad = || ScenarioError::BadValue {
            name: name.to_string(),
            line: index + 1,
            key: key.to_string(),
            value: value.to_string(),
        };
        let number = || value.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(bad);
        match key {
            "images" => header.images.extend(words()),
            "disk-images" => header.disk_images.extend(words()),
            "disk-mib" => header.disk_mib = number()?,
            "modules" => header.modules.extend(words()),
            "tools" => {
                for tool in words() {
                    if !crate::inputs::TOOLS.contains(&tool.as_str()) {
                        return Err(ScenarioError::BadValue {
                            name: name.to_string(),
                            line: index + 1,
                            key: key.to_string(),
                            value: tool,
                        });
                    }
                    header.tools.push(tool);
                }
            }
            "expect" => header.expect.extend(words()),
            "memory" => header.memory_mib = number()?,
            "smp" => header.smp = number()?,
            "timeout" => header.timeout = Duration::from_secs(u64::from(number()?)),
            "arch" => header.arch = value.parse().map_err(|_| bad())?,
            "gic" => {
                header.gic = Some(
                    number()
                        .ok()
                        .filter(|v| matches!(v, 2 | 3))
                        .ok_or_else(bad)?,
                )
            }
            _ => {
                return Err(ScenarioError::UnknownKey {
                    name: name.to_string(),
                    line: index + 1,
                    key: key.to_string(),
                })
            }
        }
    }
    if header.gic.is_some() && header.arch != Arch::Aarch64 {
        return Err(ScenarioError::BadValue {
            name: name.to_string(),
            line: 0,
            key: "gic".to_string(),
            value: "(only an aarch64 L1 has a GIC)".to_string(),
        });
    }
    let image_ok = |s: &String| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if let Some(bad) = header
        .images
        .iter()
        .chain(&header.disk_images)
        .chain(&header.modules)
        .find(|s| !image_ok(s))
    {
        return Err(ScenarioError::BadValue {
            name: name.to_string(),
            line: 0,
            key: "images/modules".to_string(),
            value: bad.clone(),
        });
    }
    Ok(header)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_keys_and_stops_at_the_first_command() {
        let script = "#!/bin/sh\n\
            # Boots Linux.\n\
            # rig-images: linux-kernel  initramfs\n\
            #rig-images: linux-bzimage\n\
            # rig-modules: tun bridge\n\
            # rig-tools: boot-harness\n\
            # rig-memory: 3072\n\
            # rig-smp: 1\n\
            # rig-timeout: 900\n\
            # rig-expect: a b\n\
            # rig-expect: c\n\
            # rig-disk-images: node-rootfs\n\
            # rig-disk-mib: 100\n\
            \n\
            . /rig/lib.sh\n\
            # rig-images: not-in-header\n";
        let header = parse_header("x", script).unwrap();
        assert_eq!(
            header.images,
            ["linux-kernel", "initramfs", "linux-bzimage"]
        );
        assert_eq!(header.modules, ["tun", "bridge"]);
        assert_eq!(header.tools, ["boot-harness"]);
        assert_eq!(header.memory_mib, 3072);
        assert_eq!(header.smp, 1);
        assert_eq!(header.disk_images, ["node-rootfs"]);
        assert_eq!(header.disk_mib, 100);
        assert_eq!(header.timeout, Duration::from_secs(900));
        assert_eq!(header.expect, ["a", "b", "c"]);
        assert_eq!(header.arch, Arch::X86_64);
        assert_eq!(header.gic, None);
        let arm = parse_header("x", "# rig-arch: aarch64\n").unwrap();
        assert_eq!(arm.arch, Arch::Aarch64);
        assert!(matches!(
            parse_header("x", "# rig-arch: sparc\n"),
            Err(ScenarioError::BadValue { ref value, .. }) if value == "sparc"
        ));
    }

    #[test]
    fn defaults_without_header() {
        assert_eq!(
            parse_header("x", "echo hi\n# rig-smp: 8\n").unwrap(),
            Header::default()
        );
    }

    #[test]
    fn rejects_typos_and_bad_values() {
        let err = parse_header("x", "# rig-image: linux-kernel\n").unwrap_err();
        assert!(
            matches!(err, ScenarioError::UnknownKey { ref key, line: 1, .. } if key == "image"),
            "{err}"
        );
        assert!(matches!(
            parse_header("x", "# rig-memory: lots\n"),
            Err(ScenarioError::BadValue { .. })
        ));
        assert!(matches!(
            parse_header("x", "# rig-smp: 0\n"),
            Err(ScenarioError::BadValue { .. })
        ));
        // A GIC version: 2 or 3, and only for an aarch64 L1.
        let gicv2 = parse_header("x", "# rig-gic: 2\n# rig-arch: aarch64\n").unwrap();
        assert_eq!(gicv2.gic, Some(2));
        assert_eq!(
            gicv2.arch.machine(gicv2.gic).as_deref(),
            Some("virt,virtualization=on,gic-version=2")
        );
        assert_eq!(
            Arch::Aarch64.machine(None).as_deref(),
            Some("virt,virtualization=on,gic-version=3")
        );
        for bad in ["# rig-arch: aarch64\n# rig-gic: 4\n", "# rig-gic: 2\n"] {
            assert!(
                matches!(parse_header("x", bad), Err(ScenarioError::BadValue { ref key, .. }) if key == "gic"),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_header("x", "# rig-tools: boot-harness gdb\n"),
            Err(ScenarioError::BadValue { ref value, line: 1, .. }) if value == "gdb"
        ));
        assert!(matches!(
            parse_header("x", "# rig-images: ../etc\n"),
            Err(ScenarioError::BadValue { .. })
        ));
    }

    #[test]
    fn lists_and_loads_scenarios() {
        let dir = std::env::temp_dir().join(format!("rig-scenarios-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("smoke.sh"), "# rig-expect: kvm-dev\necho\n").unwrap();
        fs::write(dir.join("linux-boot.sh"), "echo\n").unwrap();
        fs::write(dir.join("README.md"), "").unwrap();
        fs::write(dir.join("Bad_Name.sh"), "").unwrap();
        assert_eq!(list(&dir).unwrap(), ["linux-boot", "smoke"]);
        let smoke = load(&dir, "smoke").unwrap();
        assert_eq!(smoke.header.expect, ["kvm-dev"]);
        let missing = load(&dir, "nope").unwrap_err();
        assert!(
            missing.to_string().contains("linux-boot, smoke"),
            "{missing}"
        );
        assert!(matches!(
            load(&dir, "../smoke"),
            Err(ScenarioError::BadName(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
