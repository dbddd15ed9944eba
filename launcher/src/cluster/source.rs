//! Where a cluster spec comes from, for `mercury cluster reconcile`: a file
//! on this host, or a file in a git repository (GitOps).
//!
//! A git source is fetched with libgit2 (no `git` binary) into a bare cache
//! repository under the state directory,
//! `<state_dir>/gitops/<hash of url and branch>/`, and the spec is read
//! from the fetched commit's tree: never from a work tree someone might be
//! editing. Each [`SpecSource::fetch`] fetches the branch again and says
//! where the text came from ([`Origin`]: the commit, or the file's content
//! hash), so the reconcile loop can tell a new spec from the one it applied
//! and name the commit in everything it logs.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use git2::{AutotagOption, Direction, FetchOptions, ProxyOptions, Repository};

/// The spec's path inside a repository unless `--path` says otherwise.
pub const DEFAULT_SPEC_PATH: &str = "cluster.yaml";
/// The branch used when none is given and the remote names no default.
pub const FALLBACK_BRANCH: &str = "main";
/// The cache directories' parent, under the state directory.
const CACHE_DIR: &str = "gitops";
/// The largest spec read. A cluster spec is a few KiB; this keeps a wrong
/// `--path` (a disk image committed by mistake) from being read whole.
const MAX_SPEC_BYTES: usize = 1 << 20;
/// Hex digits of a commit id in log lines, as `git log --oneline`.
const SHORT_COMMIT: usize = 7;
/// How long libgit2 waits to connect to, or to hear from, a git server
/// before a fetch fails (its default is to wait for ever, which would
/// hang the watcher on a dead network).
const NETWORK_TIMEOUT_MS: libc::c_int = 30_000;
/// Whether this build fetches over https: not the static musl build, which
/// has no OpenSSL to link (see launcher/Cargo.toml).
const HTTPS: bool = cfg!(not(target_env = "musl"));

/// Where a spec comes from.
#[derive(Debug)]
pub enum SpecSource {
    /// A file on this host, read again on each fetch.
    File(PathBuf),
    /// A file in a git repository, fetched on each fetch.
    Git(GitSource),
}

/// A spec as fetched, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The spec file's text (not parsed yet).
    pub text: String,
    pub origin: Origin,
}

/// Where a fetched spec came from, for logs and change detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local file.
    File {
        path: PathBuf,
        /// The file's modification time, when the file system has one.
        modified: Option<SystemTime>,
        /// FNV-1a of the file's bytes.
        content_hash: u64,
    },
    /// A file in a commit of a git repository.
    Git {
        /// The repository's URL or path, as given.
        url: String,
        /// The branch the commit is the tip of.
        branch: String,
        /// The spec's path inside the repository.
        path: String,
        /// The full commit id (40 hex digits).
        commit: String,
    },
}

impl Origin {
    /// The first 7 hex digits of the commit; `None` for a file.
    pub fn short_commit(&self) -> Option<&str> {
        match self {
            Origin::Git { commit, .. } => Some(&commit[..SHORT_COMMIT.min(commit.len())]),
            Origin::File { .. } => None,
        }
    }
}

/// `commit 1a2b3c4 (main:cluster.yaml)` or `file cluster.yaml (content
/// 0123456789abcdef)`.
impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File {
                path, content_hash, ..
            } => write!(f, "file {} (content {content_hash:016x})", path.display()),
            Origin::Git { branch, path, .. } => write!(
                f,
                "commit {} ({branch}:{path})",
                self.short_commit().unwrap_or_default()
            ),
        }
    }
}

/// A spec that cannot be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Another `mercury cluster reconcile` uses the same cache.
    #[error(
        "{} is in use by another mercury cluster reconcile for the same repository and branch",
        dir.display()
    )]
    Busy { dir: PathBuf },
    #[error("cannot set up the git cache {}: {source}", dir.display())]
    Cache {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The fetch worked, but what the commit (or file) holds is not a spec
    /// file: no such path, a directory, not UTF-8, too large.
    #[error("{origin}: {message}")]
    Content { origin: Origin, message: String },
    #[error("cannot {what} {url}: {}", source.message())]
    Git {
        what: &'static str,
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("{url} has no branch {branch:?}")]
    NoBranch { url: String, branch: String },
    #[error("cannot read cluster spec {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SourceError {
    /// The commit or file the error is about, when one was fetched: such an
    /// error is the spec's fault (like an invalid spec), not the fetch's.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            SourceError::Content { origin, .. } => Some(origin),
            _ => None,
        }
    }
}

