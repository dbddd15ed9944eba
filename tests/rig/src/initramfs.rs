//! The L1 initramfs: busybox, kernel modules, a static `mercury`, the
//! scenario's guest images, the scenario script and a generated `/init`.
//!
//! ```text
//! /init                 generated: mounts, insmod, /dev/kvm check, scenario, RIG-DONE, poweroff
//! /bin/busybox          + one symlink per applet (/bin/sh, /bin/insmod, ...)
//! /bin/mercury          the static launcher (aarch64 L1s: only when supplied)
//! /bin/<tool>           the scenario's `# rig-tools:` (boot-harness, compare-vmm, control-vmm)
//! /opt/control-vmm/     with control-vmm: the host's QEMU, its libraries and firmware
//! /lib/modules/<m>.ko   uncompressed, loaded in this order by /init
//! /images/<name>        guest images, as `guest-images/build <name>` made them
//! /rig/lib.sh           scenario helpers (tests/rig/share/lib.sh)
//! /rig/virtio.sh        the virtio checks both architectures' scenarios source
//! /rig/bench.sh         the boot-time harness runs both boot-bench scenarios source
//! /rig/scenario.sh      the scenario
//! /dev/console          so the kernel can give /init its stdio before devtmpfs
//! ```
//!
//! The archive is left uncompressed: L1 would spend longer inflating it under
//! TCG than the host spends reading a few more megabytes.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{run, CommandError};
use crate::control::{FileSource, L1File};
use crate::cpio::{CpioError, CpioWriter};
use crate::kmod::Module;
use crate::scenario::Scenario;

/// Scenario helpers, installed as /rig/lib.sh.
pub const SCENARIO_LIB: &str = include_str!("../share/lib.sh");
/// Scenario code shared by both architectures' scenarios, installed under
/// /rig/ beside lib.sh and sourced after it: the virtio device checks
/// (`virtio`, `arm64-virtio`) and the boot-time harness runs (`boot-bench`,
/// `arm64-boot-bench`).
pub const SHARED_SCRIPTS: [(&str, &str); 2] = [
    ("rig/virtio.sh", include_str!("../share/virtio.sh")),
    ("rig/bench.sh", include_str!("../share/bench.sh")),
];

/// Errors from assembling the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot list busybox applets")]
    Applets(#[from] CommandError),
    #[error("cannot create `{path}`")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the L1 initramfs `{path}` failed")]
    Cpio {
        path: PathBuf,
        #[source]
        source: CpioError,
    },
}

/// Everything that goes into L1.
pub struct Payload<'a> {
    pub scenario: &'a Scenario,
    pub busybox: &'a Path,
    /// A busybox that runs on this host, of the same Debian version as
    /// `busybox`, which lists the applets (`busybox` itself, unless L1 is
    /// another architecture).
    pub applet_lister: &'a Path,
    /// `None`: no `/bin/mercury` (an aarch64 L1 without `$MERCURY_BIN_AARCH64`).
    pub mercury: Option<&'a Path>,
    /// `(name, host path)`: static binaries installed as `/bin/<name>`.
    pub tools: &'a [(String, PathBuf)],
    /// Loaded by /init in this order (dependencies first).
    pub modules: &'a [Module],
    /// `(name, host path)`: installed as `/images/<name>`.
    pub images: &'a [(String, PathBuf)],
    /// Any other files (the control VMM's tree).
    pub files: &'a [L1File],
}

/// The applets of a static busybox, asked from the binary itself.
pub fn busybox_applets(busybox: &Path) -> Result<Vec<String>, InitramfsError> {
    let output = run(Command::new(busybox).arg("--list"))?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(str::to_string)
        .collect())
}

