//! The reconcile loop against real git repositories, made with libgit2 in
//! temporary directories, and a fake converger that records what it got.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use git2::{Oid, Repository, RepositoryInitOptions, Signature};
use mercury_tests::TempDir;

use super::*;
use crate::cluster::fixtures::EXAMPLE;
use crate::cluster::source::{GitSource, SourceError};
use crate::cluster::spec::WorkerPool;

/// A bare repository to commit specs to, without a work tree.
struct Remote {
    repo: Repository,
}

impl Remote {
    fn new(dir: &Path) -> Self {
        Remote::with_head(dir, "main")
    }

    /// A repository whose HEAD (its default branch) is `head`.
    fn with_head(dir: &Path, head: &str) -> Self {
        let mut options = RepositoryInitOptions::new();
        options.bare(true).initial_head(head);
        Remote {
            repo: Repository::init_opts(dir, &options).unwrap(),
        }
    }

    fn url(&self) -> String {
        self.repo.path().to_string_lossy().into_owned()
    }

    /// Commits `files` (path, text) as the whole tree of a new commit on
    /// `branch`; returns the commit id.
    fn commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> Oid {
        let mut root = self.repo.treebuilder(None).unwrap();
        let mut dirs: BTreeMap<&str, Vec<(&str, Oid)>> = BTreeMap::new();
        for (path, text) in files {
            let blob = self.repo.blob(text.as_bytes()).unwrap();
            match path.split_once('/') {
                Some((dir, name)) => dirs.entry(dir).or_default().push((name, blob)),
                None => {
                    root.insert(path, blob, 0o100644).unwrap();
                }
            }
        }
        for (dir, entries) in dirs {
            let mut sub = self.repo.treebuilder(None).unwrap();
            for (name, blob) in entries {
                sub.insert(name, blob, 0o100644).unwrap();
            }
            root.insert(dir, sub.write().unwrap(), 0o040000).unwrap();
        }
        let tree = self.repo.find_tree(root.write().unwrap()).unwrap();
        let refname = format!("refs/heads/{branch}");
        let parent = self
            .repo
            .find_reference(&refname)
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let who = Signature::now("mercury test", "test@example.invalid").unwrap();
        self.repo
            .commit(Some(&refname), &who, &who, message, &tree, &parents)
            .unwrap()
    }

    fn commit_spec(&self, text: &str, message: &str) -> Oid {
        self.commit("main", &[("cluster.yaml", text)], message)
    }
}

/// The example spec with the `general` pool at `count` nodes.
fn spec_with_pool(count: u32) -> String {
    let text = EXAMPLE.replace("      count: 2\n", &format!("      count: {count}\n"));
    assert_eq!(
        count == 2,
        text == EXAMPLE,
        "the example's pool has 2 nodes"
    );
    text
}

fn pool_count(spec: &ClusterSpec) -> u32 {
    match &spec.spec.workers[0] {
        WorkerPool::Microvm(p) => p.count,
        WorkerPool::Baremetal(_) => panic!("the example's first pool is microvm"),
    }
}

/// Records every converge; fails while `fail` is above zero.
#[derive(Default)]
struct Recorder {
    calls: Vec<(ClusterSpec, Origin)>,
    fail: u32,
    /// Told after each converge.
    notify: Option<mpsc::Sender<()>>,
    /// Run inside each converge (to raise a signal mid-converge).
    during: Option<Box<dyn FnMut() + Send>>,
}

impl Converge for Recorder {
    fn converge(&mut self, spec: &ClusterSpec, origin: &Origin) -> Result<ConvergeReport, String> {
        if let Some(during) = &mut self.during {
            during();
        }
        self.calls.push((spec.clone(), origin.clone()));
        if let Some(tx) = &self.notify {
            let _ = tx.send(());
        }
        if self.fail > 0 {
            self.fail -= 1;
            return Err("the bridge mbr-edge1 cannot be created".into());
        }
        Ok(ConvergeReport {
            actions: vec![format!("create {}-general-0", spec.metadata.name)],
            changed: true,
        })
    }
}