/// Bad `--git`/`--branch`/`--path` values: user input, refused before
/// anything is created.
#[derive(Debug, thiserror::Error)]
pub enum GitSourceError {
    #[error("--branch {0:?} is not a branch name")]
    Branch(String),
    #[error("--git: the repository URL or path is empty")]
    EmptyUrl,
    #[error("--git {0}: this mercury (a static musl build) cannot fetch over https; use a local path or a file:// URL")]
    NoHttps(String),
    #[error(
        "--path {0:?} must be a relative path inside the repository, without `..` (like clusters/edge1.yaml)"
    )]
    Path(String),
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl SpecSource {
    /// Fetches the spec: reads the file, or fetches the branch and reads
    /// the spec from its tip commit.
    pub fn fetch(&mut self) -> Result<Fetched, SourceError> {
        match self {
            SpecSource::File(path) => fetch_file(path),
            SpecSource::Git(git) => git.fetch(),
        }
    }

    /// What this source is, for the first log line: `file cluster.yaml`,
    /// `git URL branch main path cluster.yaml`.
    pub fn describe(&self) -> String {
        match self {
            SpecSource::File(path) => format!("file {}", path.display()),
            SpecSource::Git(git) => format!(
                "git {} branch {} path {} (cache {})",
                git.url,
                git.branch.as_deref().unwrap_or("(the remote's default)"),
                git.path,
                git.cache_dir().display()
            ),
        }
    }
}

fn fetch_file(path: &Path) -> Result<Fetched, SourceError> {
    let read_error = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = fs::read(path).map_err(read_error)?;
    let modified = fs::metadata(path).and_then(|m| m.modified()).ok();
    let origin = Origin::File {
        path: path.to_path_buf(),
        modified,
        content_hash: devices::fnv1a64(bytes.iter().copied()),
    };
    let text = spec_text(bytes, &origin)?;
    Ok(Fetched { text, origin })
}

/// Checks a spec file's size and encoding.
fn spec_text(bytes: Vec<u8>, origin: &Origin) -> Result<String, SourceError> {
    let content = |message: String| SourceError::Content {
        origin: origin.clone(),
        message,
    };
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(content(format!(
            "the spec is {} bytes; a cluster spec is at most {MAX_SPEC_BYTES}",
            bytes.len()
        )));
    }
    String::from_utf8(bytes).map_err(|e| content(format!("the spec is not UTF-8 text: {e}")))
}

/// A spec in a git repository, with its cache.
pub struct GitSource {
    url: String,
    /// `None`: the remote's default branch, else [`FALLBACK_BRANCH`].
    branch: Option<String>,
    path: String,
    repo: Repository,
    /// Holds the cache's lock (`flock`) while this source lives.
    _lock: File,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &self.url)
            .field("branch", &self.branch)
            .field("path", &self.path)
            .field("cache", &self.repo.path())
            .finish_non_exhaustive()
    }
}

