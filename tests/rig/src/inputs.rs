//! The rig's inputs that come from the repository: a statically linked
//! `mercury`, the extra tools and the guest images a scenario declares.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::Cache;
use crate::command::{run, CommandError};
use crate::elf::{Elf, ElfError, EM_X86_64};

/// The target whose binaries run in L1 without a dynamic loader.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The extra binaries a scenario can ask for (`# rig-tools:`), each
/// installed in L1 as `/bin/<name>`: static ones, and the host's QEMU with
/// its libraries as the control VMM ([`crate::control`]).
pub const TOOLS: [&str; 3] = [BOOT_HARNESS, COMPARE_VMM, crate::control::CONTROL_VMM];
/// The boot-time harness (benches/), built for [`MUSL_TARGET`].
pub const BOOT_HARNESS: &str = "boot-harness";
/// A Firecracker-compatible VMM supplied by the user in [`COMPARE_WITH_ENV`];
/// optional: without it nothing is installed.
pub const COMPARE_VMM: &str = "compare-vmm";
/// Host path of the VMM installed as `/bin/compare-vmm`.
pub const COMPARE_WITH_ENV: &str = "RIG_COMPARE_WITH";

/// Errors from building or checking the rig's repository inputs.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("the control VMM cannot be shipped into L1: {0}")]
    ControlVmm(String),
    #[error("`{path}` is not an x86_64 ELF executable")]
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
    #[error("`{0}` is not an x86_64 binary")]
    WrongMachine(PathBuf),
}

/// `$MERCURY_BIN` if set, else `cargo build --release --target
/// x86_64-unknown-linux-musl -p launcher` in `repo`. Either way the binary
/// must be a static x86_64 ELF.
pub fn mercury_binary(repo: &Path) -> Result<PathBuf, InputError> {
    if let Some(bin) = env::var_os("MERCURY_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        check_static(&bin)?;
        return Ok(bin);
    }
    build_static(repo, "launcher", "mercury")
}

/// The host file for the rig tool `name` (one of [`TOOLS`]), or `None` when
/// it is optional and not supplied: `boot-harness` is built from `repo`
/// like `mercury`; `compare-vmm` is `$RIG_COMPARE_WITH`. Either way it must
/// be a static x86_64 ELF.
pub fn tool_binary(repo: &Path, name: &str) -> Result<Option<PathBuf>, InputError> {
    match name {
        BOOT_HARNESS => build_static(repo, "mercury-benches", BOOT_HARNESS).map(Some),
        COMPARE_VMM => {
            let Some(path) = env::var_os(COMPARE_WITH_ENV).filter(|v| !v.is_empty()) else {
                return Ok(None);
            };
            let path = PathBuf::from(path);
            check_static(&path)?;
            Ok(Some(path))
        }
        other => Err(InputError::UnknownTool(other.to_string())),
    }
}

/// `cargo build --release --target x86_64-unknown-linux-musl -p PACKAGE
/// --bin BIN` in `repo`; the binary, checked to be static.
fn build_static(repo: &Path, package: &str, bin: &str) -> Result<PathBuf, InputError> {
    ensure_musl_target()?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    run(Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            MUSL_TARGET,
            "-p",
            package,
            "--bin",
            bin,
        ])
        .current_dir(repo))?;
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let path = target_dir.join(MUSL_TARGET).join("release").join(bin);
    check_static(&path)?;
    Ok(path)
}

/// `rustup target add` when the musl target is missing (no-op without rustup:
/// then cargo reports the missing target itself).
fn ensure_musl_target() -> Result<(), InputError> {
    let Ok(installed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == MUSL_TARGET)
    {
        run(Command::new("rustup").args(["target", "add", MUSL_TARGET]))?;
    }
    Ok(())
}

/// Fails unless `path` is an x86_64 ELF without a program interpreter.
pub fn check_static(path: &Path) -> Result<(), InputError> {
    let bytes = fs::read(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let elf = Elf::parse(&bytes).map_err(|source| InputError::Elf {
        path: path.to_path_buf(),
        source,
    })?;
    if elf.machine() != EM_X86_64 {
        return Err(InputError::WrongMachine(path.to_path_buf()));
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
        let err = tool_binary(Path::new("/nonexistent"), "gdb").unwrap_err();
        assert!(
            matches!(err, InputError::UnknownTool(ref t) if t == "gdb"),
            "{err}"
        );
        let file = std::env::temp_dir().join(format!("rig-inputs-{}", std::process::id()));
        fs::write(&file, "#!/bin/sh\n").unwrap();
        let err = check_static(&file).unwrap_err();
        fs::remove_file(&file).unwrap();
        assert!(matches!(err, InputError::Elf { .. }), "{err}");
    }
}