/// A log the test can read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn options() -> Options {
    Options {
        interval: Duration::from_secs(30),
        resync: Duration::from_secs(300),
        max_backoff: Duration::from_secs(300),
        file_checks: false,
    }
}

/// A reconciler on `remote`'s default branch, its cache under `state`.
fn reconciler(
    remote: &Remote,
    state: &Path,
    converger: Recorder,
) -> (Reconciler<Recorder>, Captured) {
    let source = GitSource::open(&remote.url(), None, None, state).unwrap();
    let log = Captured::default();
    let r = Reconciler::new(
        SpecSource::Git(source),
        converger,
        options(),
        Log::new(Box::new(log.clone()), true),
    );
    (r, log)
}

/// A reconciler of `source` with a fresh [`Recorder`], its log thrown away.
fn unlogged(source: SpecSource) -> Reconciler<Recorder> {
    Reconciler::new(
        source,
        Recorder::default(),
        options(),
        Log::new(Box::new(io::sink()), false),
    )
}

/// Polls `r` once; what it converged from, or a panic naming what happened
/// instead.
fn converged_origin(r: &mut Reconciler<Recorder>) -> Origin {
    let outcome = r.poll(Instant::now(), &mut NoStop);
    let Outcome::Converged { origin, .. } = outcome else {
        panic!("{outcome:?}")
    };
    origin
}

fn commit_of(origin: &Origin) -> &str {
    match origin {
        Origin::Git { commit, .. } => commit,
        Origin::File { .. } => panic!("not a git origin: {origin}"),
    }
}

#[test]
fn a_valid_commit_is_converged_once_with_that_commits_spec() {
    let dir = TempDir::new("gitops-valid");
    let remote = Remote::new(&dir.path().join("remote.git"));
    let c1 = remote.commit_spec(EXAMPLE, "edge1");
    let (mut r, log) = reconciler(&remote, &dir.path().join("state"), Recorder::default());
    let t0 = Instant::now();

    let outcome = r.poll(t0, &mut NoStop);
    let Outcome::Converged { origin, resync, .. } = outcome else {
        panic!("{outcome:?}\n{}", log.text())
    };
    assert!(!resync);
    assert_eq!(commit_of(&origin), c1.to_string());
    assert_eq!(r.converger().calls.len(), 1);
    assert_eq!(
        r.converger().calls[0].0,
        ClusterSpec::from_yaml(EXAMPLE).unwrap()
    );
    assert!(
        log.text().contains(&format!(
            " reconcile: commit {} (main:cluster.yaml): create edge1-general-0\n",
            &c1.to_string()[..7]
        )),
        "{}",
        log.text()
    );
    // Fetched into the cache under the state directory.
    assert!(dir.path().join("state/gitops").is_dir());

    // Nothing new: not converged again.
    assert_eq!(
        r.poll(t0 + Duration::from_secs(30), &mut NoStop),
        Outcome::Unchanged
    );
    assert_eq!(r.converger().calls.len(), 1);
}

#[test]
fn a_commit_that_scales_a_pool_is_converged_with_the_new_count() {
    let dir = TempDir::new("gitops-scale");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(&spec_with_pool(2), "two workers");
    let (mut r, log) = reconciler(&remote, &dir.path().join("state"), Recorder::default());
    let t0 = Instant::now();
    assert!(matches!(r.poll(t0, &mut NoStop), Outcome::Converged { .. }));

    let c2 = remote.commit_spec(&spec_with_pool(3), "three workers");
    let outcome = r.poll(t0 + Duration::from_secs(30), &mut NoStop);
    assert!(
        matches!(outcome, Outcome::Converged { resync: false, .. }),
        "{outcome:?}"
    );
    let calls = &r.converger().calls;
    assert_eq!(calls.len(), 2, "{}", log.text());
    assert_eq!(pool_count(&calls[0].0), 2);
    assert_eq!(pool_count(&calls[1].0), 3);
    assert_eq!(commit_of(&calls[1].1), c2.to_string());
    assert_eq!(commit_of(r.last_good().unwrap().1), c2.to_string());
}

