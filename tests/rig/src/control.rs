//! The control VMM (`# rig-tools: control-vmm`): the host's own
//! `qemu-system-x86_64`, shipped into L1 with its shared libraries, the
//! dynamic loader and the firmware that `-M microvm -kernel` needs, so a
//! scenario can boot the same guest kernel and initramfs with QEMU/KVM as
//! with mercury. Its failure rate measures the environment (L0's emulated
//! SVM and L1's KVM) apart from mercury's (docs/RIG.md, "The control VMM").
//!
//! ```text
//! /bin/control-vmm                 wrapper: LD_LIBRARY_PATH, -L, then "$@"
//! /opt/control-vmm/qemu-system-x86_64
//! /opt/control-vmm/lib/<soname>    every library `ldd` lists
//! /lib64/ld-linux-x86-64.so.2      the binary's PT_INTERP, as ldd found it
//! /opt/control-vmm/share/<rom>     bios-microvm.bin, pvh.bin, linuxboot*.bin
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::run;
use crate::inputs::InputError;

/// The rig-tool name.
pub const CONTROL_VMM: &str = "control-vmm";
/// Where the QEMU tree goes in L1.
pub const PREFIX: &str = "opt/control-vmm";
/// The firmware files `-M microvm -kernel` may load (its BIOS, SeaBIOS
/// built for microvm, and the option ROMs for a PVH or bzImage kernel),
/// looked up in [`FIRMWARE_DIRS`].
pub const FIRMWARE: [&str; 4] = [
    "bios-microvm.bin",
    "pvh.bin",
    "linuxboot_dma.bin",
    "linuxboot.bin",
];
/// Where Debian's QEMU keeps its firmware (`bios-microvm.bin` comes with
/// the `seabios` package, a dependency of `qemu-system-x86`).
pub const FIRMWARE_DIRS: [&str; 2] = ["/usr/share/qemu", "/usr/share/seabios"];

/// One file for the L1 initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L1File {
    /// Path inside L1, without the leading `/`.
    pub path: String,
    pub mode: u32,
    pub source: FileSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSource {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// The files that make `qemu` (a dynamically linked host binary) run in L1
/// as `/bin/control-vmm`.
pub fn files(qemu: &Path) -> Result<Vec<L1File>, InputError> {
    let qemu = resolve(qemu)?;
    let ldd = run(Command::new("ldd").arg(&qemu))?;
    let libs = parse_ldd(&String::from_utf8_lossy(&ldd.stdout));
    if libs.is_empty() {
        return Err(InputError::ControlVmm(format!(
            "`ldd {}` listed no libraries: not a dynamically linked QEMU?",
            qemu.display()
        )));
    }
    let mut files = vec![L1File {
        path: format!("{PREFIX}/qemu-system-x86_64"),
        mode: 0o755,
        source: FileSource::Host(qemu.clone()),
    }];
    for lib in libs {
        let path = match lib {
            Library::Loader(ref host) => host.to_string_lossy().trim_start_matches('/').to_string(),
            Library::Shared { ref name, .. } => format!("{PREFIX}/lib/{name}"),
        };
        let host = match lib {
            Library::Loader(host) | Library::Shared { host, .. } => host,
        };
        files.push(L1File {
            path,
            mode: 0o755,
            source: FileSource::Host(host),
        });
    }
    for rom in FIRMWARE {
        let found = FIRMWARE_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(rom))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                InputError::ControlVmm(format!(
                    "firmware `{rom}` is in none of {FIRMWARE_DIRS:?} (Debian packages qemu-system-data, seabios)"
                ))
            })?;
        files.push(L1File {
            path: format!("{PREFIX}/share/{rom}"),
            mode: 0o644,
            source: FileSource::Host(found),
        });
    }
    files.push(L1File {
        path: format!("bin/{CONTROL_VMM}"),
        mode: 0o755,
        source: FileSource::Bytes(wrapper().into_bytes()),
    });
    Ok(files)
}

/// `/bin/control-vmm`: QEMU with its libraries and firmware directory.
pub fn wrapper() -> String {
    format!(
        "#!/bin/sh\n# mercury-rig: the host's QEMU as L1's control VMM.\n\
         LD_LIBRARY_PATH=/{PREFIX}/lib exec /{PREFIX}/qemu-system-x86_64 -L /{PREFIX}/share \"$@\"\n"
    )
}

/// `qemu` itself, or the file of that name on `PATH`.
fn resolve(qemu: &Path) -> Result<PathBuf, InputError> {
    if qemu.components().count() > 1 {
        return Ok(qemu.to_path_buf());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(qemu))
        .find(|p| p.is_file())
        .ok_or_else(|| InputError::ControlVmm(format!("`{}` is not on PATH", qemu.display())))
}

/// A line of `ldd` output that names a file.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Library {
    /// The dynamic loader (`/lib64/ld-linux-x86-64.so.2 (0x...)`): installed
    /// at the same path, the binary's PT_INTERP.
    Loader(PathBuf),
    /// `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`.
    Shared { name: String, host: PathBuf },
}

/// The files in `ldd` output; the vDSO (no file) is skipped.
fn parse_ldd(text: &str) -> Vec<Library> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if let Some((name, rest)) = line.split_once(" => ") {
                let host = rest.split_whitespace().next()?;
                host.starts_with('/').then(|| Library::Shared {
                    name: name.trim().to_string(),
                    host: PathBuf::from(host),
                })
            } else {
                let host = line.split_whitespace().next()?;
                host.starts_with('/')
                    .then(|| Library::Loader(PathBuf::from(host)))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5d1f0000)\n\
                    \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f1)\n\
                    \tlibmissing.so.2 => not found\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f2)\n";
        assert_eq!(
            parse_ldd(text),
            [
                Library::Shared {
                    name: "libz.so.1".into(),
                    host: "/lib/x86_64-linux-gnu/libz.so.1".into()
                },
                Library::Loader("/lib64/ld-linux-x86-64.so.2".into()),
            ]
        );
    }

    #[test]
    fn wrapper_points_at_the_shipped_tree() {
        let w = wrapper();
        assert!(w.starts_with("#!/bin/sh\n"));
        assert!(w.contains(
            "LD_LIBRARY_PATH=/opt/control-vmm/lib exec /opt/control-vmm/qemu-system-x86_64 -L /opt/control-vmm/share \"$@\""
        ));
    }

    #[test]
    fn the_host_qemu_ships_with_loader_libraries_and_firmware() {
        // Only where the host has QEMU (setup.sh installs it); elsewhere
        // there is nothing to check.
        let Ok(files) = files(Path::new(crate::qemu::QEMU)) else {
            return;
        };
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"bin/control-vmm"), "{paths:?}");
        assert!(
            paths.contains(&"opt/control-vmm/share/bios-microvm.bin"),
            "{paths:?}"
        );
        assert!(
            paths.iter().any(|p| p.starts_with("lib64/ld-linux")),
            "{paths:?}"
        );
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with("opt/control-vmm/lib/libc.so")),
            "{paths:?}"
        );
    }
}
