//! Debian packages for L1, fetched with `apt-get download` and unpacked with
//! `dpkg -x` into the cache (nothing is installed on the host).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::arch::Arch;
use crate::cache::Cache;
use crate::command::{run, CommandError};

/// The L1 kernel, pinned: Debian's 6.12 cloud kernel from bookworm-backports
/// (scripts/setup.sh adds that suite), chosen by the measurements in
/// docs/RIG.md, "The emulated host".
pub const L1_KERNEL_PACKAGE: &str = "linux-image-6.12.117+deb12-cloud-amd64-unsigned";
/// The pinned kernel's series, `(prefix, suffix)` around its ABI number:
/// when apt no longer has the pinned package, the newest of the series is
/// used and the report says so.
pub const L1_KERNEL_SERIES: (&str, &str) = ("linux-image-6.12.", "+deb12-cloud-amd64-unsigned");
/// Statically linked busybox: L1's whole userland.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Errors from fetching or unpacking packages.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("cannot use `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the kernel package {package} has no {what}")]
    KernelLayout { package: String, what: String },
    #[error("no L1 kernel package of the pinned series is available from apt ({0}); run scripts/setup.sh (it adds bookworm-backports)")]
    NoKernel(String),
}

/// An unpacked package.
#[derive(Clone, Debug)]
pub struct Unpacked {
    pub package: String,
    pub deb: PathBuf,
    pub root: PathBuf,
}

/// The L1 kernel: bzImage plus its module tree.
#[derive(Clone, Debug)]
pub struct L1Kernel {
    pub package: String,
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
    /// Set when the pinned package was unavailable and another was chosen.
    pub note: Option<String>,
}

/// Fetches (once) and unpacks (once) `package`. A package qualified with
/// an architecture (`busybox-static:arm64`) matches only that
/// architecture's cached `.deb` (or an `_all` one).
pub fn fetch(cache: &Cache, package: &str) -> Result<Unpacked, DebianError> {
    let deb = match cached_deb(&cache.debs(), package)? {
        Some(deb) => deb,
        None => download(&cache.debs(), package)?,
    };
    let stem = deb
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let root = cache.unpacked().join(&stem);
    if !root.join(".rig-complete").is_file() {
        unpack(&deb, &root)?;
    }
    Ok(Unpacked {
        package: package.to_string(),
        deb,
        root,
    })
}