#[test]
fn a_broken_commit_is_not_applied_and_a_fixed_one_is() {
    let dir = TempDir::new("gitops-broken");
    let remote = Remote::new(&dir.path().join("remote.git"));
    let c1 = remote.commit_spec(EXAMPLE, "good");
    let (mut r, log) = reconciler(&remote, &dir.path().join("state"), Recorder::default());
    let t0 = Instant::now();
    r.poll(t0, &mut NoStop);
    assert_eq!(r.converger().calls.len(), 1);

    // An invalid CIDR (a syntax error serde reports with the field).
    let bad_cidr = EXAMPLE.replace("cidr: 10.42.0.0/24", "cidr: 10.42.0.0/33");
    let c2 = remote.commit_spec(&bad_cidr, "bad cidr");
    let outcome = r.poll(t0 + Duration::from_secs(30), &mut NoStop);
    let Outcome::Invalid { origin, errors } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(commit_of(&origin), c2.to_string());
    assert!(errors[0].contains("spec.network.cidr"), "{errors:?}");
    assert_eq!(
        r.converger().calls.len(),
        1,
        "an invalid spec is never acted on"
    );
    assert_eq!(commit_of(r.last_good().unwrap().1), c1.to_string());
    let short2 = &c2.to_string()[..7];
    let text = log.text();
    assert!(
        text.contains(&format!(
            "commit {short2} (main:cluster.yaml): invalid: spec.network.cidr"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "commit {short2} (main:cluster.yaml): not applied (1 error(s)); keeping the spec from commit {}",
            &c1.to_string()[..7]
        )),
        "{text}"
    );

    // An unknown field.
    let unknown = EXAMPLE.replace(
        "    bridge: mbr-edge1",
        "    colour: blue\n    bridge: mbr-edge1",
    );
    let c3 = remote.commit_spec(&unknown, "unknown field");
    let outcome = r.poll(t0 + Duration::from_secs(60), &mut NoStop);
    let Outcome::Invalid { errors, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        errors[0].contains("spec.network") && errors[0].contains("unknown field `colour`"),
        "{errors:?}"
    );
    assert_eq!(r.converger().calls.len(), 1);
    // The same broken commit again: logged once, at debug the second time.
    r.poll(t0 + Duration::from_secs(90), &mut NoStop);
    let short3 = &c3.to_string()[..7];
    let text = log.text();
    assert_eq!(
        text.matches(&format!("commit {short3} (main:cluster.yaml): invalid:"))
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "commit {short3} (main:cluster.yaml): still invalid"
        )),
        "{text}"
    );

    // A semantic error (validate, not serde): a pod CIDR over the nodes'.
    let overlap = EXAMPLE.replace("podCidr: 10.244.0.0/16", "podCidr: 10.42.0.0/16");
    let c4 = remote.commit_spec(&overlap, "overlap");
    let outcome = r.poll(t0 + Duration::from_secs(120), &mut NoStop);
    assert!(
        matches!(&outcome, Outcome::Invalid { origin, errors }
            if commit_of(origin) == c4.to_string()
            && errors.iter().any(|e| e.starts_with("spec.kubernetes.podCidr"))),
        "{outcome:?}"
    );
    assert_eq!(r.converger().calls.len(), 1);

    // Fixed: converged again, from the fixing commit.
    let c5 = remote.commit_spec(&spec_with_pool(3), "fixed, and three workers");
    let outcome = r.poll(t0 + Duration::from_secs(150), &mut NoStop);
    assert!(matches!(outcome, Outcome::Converged { .. }), "{outcome:?}");
    let calls = &r.converger().calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(pool_count(&calls[1].0), 3);
    assert_eq!(commit_of(&calls[1].1), c5.to_string());
}

