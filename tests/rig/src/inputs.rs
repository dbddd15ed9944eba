//! The rig's inputs that come from the repository: a statically linked
//! `mercury`, the extra tools and the guest images a scenario declares.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::arch::Arch;
use crate::cache::Cache;
use crate::command::{run, CommandError};
use crate::elf::{Elf, ElfError};

/// The target whose binaries run in L1 without a dynamic loader.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The extra binaries a scenario can ask for (`# rig-tools:`), each
/// installed in L1 as `/bin/<name>`: static ones, and the host's QEMU with
/// its libraries as the control VMM ([`crate::control`]).
pub const TOOLS: [&str; 4] = [
    BOOT_HARNESS,
    COMPARE_VMM,
    crate::control::CONTROL_VMM,
    KVM_PROBE,
];
/// The boot-time harness (benches/), built for [`MUSL_TARGET`].
pub const BOOT_HARNESS: &str = "boot-harness";
/// A Firecracker-compatible VMM supplied by the user in [`COMPARE_WITH_ENV`];
/// optional: without it nothing is installed.
pub const COMPARE_VMM: &str = "compare-vmm";
/// Host path of the VMM installed as `/bin/compare-vmm`.
pub const COMPARE_WITH_ENV: &str = "RIG_COMPARE_WITH";
/// A static C program that runs a tiny VM on L1's KVM without mercury
/// (aarch64 only: `tests/rig/tools/kvm-probe-aarch64.c`, built with
/// `aarch64-linux-gnu-gcc -static`).
pub const KVM_PROBE: &str = "kvm-probe";
/// The source of [`KVM_PROBE`] for aarch64, relative to the repository.
pub const KVM_PROBE_AARCH64_SOURCE: &str = "tests/rig/tools/kvm-probe-aarch64.c";
/// The cross compiler for [`KVM_PROBE`] (Debian `gcc-aarch64-linux-gnu`
/// with `libc6-dev-arm64-cross`, from scripts/setup.sh).
pub const AARCH64_CC: &str = "aarch64-linux-gnu-gcc";
/// A static aarch64 `mercury` for aarch64 L1s (until the launcher builds
/// for aarch64 by default, the rig installs one only when this is set).
pub const MERCURY_BIN_AARCH64_ENV: &str = "MERCURY_BIN_AARCH64";

/// Errors from building or checking the rig's repository inputs.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("the control VMM cannot be shipped into L1: {0}")]
    ControlVmm(String),
    #[error("`{path}` is not an ELF executable")]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("guest image `{name}`: guest-images/build printed `{printed}`, which is not a file")]
    ImageMissing { name: String, printed: String },
    #[error("cannot read `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{0}` is dynamically linked (has PT_INTERP); L1 has no loader: build it for {MUSL_TARGET}"
    )]
    NotStatic(PathBuf),
    #[error("unknown rig tool `{0}`")]
    UnknownTool(String),
    #[error("rig tool `{tool}` is not available for {arch} L1s")]
    UnsupportedTool { tool: String, arch: Arch },
    #[error("`{path}` is not an {arch} binary")]
    WrongMachine { path: PathBuf, arch: Arch },
}

/// The `mercury` for an `arch` L1. x86_64: `$MERCURY_BIN` if set, else
/// `cargo build --release --target x86_64-unknown-linux-musl -p launcher`
/// in `repo`; aarch64: `$MERCURY_BIN_AARCH64` if set, else the same build
/// for aarch64-unknown-linux-musl (linked by .cargo/config.toml's
/// aarch64-linux-gnu-gcc). Either way the binary must be a static ELF of
/// `arch`.
pub fn mercury_binary(repo: &Path, arch: Arch) -> Result<PathBuf, InputError> {
    let env_name = match arch {
        Arch::X86_64 => "MERCURY_BIN",
        Arch::Aarch64 => MERCURY_BIN_AARCH64_ENV,
    };
    if let Some(bin) = env::var_os(env_name).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        check_static(&bin, arch)?;
        return Ok(bin);
    }
    build_static(repo, arch, "launcher", "mercury")
}

/// The host file for the rig tool `name` (one of [`TOOLS`]) in an `arch`
/// L1, or `None` when it is optional and not supplied: `boot-harness` is
/// built from `repo` like `mercury` (for either architecture);
/// `compare-vmm` is `$RIG_COMPARE_WITH`; `kvm-probe` is compiled from
/// [`KVM_PROBE_AARCH64_SOURCE`]. Either way it must be a static ELF of
/// `arch`.
pub fn tool_binary(repo: &Path, arch: Arch, name: &str) -> Result<Option<PathBuf>, InputError> {
    let unsupported = || InputError::UnsupportedTool {
        tool: name.to_string(),
        arch,
    };
    match (name, arch) {
        (BOOT_HARNESS, _) => build_static(repo, arch, "mercury-benches", BOOT_HARNESS).map(Some),
        (COMPARE_VMM, _) => {
            let Some(path) = env::var_os(COMPARE_WITH_ENV).filter(|v| !v.is_empty()) else {
                return Ok(None);
            };
            let path = PathBuf::from(path);
            check_static(&path, arch)?;
            Ok(Some(path))
        }
        (KVM_PROBE, Arch::Aarch64) => build_kvm_probe(repo).map(Some),
        (KVM_PROBE | crate::control::CONTROL_VMM, _) => Err(unsupported()),
        (other, _) => Err(InputError::UnknownTool(other.to_string())),
    }
}

