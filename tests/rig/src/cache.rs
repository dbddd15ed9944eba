//! Where the rig keeps downloads and run artefacts: `$MERCURY_CACHE/rig`
//! (default `~/.cache/mercury/rig`), never inside the repository.
//!
//! ```text
//! rig/debs/        .deb files fetched with `apt-get download`
//! rig/unpacked/    one `dpkg -x` tree per .deb, named after the file
//! rig/runs/        one work directory per run (initramfs, /init); removed unless --keep
//! rig/logs/        console logs, `<scenario>-<unix time>.log`; the newest are kept
//! ```

use std::env;
use std::path::{Path, PathBuf};

/// How many console logs to keep per scenario.
pub const LOGS_KEPT_PER_SCENARIO: usize = 20;

/// The cache root.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// `$MERCURY_CACHE`, else `$HOME/.cache/mercury`, else `/tmp/mercury-cache`.
    pub fn from_env() -> Self {
        let root = env::var_os("MERCURY_CACHE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cache/mercury")))
            .unwrap_or_else(|| PathBuf::from("/tmp/mercury-cache"));
        Cache { root }
    }

    /// A cache at an explicit root.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// `$MERCURY_CACHE` itself (shared with guest-images/build).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn debs(&self) -> PathBuf {
        self.root.join("rig/debs")
    }

    pub fn unpacked(&self) -> PathBuf {
        self.root.join("rig/unpacked")
    }

    pub fn runs(&self) -> PathBuf {
        self.root.join("rig/runs")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("rig/logs")
    }
}