#[test]
fn a_commit_without_the_spec_file_is_invalid_and_names_the_commit() {
    let dir = TempDir::new("gitops-nofile");
    let remote = Remote::new(&dir.path().join("remote.git"));
    let c1 = remote.commit("main", &[("README", "no spec here")], "empty");
    let (mut r, log) = reconciler(&remote, &dir.path().join("state"), Recorder::default());
    let outcome = r.poll(Instant::now(), &mut NoStop);
    let Outcome::Invalid { origin, errors } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(commit_of(&origin), c1.to_string());
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].ends_with("the commit has no cluster.yaml"),
        "{errors:?}"
    );
    assert!(log.text().contains("nothing applied yet"), "{}", log.text());
    assert!(r.converger().calls.is_empty());
}

#[test]
fn a_spec_in_a_subdirectory_on_a_named_branch_is_read_from_that_branch() {
    let dir = TempDir::new("gitops-branch");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(&spec_with_pool(1), "main has one");
    let c = remote.commit(
        "edge",
        &[("clusters/edge1.yaml", &spec_with_pool(4))],
        "edge has four",
    );
    let state = dir.path().join("state");
    let source = GitSource::open(
        &remote.url(),
        Some("edge"),
        Some("./clusters/edge1.yaml"),
        &state,
    )
    .unwrap();
    let mut r = unlogged(SpecSource::Git(source));
    let origin = converged_origin(&mut r);
    assert_eq!(
        origin.to_string(),
        format!("commit {} (edge:clusters/edge1.yaml)", &c.to_string()[..7])
    );
    assert_eq!(pool_count(&r.converger().calls[0].0), 4);
}

#[test]
fn without_a_branch_the_remotes_default_branch_is_followed() {
    let dir = TempDir::new("gitops-default");
    let remote = Remote::with_head(&dir.path().join("remote.git"), "trunk");
    remote.commit(
        "main",
        &[("cluster.yaml", &spec_with_pool(1))],
        "not the default",
    );
    let c = remote.commit(
        "trunk",
        &[("cluster.yaml", &spec_with_pool(3))],
        "the default",
    );
    // Through a file:// URL this time.
    let url = format!("file://{}", remote.url());
    let source = GitSource::open(&url, None, None, &dir.path().join("state")).unwrap();
    let mut r = unlogged(SpecSource::Git(source));
    let origin = converged_origin(&mut r);
    assert_eq!(
        origin,
        Origin::Git {
            url,
            branch: "trunk".into(),
            path: "cluster.yaml".into(),
            commit: c.to_string(),
        }
    );
    assert_eq!(pool_count(&r.converger().calls[0].0), 3);
}

#[test]
fn a_new_commit_with_the_same_spec_is_not_converged_again() {
    let dir = TempDir::new("gitops-same");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(EXAMPLE, "spec");
    let (mut r, log) = reconciler(&remote, &dir.path().join("state"), Recorder::default());
    let t0 = Instant::now();
    r.poll(t0, &mut NoStop);
    let c2 = remote.commit(
        "main",
        &[("cluster.yaml", EXAMPLE), ("README", "docs")],
        "docs only",
    );
    assert_eq!(
        r.poll(t0 + Duration::from_secs(30), &mut NoStop),
        Outcome::Unchanged
    );
    assert_eq!(r.converger().calls.len(), 1);
    assert_eq!(commit_of(r.last_good().unwrap().1), c2.to_string());
    assert!(log.text().contains("same spec as commit"), "{}", log.text());
}