/// `package` (`rig run --l1-kernel`), else `arch`'s pinned L1 kernel
/// ([`Arch::kernel_package`]), or the newest of its series when apt no
/// longer has the pinned ABI (recorded in [`L1Kernel::note`]). An explicitly
/// named package has no fallback: a measurement must run on the kernel it
/// names. Packages are fetched for `arch` (`PACKAGE:arm64`).
pub fn l1_kernel(
    cache: &Cache,
    arch: Arch,
    package: Option<&str>,
) -> Result<L1Kernel, DebianError> {
    let pinned = arch.kernel_package();
    let wanted = arch.qualify(package.unwrap_or(pinned));
    let (unpacked, note) = match (package, fetch(cache, &wanted)) {
        (_, Ok(unpacked)) => (unpacked, None),
        (Some(_), Err(err)) => return Err(err),
        (None, Err(pinned_err)) => {
            let newest = newest_in_series(arch.kernel_series())
                .map_err(|e| DebianError::NoKernel(format!("{pinned_err}; {e}")))?;
            let note = format!("{pinned} is unavailable ({pinned_err}); using {newest}");
            (fetch(cache, &arch.qualify(&newest))?, Some(note))
        }
    };
    let modules_dir = unpacked.root.join("lib/modules");
    let release = fs::read_dir(&modules_dir)
        .map_err(|source| DebianError::Io {
            path: modules_dir.clone(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| DebianError::KernelLayout {
            package: unpacked.package.clone(),
            what: "lib/modules/<release> directory".to_string(),
        })?;
    let vmlinuz = unpacked.root.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        return Err(DebianError::KernelLayout {
            package: unpacked.package,
            what: format!("boot/vmlinuz-{release}"),
        });
    }
    Ok(L1Kernel {
        package: unpacked.package,
        modules: modules_dir.join(&release),
        release,
        vmlinuz,
        note,
    })
}

/// The newest package of `series` apt knows.
fn newest_in_series(series: (&str, &str)) -> Result<String, DebianError> {
    let (prefix, suffix) = series;
    let pattern = format!("^{}[0-9]+{}$", regex_quote(prefix), regex_quote(suffix));
    let output = run(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    let names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect();
    newest(&names, series)
        .ok_or_else(|| DebianError::NoKernel(format!("apt-cache search '{pattern}' found none")))
}

/// The name in `names` with the highest ABI number between `series`'s prefix and suffix.
fn newest(names: &[String], (prefix, suffix): (&str, &str)) -> Option<String> {
    let abi = |name: &str| -> Option<u32> {
        name.strip_prefix(prefix)?
            .strip_suffix(suffix)?
            .parse()
            .ok()
    };
    names
        .iter()
        .filter_map(|name| abi(name).map(|n| (n, name.clone())))
        .max()
        .map(|(_, name)| name)
}

/// `text` with the regular-expression metacharacters apt-cache would see escaped.
fn regex_quote(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = ".+*?()[]{}^$|\\".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

fn cached_deb(debs: &Path, package: &str) -> Result<Option<PathBuf>, DebianError> {
    if !debs.is_dir() {
        return Ok(None);
    }
    let (name, arch) = match package.split_once(':') {
        Some((name, arch)) => (name, Some(arch)),
        None => (package, None),
    };
    let prefix = format!("{name}_");
    let mut found: Vec<PathBuf> = fs::read_dir(debs)
        .map_err(|source| DebianError::Io {
            path: debs.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            deb_matches(&name, &prefix, arch)
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

/// Whether the file `name` is a `.deb` of the package `<prefix>...` for
/// `arch` (any architecture when `None`): `<name>_<version>_<arch>.deb`.
fn deb_matches(name: &str, prefix: &str, arch: Option<&str>) -> bool {
    name.starts_with(prefix)
        && match arch {
            Some(arch) => name.ends_with(&format!("_{arch}.deb")) || name.ends_with("_all.deb"),
            None => name.ends_with(".deb"),
        }
}

/// `apt-get download` into a private directory, then moved into `debs`, so
/// a concurrent or interrupted run never sees a partial file. Runs
/// `apt-get update` once if apt cannot find the package.
fn download(debs: &Path, package: &str) -> Result<PathBuf, DebianError> {
    let staging = debs.join(format!(".download-{}", std::process::id()));
    fs::create_dir_all(&staging).map_err(|source| DebianError::Io {
        path: staging.clone(),
        source,
    })?;
    let get = || {
        run(Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&staging))
    };
    let result = get().or_else(|_| {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        get()
    });
    let moved = result.map_err(DebianError::from).and_then(|_| {
        let deb = cached_deb(&staging, package)?.ok_or_else(|| CommandError {
            command: format!("apt-get download {package}"),
            detail: "succeeded but left no .deb".to_string(),
        })?;
        let target = debs.join(deb.file_name().unwrap_or_default());
        fs::rename(&deb, &target).map_err(|source| DebianError::Io {
            path: target.clone(),
            source,
        })?;
        Ok(target)
    });
    let _ = fs::remove_dir_all(&staging);
    moved
}

fn unpack(deb: &Path, root: &Path) -> Result<(), DebianError> {
    let name = root.file_name().unwrap_or_default().to_string_lossy();
    let staging = root.with_file_name(format!(".{name}.unpacking-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|source| DebianError::Io {
        path: staging.clone(),
        source,
    })?;
    let dpkg = run(Command::new("dpkg").arg("-x").arg(deb).arg(&staging));
    let unpacked = dpkg.map_err(DebianError::from).and_then(|_| {
        fs::write(staging.join(".rig-complete"), b"").map_err(|source| DebianError::Io {
            path: staging.clone(),
            source,
        })
    });
    if let Err(err) = unpacked {
        let _ = fs::remove_dir_all(&staging);
        return Err(err);
    }
    let _ = fs::remove_dir_all(root);
    fs::rename(&staging, root).map_err(|source| DebianError::Io {
        path: root.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_of_the_series_by_abi_number() {
        let names: Vec<String> = [
            "linux-image-6.12.95+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.111+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.200+deb12-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            newest(&names, L1_KERNEL_SERIES).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64-unsigned")
        );
        assert_eq!(newest(&names[4..], L1_KERNEL_SERIES), None);
        assert_eq!(regex_quote("linux-image-6.12."), "linux-image-6\\.12\\.");
        assert_eq!(regex_quote("+deb12"), "\\+deb12");
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let (prefix, suffix) = arch.kernel_series();
            assert!(arch.kernel_package().starts_with(prefix));
            assert!(arch.kernel_package().ends_with(suffix));
        }
        let (prefix, suffix) = L1_KERNEL_SERIES;
        assert!(L1_KERNEL_PACKAGE.starts_with(prefix) && L1_KERNEL_PACKAGE.ends_with(suffix));
    }

    #[test]
    fn a_qualified_package_finds_only_its_architecture() {
        let amd64 = "busybox-static_1%3a1.35.0-4+b3_amd64.deb";
        let arm64 = "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb";
        let prefix = "busybox-static_";
        assert!(deb_matches(amd64, prefix, Some("amd64")));
        assert!(!deb_matches(arm64, prefix, Some("amd64")));
        assert!(deb_matches(arm64, prefix, Some("arm64")));
        assert!(deb_matches(arm64, prefix, None));
        assert!(deb_matches(
            "linux-source-6.1_6.1.192-3_all.deb",
            "linux-source-6.1_",
            Some("arm64")
        ));
        assert!(!deb_matches(
            "busybox-static_1.35_arm64.tar",
            prefix,
            Some("arm64")
        ));
    }
}