impl GitSource {
    /// Checks the arguments and opens (or creates) the cache repository
    /// under `<state_dir>/gitops/`, locking it against a second reconciler.
    /// `url` is a URL libgit2 fetches from (`https://`, `file://`) or the
    /// path of a local repository; `path` defaults to
    /// [`DEFAULT_SPEC_PATH`].
    pub fn open(
        url: &str,
        branch: Option<&str>,
        path: Option<&str>,
        state_dir: &Path,
    ) -> Result<Self, GitSourceError> {
        if url.trim().is_empty() {
            return Err(GitSourceError::EmptyUrl);
        }
        if !HTTPS && url.starts_with("https://") {
            return Err(GitSourceError::NoHttps(url.to_string()));
        }
        if let Some(b) = branch {
            if !git2::Reference::is_valid_name(&format!("refs/heads/{b}")) {
                return Err(GitSourceError::Branch(b.to_string()));
            }
        }
        let path = spec_path(path.unwrap_or(DEFAULT_SPEC_PATH))?;
        // A local path is fetched by its absolute name, so the cache (and
        // what it is keyed by) does not depend on the working directory.
        let url = match fs::canonicalize(url) {
            Ok(abs) if !url.contains("://") => abs.to_string_lossy().into_owned(),
            _ => url.to_string(),
        };
        let key = format!("{url}\n{}", branch.unwrap_or(""));
        let name = format!("{:016x}", devices::fnv1a64(key.bytes()));
        let parent = state_dir.join(CACHE_DIR);
        let cache = parent.join(&name);
        fs::create_dir_all(&parent).map_err(|source| SourceError::Cache {
            dir: parent.clone(),
            source,
        })?;
        let lock = lock_cache(&parent.join(format!("{name}.lock")), &cache)?;
        let repo = open_cache(&cache).map_err(|source| SourceError::Git {
            what: "create the cache repository for",
            url: url.clone(),
            source,
        })?;
        Ok(GitSource {
            url,
            branch: branch.map(str::to_string),
            path,
            repo,
            _lock: lock,
        })
    }

    /// The cache repository's directory.
    pub fn cache_dir(&self) -> &Path {
        self.repo.path()
    }

    /// Sets libgit2's connect and read timeouts ([`NETWORK_TIMEOUT_MS`]),
    /// so a fetch from an unreachable server fails instead of hanging.
    ///
    /// # Safety
    /// Writes libgit2 globals without synchronisation: call it before any
    /// other thread exists.
    pub unsafe fn set_network_timeouts() -> Result<(), git2::Error> {
        // SAFETY: the caller guarantees no other thread exists.
        unsafe {
            git2::opts::set_server_connect_timeout_in_milliseconds(NETWORK_TIMEOUT_MS)?;
            git2::opts::set_server_timeout_in_milliseconds(NETWORK_TIMEOUT_MS)
        }
    }

    fn git_error(&self, what: &'static str) -> impl FnOnce(git2::Error) -> SourceError + '_ {
        move |source| SourceError::Git {
            what,
            url: self.url.clone(),
            source,
        }
    }

    /// Fetches the branch's tip and reads the spec from its tree.
    fn fetch(&mut self) -> Result<Fetched, SourceError> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(self.git_error("use"))?;
        let mut proxy = ProxyOptions::new();
        proxy.auto();
        let mut connection = remote
            .connect_auth(Direction::Fetch, None, Some(proxy))
            .map_err(self.git_error("connect to"))?;
        let branch = match &self.branch {
            Some(b) => b.clone(),
            None => default_branch(&connection),
        };
        let want = format!("refs/heads/{branch}");
        let tip = connection
            .list()
            .map_err(self.git_error("list the branches of"))?
            .iter()
            .find(|head| head.name() == want)
            .map(|head| head.oid())
            .ok_or_else(|| SourceError::NoBranch {
                url: self.url.clone(),
                branch: branch.clone(),
            })?;
        let tracking = format!("refs/remotes/origin/{branch}");
        if self.repo.find_commit(tip).is_err() {
            let mut options = FetchOptions::new();
            options.download_tags(AutotagOption::None);
            let mut proxy = ProxyOptions::new();
            proxy.auto();
            options.proxy_options(proxy);
            connection
                .remote()
                .download(&[format!("+{want}:{tracking}")], Some(&mut options))
                .map_err(self.git_error("fetch from"))?;
        }
        drop(connection);
        // The tracking ref keeps the fetched commit reachable in the cache.
        self.repo
            .reference(&tracking, tip, true, "mercury cluster reconcile: fetch")
            .map_err(self.git_error("record the fetched commit of"))?;
        let origin = Origin::Git {
            url: self.url.clone(),
            branch,
            path: self.path.clone(),
            commit: tip.to_string(),
        };
        let bytes = self.read_spec(tip, &origin)?;
        let text = spec_text(bytes, &origin)?;
        Ok(Fetched { text, origin })
    }