#[test]
fn an_unchanged_spec_is_converged_again_on_resync() {
    let dir = TempDir::new("gitops-resync");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(EXAMPLE, "spec");
    let (mut r, log) = reconciler(&remote, &dir.path().join("state"), Recorder::default());
    let t0 = Instant::now();
    r.poll(t0, &mut NoStop);
    assert_eq!(
        r.poll(t0 + Duration::from_secs(299), &mut NoStop),
        Outcome::Unchanged
    );
    let outcome = r.poll(t0 + Duration::from_secs(300), &mut NoStop);
    assert!(
        matches!(outcome, Outcome::Converged { resync: true, .. }),
        "{outcome:?}"
    );
    assert_eq!(r.converger().calls.len(), 2);
    assert!(
        log.text().contains("resync (converging again every 5m)"),
        "{}",
        log.text()
    );
    // The resync restarts the clock.
    assert_eq!(
        r.poll(t0 + Duration::from_secs(330), &mut NoStop),
        Outcome::Unchanged
    );

    // While the newest commit is invalid, resyncs converge the last good spec.
    let good = r.last_good().unwrap().1.clone();
    remote.commit_spec("apiVersion: [", "broken yaml");
    assert!(matches!(
        r.poll(t0 + Duration::from_secs(360), &mut NoStop),
        Outcome::Invalid { .. }
    ));
    assert_eq!(r.converger().calls.len(), 2);
    assert!(matches!(
        r.poll(t0 + Duration::from_secs(600), &mut NoStop),
        Outcome::Invalid { .. }
    ));
    assert_eq!(r.converger().calls.len(), 3);
    assert_eq!(r.converger().calls[2].1, good);
}

#[test]
fn converge_failures_back_off_and_are_retried() {
    let dir = TempDir::new("gitops-backoff");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(EXAMPLE, "spec");
    let recorder = Recorder {
        fail: 5,
        ..Recorder::default()
    };
    let (mut r, log) = reconciler(&remote, &dir.path().join("state"), recorder);
    let t0 = Instant::now();
    let mut delays = Vec::new();
    for i in 0..5 {
        let outcome = r.poll(t0 + Duration::from_secs(i), &mut NoStop);
        assert!(
            matches!(outcome, Outcome::ConvergeFailed { .. }),
            "{outcome:?}"
        );
        delays.push(r.next_delay().as_secs());
    }
    assert_eq!(delays, [30, 60, 120, 240, 300]);
    assert!(log
        .text()
        .contains("converge failed: the bridge mbr-edge1 cannot be created"));
    assert!(r.last_good().is_none());
    // The same spec, unchanged, is tried again until it works.
    assert!(matches!(
        r.poll(t0 + Duration::from_secs(10), &mut NoStop),
        Outcome::Converged { .. }
    ));
    assert_eq!(r.converger().calls.len(), 6);
    assert_eq!(r.next_delay(), Duration::from_secs(30));
    assert_eq!(
        r.poll(t0 + Duration::from_secs(20), &mut NoStop),
        Outcome::Unchanged
    );
}

#[test]
fn fetch_failures_back_off_and_converge_nothing() {
    let dir = TempDir::new("gitops-fetchfail");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(EXAMPLE, "spec");
    let state = dir.path().join("state");
    let source = GitSource::open(&remote.url(), Some("release"), None, &state).unwrap();
    let log = Captured::default();
    let mut r = Reconciler::new(
        SpecSource::Git(source),
        Recorder::default(),
        options(),
        Log::new(Box::new(log.clone()), false),
    );
    for expected in [30, 60, 120] {
        let outcome = r.poll(Instant::now(), &mut NoStop);
        assert!(
            matches!(&outcome, Outcome::FetchFailed(e) if e.contains("has no branch \"release\"")),
            "{outcome:?}"
        );
        assert_eq!(r.next_delay(), Duration::from_secs(expected));
    }
    assert!(r.converger().calls.is_empty());
    // The branch appears: fetched and converged, the backoff reset.
    remote.commit("release", &[("cluster.yaml", EXAMPLE)], "release");
    assert!(matches!(
        r.poll(Instant::now(), &mut NoStop),
        Outcome::Converged { .. }
    ));
    assert_eq!(r.next_delay(), Duration::from_secs(30));
}