/// `aarch64-linux-gnu-gcc -static` of [`KVM_PROBE_AARCH64_SOURCE`] into the
/// cargo target directory (it takes well under a second).
fn build_kvm_probe(repo: &Path) -> Result<PathBuf, InputError> {
    let dir = target_dir(repo).join("rig-tools");
    fs::create_dir_all(&dir).map_err(|source| InputError::Io {
        path: dir.clone(),
        source,
    })?;
    let out = dir.join("kvm-probe-aarch64");
    run(Command::new(AARCH64_CC)
        .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(repo.join(KVM_PROBE_AARCH64_SOURCE)))?;
    check_static(&out, Arch::Aarch64)?;
    Ok(out)
}

/// `$CARGO_TARGET_DIR`, else `repo/target`.
fn target_dir(repo: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"))
}

/// `cargo build --release --target x86_64-unknown-linux-musl -p PACKAGE
/// --bin BIN` in `repo`; the binary, checked to be static.
fn build_static(repo: &Path, arch: Arch, package: &str, bin: &str) -> Result<PathBuf, InputError> {
    let target = arch.musl_target();
    ensure_rust_target(target)?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    run(Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            target,
            "-p",
            package,
            "--bin",
            bin,
        ])
        .current_dir(repo))?;
    let path = target_dir(repo).join(target).join("release").join(bin);
    check_static(&path, arch)?;
    Ok(path)
}

/// `rustup target add` when `target` is missing (no-op without rustup: then
/// cargo reports the missing target itself).
fn ensure_rust_target(target: &str) -> Result<(), InputError> {
    let Ok(installed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        run(Command::new("rustup").args(["target", "add", target]))?;
    }
    Ok(())
}

/// Fails unless `path` is an ELF of `arch` without a program interpreter.
pub fn check_static(path: &Path, arch: Arch) -> Result<(), InputError> {
    let bytes = fs::read(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let elf = Elf::parse(&bytes).map_err(|source| InputError::Elf {
        path: path.to_path_buf(),
        source,
    })?;
    if elf.machine() != arch.elf_machine() {
        return Err(InputError::WrongMachine {
            path: path.to_path_buf(),
            arch,
        });
    }
    let dynamic = elf.has_interpreter().map_err(|source| InputError::Elf {
        path: path.to_path_buf(),
        source,
    })?;
    if dynamic {
        return Err(InputError::NotStatic(path.to_path_buf()));
    }
    Ok(())
}

/// Runs `guest-images/build <name>` (which caches by input hash) and returns
/// the path it printed on its last stdout line.
pub fn guest_image(repo: &Path, cache: &Cache, name: &str) -> Result<PathBuf, InputError> {
    let output = run(Command::new("bash")
        .arg(repo.join("guest-images/build"))
        .arg(name)
        .env("MERCURY_CACHE", cache.root())
        .current_dir(repo))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let path = repo.join(printed); // absolute paths replace `repo`
    if printed.is_empty() || !path.is_file() {
        return Err(InputError::ImageMissing {
            name: name.to_string(),
            printed: printed.to_string(),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tools_and_non_elf_files_are_refused() {
        let err = tool_binary(Path::new("/nonexistent"), Arch::X86_64, "gdb").unwrap_err();
        assert!(
            matches!(err, InputError::UnknownTool(ref t) if t == "gdb"),
            "{err}"
        );
        let err = tool_binary(Path::new("/nonexistent"), Arch::X86_64, KVM_PROBE).unwrap_err();
        assert!(
            matches!(
                err,
                InputError::UnsupportedTool {
                    arch: Arch::X86_64,
                    ..
                }
            ),
            "{err}"
        );
        let file = std::env::temp_dir().join(format!("rig-inputs-{}", std::process::id()));
        fs::write(&file, "#!/bin/sh\n").unwrap();
        let err = check_static(&file, Arch::X86_64).unwrap_err();
        fs::remove_file(&file).unwrap();
        assert!(matches!(err, InputError::Elf { .. }), "{err}");
    }

    #[test]
    fn a_binary_of_the_other_architecture_is_refused() {
        let file = std::env::temp_dir().join(format!("rig-inputs-arch-{}", std::process::id()));
        fs::write(&file, crate::elf::tests::build(false, &[])).unwrap();
        let x86 = check_static(&file, Arch::X86_64);
        let arm = check_static(&file, Arch::Aarch64).unwrap_err();
        fs::remove_file(&file).unwrap();
        assert!(x86.is_ok(), "{x86:?}");
        assert!(
            matches!(
                arm,
                InputError::WrongMachine {
                    arch: Arch::Aarch64,
                    ..
                }
            ),
            "{arm}"
        );
    }
}