    /// The spec file's bytes in commit `tip`.
    fn read_spec(&self, tip: git2::Oid, origin: &Origin) -> Result<Vec<u8>, SourceError> {
        let content = |message: String| SourceError::Content {
            origin: origin.clone(),
            message,
        };
        let commit = self
            .repo
            .find_commit(tip)
            .map_err(|e| content(format!("the fetched tip is not a commit: {}", e.message())))?;
        let tree = commit
            .tree()
            .map_err(self.git_error("read the fetched commit of"))?;
        let entry = tree
            .get_path(Path::new(&self.path))
            .map_err(|_| content(format!("the commit has no {}", self.path)))?;
        let object = entry
            .to_object(&self.repo)
            .map_err(self.git_error("read the fetched commit of"))?;
        let blob = object
            .as_blob()
            .ok_or_else(|| content(format!("{} is not a file in the commit", self.path)))?;
        Ok(blob.content().to_vec())
    }
}

/// The branch the remote's HEAD points at, else [`FALLBACK_BRANCH`].
fn default_branch(connection: &git2::RemoteConnection<'_, '_, '_>) -> String {
    connection
        .default_branch()
        .ok()
        .and_then(|buf| buf.as_str().ok().map(str::to_string))
        .and_then(|name| name.strip_prefix("refs/heads/").map(str::to_string))
        .unwrap_or_else(|| FALLBACK_BRANCH.to_string())
}

/// `--path`, normalised: relative, no `..`, no `.` components.
fn spec_path(given: &str) -> Result<String, GitSourceError> {
    let mut parts = Vec::new();
    for component in Path::new(given).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(GitSourceError::Path(given.to_string())),
        }
    }
    if parts.is_empty() {
        return Err(GitSourceError::Path(given.to_string()));
    }
    Ok(parts.join("/"))
}

/// Takes the cache's lock file, without waiting.
fn lock_cache(lock: &Path, cache: &Path) -> Result<File, SourceError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(|source| SourceError::Cache {
            dir: lock.to_path_buf(),
            source,
        })?;
    // SAFETY: flock on a file descriptor this function owns (open above).
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(SourceError::Busy {
                dir: cache.to_path_buf(),
            });
        }
        return Err(SourceError::Cache {
            dir: lock.to_path_buf(),
            source: e,
        });
    }
    Ok(file)
}

/// Opens the bare cache repository, creating it when absent. The cache
/// holds nothing that cannot be fetched again, so one that does not open
/// (a crash while it was being made) is made anew.
fn open_cache(cache: &Path) -> Result<Repository, git2::Error> {
    if let Ok(repo) = Repository::open_bare(cache) {
        return Ok(repo);
    }
    let _ = fs::remove_dir_all(cache);
    Repository::init_bare(cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_paths_are_relative_and_normalised() {
        assert_eq!(spec_path("cluster.yaml").unwrap(), "cluster.yaml");
        assert_eq!(spec_path("./a//b.yaml").unwrap(), "a/b.yaml");
        for bad in ["", ".", "/etc/cluster.yaml", "../cluster.yaml", "a/../b"] {
            let e = spec_path(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn origins_name_the_short_commit_or_the_content_hash() {
        let git = Origin::Git {
            url: "https://example.invalid/r.git".into(),
            branch: "main".into(),
            path: "cluster.yaml".into(),
            commit: "1a2b3c4d5e6f708192a3b4c5d6e7f80910111213".into(),
        };
        assert_eq!(git.to_string(), "commit 1a2b3c4 (main:cluster.yaml)");
        assert_eq!(git.short_commit(), Some("1a2b3c4"));
        let file = Origin::File {
            path: "c.yaml".into(),
            modified: None,
            content_hash: 0xab,
        };
        assert_eq!(file.to_string(), "file c.yaml (content 00000000000000ab)");
        assert_eq!(file.short_commit(), None);
    }
}