#[test]
fn renaming_the_cluster_is_refused() {
    let dir = TempDir::new("gitops-rename");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(EXAMPLE, "edge1");
    let (mut r, _log) = reconciler(&remote, &dir.path().join("state"), Recorder::default());
    r.poll(Instant::now(), &mut NoStop);
    let renamed = EXAMPLE.replace("name: edge1 ", "name: edge2 ");
    assert_ne!(renamed, EXAMPLE);
    remote.commit_spec(&renamed, "edge2");
    let outcome = r.poll(Instant::now(), &mut NoStop);
    assert!(
        matches!(&outcome, Outcome::Invalid { errors, .. } if errors[0].starts_with("metadata.name: \"edge2\" is not the cluster")),
        "{outcome:?}"
    );
    assert_eq!(r.converger().calls.len(), 1);
}

#[test]
fn a_second_reconciler_on_the_same_cache_is_refused() {
    let dir = TempDir::new("gitops-busy");
    let remote = Remote::new(&dir.path().join("remote.git"));
    let state = dir.path().join("state");
    let _first = GitSource::open(&remote.url(), None, None, &state).unwrap();
    let second = GitSource::open(&remote.url(), None, None, &state).unwrap_err();
    assert!(
        matches!(
            second,
            crate::cluster::source::GitSourceError::Source(SourceError::Busy { .. })
        ),
        "{second}"
    );
    // Another branch has its own cache.
    GitSource::open(&remote.url(), Some("main"), None, &state).unwrap();
}

#[test]
fn a_file_source_converges_when_the_file_changes() {
    let dir = TempDir::new("gitops-file");
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, EXAMPLE).unwrap();
    let mut r = unlogged(SpecSource::File(file.clone()));
    let t0 = Instant::now();
    let outcome = r.poll(t0, &mut NoStop);
    assert!(
        matches!(&outcome, Outcome::Converged { origin: Origin::File { path, .. }, .. } if *path == file),
        "{outcome:?}"
    );
    assert_eq!(r.poll(t0, &mut NoStop), Outcome::Unchanged);
    std::fs::write(&file, spec_with_pool(5)).unwrap();
    assert!(matches!(r.poll(t0, &mut NoStop), Outcome::Converged { .. }));
    assert_eq!(pool_count(&r.converger().calls[1].0), 5);
    std::fs::remove_file(&file).unwrap();
    assert!(
        matches!(r.poll(t0, &mut NoStop), Outcome::FetchFailed(e) if e.contains("cluster.yaml"))
    );
}

/// A watcher on its own thread.
struct Watcher {
    /// Ends with the specs and origins the converger got.
    handle: thread::JoinHandle<Vec<(ClusterSpec, Origin)>>,
    log: Captured,
    /// Told when `watch` returns.
    done: mpsc::Receiver<()>,
}

/// Runs `watch` on its own thread with the real [`StopSignals`], `before`
/// run there after the signals are blocked.
fn watch_thread(
    remote: &Remote,
    state: &Path,
    converger: Recorder,
    before: impl FnOnce() + Send + 'static,
) -> Watcher {
    let source = GitSource::open(&remote.url(), None, None, state).unwrap();
    let log = Captured::default();
    let out = log.clone();
    let (done_tx, done) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut signals = StopSignals::block().unwrap();
        before();
        let mut options = options();
        options.interval = Duration::from_secs(3600);
        let mut r = Reconciler::new(
            SpecSource::Git(source),
            converger,
            options,
            Log::new(Box::new(out), false),
        );
        watch(&mut r, &mut signals);
        let _ = done_tx.send(());
        std::mem::take(&mut r.converger.calls)
    });
    Watcher { handle, log, done }
}

fn this_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

fn signal_thread(thread: libc::pthread_t, signal: libc::c_int) {
    // SAFETY: `thread` is a live thread of this process that blocks
    // `signal` (StopSignals::block ran in it first), so the signal stays
    // pending for its sigtimedwait and never reaches a default handler.
    assert_eq!(unsafe { libc::pthread_kill(thread, signal) }, 0);
}

