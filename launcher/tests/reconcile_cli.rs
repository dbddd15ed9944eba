//! `mercury cluster reconcile` end to end, on git repositories made with
//! libgit2 in temporary directories (no git binary): one-shot with a valid
//! and an invalid spec, argument errors, and `--watch` stopped by SIGTERM.
//! The converger is the real `up`: each run that converges gets a network
//! namespace of its own (`unshare -n`), so the bridge `up` makes lives and
//! dies with it; the example's image does not exist, so the converge fails
//! at the first node's root disk — which shows the real `up` ran.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use git2::{Oid, Repository, RepositoryInitOptions, Signature};
use mercury_tests::{output_within, wait_within, TempDir, CHILD_TIMEOUT};

mod common;
use common::{mercury, text};

const EXAMPLE: &str = include_str!("../../examples/cluster.yaml");

/// A bare repository whose `main` has one commit holding `cluster.yaml`.
fn repo_with_spec(dir: &Path, spec: &str) -> (String, Oid) {
    let mut options = RepositoryInitOptions::new();
    options.bare(true).initial_head("main");
    let repo = Repository::init_opts(dir, &options).unwrap();
    let blob = repo.blob(spec.as_bytes()).unwrap();
    let mut tree = repo.treebuilder(None).unwrap();
    tree.insert("cluster.yaml", blob, 0o100644).unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let who = Signature::now("mercury test", "test@example.invalid").unwrap();
    let commit = repo
        .commit(Some("refs/heads/main"), &who, &who, "spec", &tree, &[])
        .unwrap();
    (dir.to_string_lossy().into_owned(), commit)
}

/// `mercury cluster reconcile` once, of the spec in git repository `url`,
/// with state in `state`, in a network namespace of its own.
fn reconcile_once(url: &str, state: &Path) -> Output {
    output_within(
        Command::new("unshare")
            .args(["-n", env!("CARGO_BIN_EXE_mercury")])
            .args(["cluster", "reconcile", "--git", url, "--state-dir"])
            .arg(state)
            .arg("--no-file-checks"),
        CHILD_TIMEOUT,
    )
}

#[test]
fn one_shot_with_an_invalid_spec_exits_1_naming_the_field_and_the_commit() {
    let dir = TempDir::new("reconcile-invalid");
    let bad = EXAMPLE.replace(
        "    bridge: mbr-edge1",
        "    colour: blue\n    bridge: mbr-edge1",
    );
    let (url, commit) = repo_with_spec(&dir.path().join("remote.git"), &bad);
    let state = dir.path().join("state");
    let out = reconcile_once(&url, &state);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let short = &commit.to_string()[..7];
    let line = stderr
        .lines()
        .find(|l| l.contains(" invalid: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert!(
        line.contains(&format!(" reconcile: commit {short} (main:cluster.yaml): invalid: spec.network: unknown field `colour`")),
        "{line}"
    );
    assert!(
        stderr.contains(&format!(
            "commit {short} (main:cluster.yaml): not applied (1 error(s)); nothing applied yet"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("would create"), "{stderr}");
}

#[test]
fn one_shot_with_a_valid_spec_runs_up_and_exits_3_when_it_fails() {
    let dir = TempDir::new("reconcile-valid");
    let (url, commit) = repo_with_spec(&dir.path().join("remote.git"), EXAMPLE);
    let state = dir.path().join("state");
    let out = reconcile_once(&url, &state);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let short = &commit.to_string()[..7];
    let line = stderr
        .lines()
        .find(|l| {
            l.contains(&format!(
                " reconcile: commit {short} (main:cluster.yaml): converge failed: "
            ))
        })
        .unwrap_or_else(|| panic!("no converge failure logged:\n{stderr}"));
    let time = line.split(' ').next().unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z'),
        "timestamp {time:?}"
    );
    assert!(
        line.contains("node edge1-cp-0: cannot copy its root disk from the image"),
        "{line}"
    );
    // up ran: it made the cluster's secrets, and removed the node that failed.
    let cluster = state.join("edge1");
    assert!(cluster.join("secrets/ca.crt").is_file(), "{stderr}");
    assert!(
        !cluster.join("edge1-cp-0").exists(),
        "the failed node was left behind"
    );
    // The fetch went into the cache under the state directory.
    assert_eq!(
        std::fs::read_dir(state.join("gitops")).unwrap().count(),
        2,
        "the cache and its lock"
    );
}

#[test]
fn argument_errors_name_the_bad_value_and_create_nothing() {
    let dir = TempDir::new("reconcile-args");
    let (url, _) = repo_with_spec(&dir.path().join("remote.git"), EXAMPLE);
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    for (args, code, needle) in [
        (
            vec!["--git", url.as_str(), "--interval", "5x"],
            2,
            "\"5x\" is not a duration",
        ),
        (
            vec!["--git", url.as_str(), "--path", "../cluster.yaml"],
            1,
            "--path \"../cluster.yaml\"",
        ),
        (
            vec!["--git", url.as_str(), "--branch", "a..b"],
            1,
            "--branch \"a..b\"",
        ),
        (
            vec!["-f", "c.yaml", "--branch", "main"],
            2,
            "cannot be used with",
        ),
        (
            vec!["--path", "c.yaml"],
            2,
            "<--file <FILE>|--git <URL_OR_PATH>>",
        ),
        (
            vec!["-f", "c.yaml", "--git", url.as_str()],
            2,
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["cluster", "reconcile", "--state-dir", state];
        all.extend(&args);
        let out = mercury(&all);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!Path::new(state).exists(), "{args:?} created {state}");
    }
}

#[test]
fn watch_stops_on_sigterm_and_exits_0() {
    let dir = TempDir::new("reconcile-watch");
    let (url, commit) = repo_with_spec(&dir.path().join("remote.git"), EXAMPLE);
    let state = dir.path().join("state");
    let log_path = dir.path().join("stderr.log");
    let child = Command::new("unshare")
        .args(["-n", env!("CARGO_BIN_EXE_mercury")])
        .args([
            "cluster",
            "reconcile",
            "--watch",
            "--interval",
            "1h",
            "--git",
            &url,
        ])
        .args(["--state-dir", state.to_str().unwrap(), "--no-file-checks"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // Wait (bounded) for the first converge, then stop it mid-interval.
    let short = &commit.to_string()[..7];
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains(&format!(
            "commit {short} (main:cluster.yaml): converge failed"
        ))
    {
        assert!(
            Instant::now() < deadline,
            "no converge logged:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill on the pid of a child this test started and has not
    // reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Far less than the hour-long interval: the signal ends the wait.
    let out = wait_within(child, CHILD_TIMEOUT, "mercury cluster reconcile --watch");
    let stderr = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(" reconcile: watching git "), "{stderr}");
    assert!(
        stderr.ends_with(" reconcile: received SIGTERM: stopped; the cluster is left as it is\n"),
        "{stderr}"
    );
}