/// Writes the initramfs to `path` and returns its size in bytes.
pub fn write(path: &Path, payload: &Payload) -> Result<u64, InitramfsError> {
    let applets = busybox_applets(payload.applet_lister)?;
    let file = File::create(path).map_err(|source| InitramfsError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    let cpio_err = |source| InitramfsError::Cpio {
        path: path.to_path_buf(),
        source,
    };
    let (_, size) = assemble(CpioWriter::new(BufWriter::new(file)), payload, &applets)
        .and_then(CpioWriter::finish)
        .map_err(cpio_err)?;
    Ok(size)
}

fn assemble<W: io::Write>(
    mut cpio: CpioWriter<W>,
    payload: &Payload,
    applets: &[String],
) -> Result<CpioWriter<W>, CpioError> {
    for dir in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "run",
        "mnt",
        "etc",
        "images",
        "lib/modules",
    ] {
        cpio.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 })?;
    }
    cpio.char_dev("dev/console", 0o600, 5, 1)?;
    cpio.char_dev("dev/null", 0o666, 1, 3)?;
    cpio.file_from("bin/busybox", 0o755, payload.busybox)?;
    for applet in applets {
        cpio.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    cpio.symlink("sbin", "bin")?;
    cpio.symlink("usr", ".")?;
    if let Some(mercury) = payload.mercury {
        cpio.file_from("bin/mercury", 0o755, mercury)?;
    }
    for (name, host_path) in payload.tools {
        cpio.file_from(&format!("bin/{name}"), 0o755, host_path)?;
    }
    for module in payload.modules {
        cpio.file_bytes(
            &format!("lib/modules/{}.ko", module.name),
            0o644,
            &module.object,
        )?;
    }
    for (name, host_path) in payload.images {
        cpio.file_from(&format!("images/{name}"), 0o644, host_path)?;
    }
    for file in payload.files {
        match &file.source {
            FileSource::Host(host_path) => cpio.file_from(&file.path, file.mode, host_path)?,
            FileSource::Bytes(bytes) => cpio.file_bytes(&file.path, file.mode, bytes)?,
        }
    }
    cpio.file_bytes("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.file_bytes("rig/lib.sh", 0o644, SCENARIO_LIB.as_bytes())?;
    for (path, text) in SHARED_SCRIPTS {
        cpio.file_bytes(path, 0o644, text.as_bytes())?;
    }
    cpio.file_bytes("rig/scenario.sh", 0o755, payload.scenario.script.as_bytes())?;
    let modules: Vec<&str> = payload.modules.iter().map(|m| m.name.as_str()).collect();
    cpio.file_bytes(
        "init",
        0o755,
        init_script(&payload.scenario.name, &modules).as_bytes(),
    )?;
    Ok(cpio)
}

/// L1's PID 1. It never exits: PID 1 exiting would panic L1 (which then
/// reboots, and `-no-reboot` ends QEMU), but a clean `poweroff -f` keeps the
/// console log free of a misleading panic.
pub fn init_script(scenario: &str, modules: &[&str]) -> String {
    format!(
        r#"#!/bin/sh
# Generated by mercury-rig for scenario `{scenario}`: L1's /init.
export PATH=/bin HOME=/root TERM=dumb RIG_SCENARIO={scenario}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
echo "RIG-INIT uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r) cpus=$(nproc) memtotal_kb=$(awk '/^MemTotal/ {{print $2}}' /proc/meminfo)"
# How L1 backs guest memory (docs/RIG.md, "The emulated host"): transparent
# huge pages, KSM (merges pages only when run=1), NUMA balancing.
echo "rig: L1 memory: thp=$(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null) ksm_run=$(cat /sys/kernel/mm/ksm/run 2>/dev/null) numa_balancing=$(cat /proc/sys/kernel/numa_balancing 2>/dev/null) cmdline=$(cat /proc/cmdline)"
loaded=
failed=
for m in {modules}; do
    if out=$(insmod /lib/modules/$m.ko 2>&1); then
        loaded="$loaded $m"
    else
        failed="$failed $m($(echo $out | tr '\n' ' '))"
    fi
done
if [ -z "$failed" ]; then
    echo "RIG-RESULT rig-modules PASS loaded:$loaded"
else
    echo "RIG-RESULT rig-modules FAIL failed:$failed loaded:$loaded"
fi
if [ -c /dev/kvm ]; then
    echo "RIG-RESULT rig-kvm PASS /dev/kvm present ($(dmesg | grep -c -i 'nested paging enabled') nested-paging line)"
else
    echo "RIG-RESULT rig-kvm FAIL /dev/kvm missing after insmod"
    dmesg | grep -i -E 'kvm|svm' | tail -n 20
fi
# A sign of life for the host: L1 silent for longer than the rig allows
# has hung (docs/RIG.md, "Known defects of the environment").
(while sleep {heartbeat}; do echo "RIG-HEARTBEAT uptime=$(cut -d' ' -f1 /proc/uptime)"; done) &
start=$(cut -d' ' -f1 /proc/uptime)
cd /tmp
sh /rig/scenario.sh
rc=$?
end=$(cut -d' ' -f1 /proc/uptime)
echo "RIG-SCENARIO-END rc=$rc secs=$(awk -v s=$start -v e=$end 'BEGIN {{ printf "%.2f", e - s }}')"
echo RIG-DONE
sync
poweroff -f
sleep 30
"#,
        heartbeat = crate::qemu::HEARTBEAT_PERIOD.as_secs(),
        // `for m in ; do` runs its body zero times.
        modules = modules.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Header, Scenario};

    #[test]
    fn init_loads_modules_in_order_and_ends_with_done() {
        let init = init_script("smoke", &["irqbypass", "kvm", "kvm_amd"]);
        assert!(init.starts_with("#!/bin/sh\n"));
        assert!(init.contains("for m in irqbypass kvm kvm_amd; do"));
        assert!(init.contains("sh /rig/scenario.sh"));
        let done = init.find("echo RIG-DONE").unwrap();
        assert!(done > init.find("sh /rig/scenario.sh").unwrap());
        assert!(init[done..].contains("poweroff -f"));
        // Format escapes must not leak into the shell text.
        assert!(!init.contains("{{") && init.contains("{print $2}"));
        // No modules (an aarch64 L1: KVM is built in): the loop runs zero times.
        assert!(init_script("arm64-smoke", &[]).contains("for m in ; do"));
    }

    #[test]
    fn assembles_the_layout() {
        let dir = std::env::temp_dir().join(format!("rig-initramfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (busybox, mercury, image) = (dir.join("busybox"), dir.join("mercury"), dir.join("img"));
        let harness = dir.join("boot-harness");
        for (path, data) in [
            (&busybox, "bb"),
            (&mercury, "mercury"),
            (&image, "kernel"),
            (&harness, "harness"),
        ] {
            std::fs::write(path, data).unwrap();
        }
        let scenario = Scenario {
            name: "smoke".into(),
            path: dir.join("smoke.sh"),
            script: "echo hi\n".into(),
            header: Header::default(),
        };
        let modules = [Module {
            name: "kvm".into(),
            object: b"\x7fELF".to_vec(),
        }];
        let images = [("linux-kernel".to_string(), image.clone())];
        let tools = [("boot-harness".to_string(), harness.clone())];
        let payload = Payload {
            scenario: &scenario,
            busybox: &busybox,
            applet_lister: &busybox,
            mercury: Some(&mercury),
            tools: &tools,
            modules: &modules,
            images: &images,
            files: &[L1File {
                path: "opt/x/lib/libz.so.1".into(),
                mode: 0o755,
                source: FileSource::Bytes(b"lib".to_vec()),
            }],
        };
        let applets = ["sh".to_string(), "insmod".to_string()];
        let (bytes, _) = assemble(CpioWriter::new(Vec::new()), &payload, &applets)
            .unwrap()
            .finish()
            .unwrap();
        // An aarch64 L1 without $MERCURY_BIN_AARCH64: everything but mercury.
        let without = Payload {
            mercury: None,
            ..payload
        };
        let (no_mercury, _) = assemble(CpioWriter::new(Vec::new()), &without, &applets)
            .unwrap()
            .finish()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let no_mercury = String::from_utf8_lossy(&no_mercury);
        assert!(!no_mercury.contains("bin/mercury\0"));
        assert!(no_mercury.contains("bin/busybox\0") && no_mercury.contains("init\0"));

        let text = String::from_utf8_lossy(&bytes);
        for name in [
            "dev/console\0",
            "bin/busybox\0",
            "bin/sh\0",
            "bin/insmod\0",
            "bin/mercury\0",
            "bin/boot-harness\0",
            "lib/modules/kvm.ko\0",
            "images/linux-kernel\0",
            "rig/lib.sh\0",
            "rig/virtio.sh\0",
            "rig/bench.sh\0",
            "rig/scenario.sh\0",
            "init\0",
            "opt/x/lib/libz.so.1\0",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}