/// Well under the hour-long interval the watchers below wait.
const PROMPTLY: Duration = Duration::from_secs(30);

#[test]
fn sigterm_while_waiting_stops_the_watcher_at_once() {
    use std::os::unix::thread::JoinHandleExt;
    let dir = TempDir::new("gitops-sigterm");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(EXAMPLE, "spec");
    let (converged_tx, converged) = mpsc::channel();
    let recorder = Recorder {
        notify: Some(converged_tx),
        ..Recorder::default()
    };
    let Watcher { handle, log, done } =
        watch_thread(&remote, &dir.path().join("state"), recorder, || {});
    converged
        .recv_timeout(PROMPTLY)
        .expect("the first poll converges");
    // Now it waits an hour for the next poll; a newer spec must not be
    // applied after the stop.
    remote.commit_spec(&spec_with_pool(3), "three");
    signal_thread(handle.as_pthread_t(), libc::SIGTERM);
    done.recv_timeout(PROMPTLY)
        .expect("the watcher stops within the interval");
    let calls = handle.join().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(pool_count(&calls[0].0), 2);
    let text = log.text();
    assert!(text.contains(" reconcile: watching git "), "{text}");
    assert!(
        text.ends_with(" reconcile: received SIGTERM: stopped; the cluster is left as it is\n"),
        "{text}"
    );
}

#[test]
fn a_stop_pending_before_the_first_converge_converges_nothing() {
    let dir = TempDir::new("gitops-sigint");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(EXAMPLE, "spec");
    // The signal arrives (blocked, pending) before the first poll.
    let before = || {
        signal_thread(this_thread(), libc::SIGINT);
    };
    let Watcher { handle, log, done } = watch_thread(
        &remote,
        &dir.path().join("state"),
        Recorder::default(),
        before,
    );
    done.recv_timeout(PROMPTLY).expect("the watcher stops");
    assert!(handle.join().unwrap().is_empty(), "{}", log.text());
    assert!(
        log.text().contains("received SIGINT: stopped"),
        "{}",
        log.text()
    );
}

#[test]
fn a_stop_during_a_converge_lets_it_finish_then_stops() {
    let dir = TempDir::new("gitops-sighup");
    let remote = Remote::new(&dir.path().join("remote.git"));
    remote.commit_spec(EXAMPLE, "spec");
    let recorder = Recorder {
        // The converge runs on the watcher's thread, which blocks SIGHUP.
        during: Some(Box::new(|| signal_thread(this_thread(), libc::SIGHUP))),
        ..Recorder::default()
    };
    let Watcher { handle, log, done } =
        watch_thread(&remote, &dir.path().join("state"), recorder, || {});
    done.recv_timeout(PROMPTLY)
        .expect("the watcher stops after the converge");
    assert_eq!(handle.join().unwrap().len(), 1);
    let text = log.text();
    let converged = text.find("create edge1-general-0").expect(&text);
    let stopped = text.find("received SIGHUP: stopped").expect(&text);
    assert!(converged < stopped, "{text}");
}

#[test]
fn durations_parse_and_print() {
    for (text, secs) in [
        ("30s", 30),
        ("5m", 300),
        ("1m30s", 90),
        ("1h", 3600),
        ("2h5m1s", 7501),
    ] {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_secs(secs)),
            "{text}"
        );
        assert_eq!(format_duration(Duration::from_secs(secs)), text);
    }
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    for bad in [
        "",
        "30",
        "s",
        "5x",
        "1.5m",
        "-1s",
        "m5",
        "99999999999999999999s",
    ] {
        let e = parse_duration(bad).unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
    }
    assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
}

#[test]
fn timestamps_are_utc_rfc3339_seconds() {
    assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    let t = UNIX_EPOCH + Duration::from_secs(1_796_194_862); // 2026-12-02T07:01:02Z
    assert_eq!(utc_timestamp(t), "2026-12-02T07:01:02Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00Z");
    assert!(utc_timestamp(SystemTime::now()).starts_with("20"));
}
