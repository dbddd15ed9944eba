//! `mercury cluster plan` end to end: the example spec's table and JSON,
//! and an invalid spec refused with the bad field named. No KVM needed.

use std::path::{Path, PathBuf};

use mercury_tests::TempDir;

mod common;
use common::{mercury, text};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml")
}

#[test]
fn example_plan_prints_a_create_row_per_node() {
    let file = example();
    let out = mercury(&[
        "cluster",
        "plan",
        "-f",
        file.to_str().unwrap(),
        "--no-file-checks",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["ACTION", "NODE", "ROLE", "KIND", "IP", "MAC", "TAP"]
    );
    let nodes: Vec<(&str, &str, &str, &str)> = rows[1..5]
        .iter()
        .map(|r| (r[0], r[1], r[2], r[4]))
        .collect();
    assert_eq!(
        nodes,
        [
            ("create", "edge1-cp-0", "control-plane", "10.42.0.2"),
            ("create", "edge1-general-0", "worker", "10.42.0.3"),
            ("create", "edge1-general-1", "worker", "10.42.0.4"),
            ("create", "rack1-a", "worker", "10.42.0.200"),
        ]
    );
    for row in &rows[1..4] {
        assert!(
            row[5].starts_with("02:"),
            "locally administered MAC: {row:?}"
        );
        assert!(
            row[6].len() <= 15 && row[6].starts_with('m'),
            "TAP: {row:?}"
        );
    }
    assert_eq!(rows[4][5], "52:54:00:aa:00:01");
    assert_eq!(rows[4][6], "-");
    assert!(
        stdout.contains("control-plane endpoint: 10.42.0.2"),
        "{stdout}"
    );
    // Deterministic: the same table every run.
    let again = mercury(&[
        "cluster",
        "plan",
        "-f",
        file.to_str().unwrap(),
        "--no-file-checks",
    ]);
    assert_eq!(text(&again.stdout), stdout);
}

#[test]
fn json_output_carries_the_node_paths() {
    let file = example();
    let out = mercury(&[
        "cluster",
        "plan",
        "-f",
        file.to_str().unwrap(),
        "--no-file-checks",
        "--state-dir",
        "/srv/m",
        "-o",
        "json",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("\"action\": \"create\""), "{stdout}");
    assert!(
        stdout.contains("\"disk\": \"/srv/m/edge1/edge1-cp-0/root.img\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"seed\": \"/srv/m/edge1/edge1-general-1/seed.img\""),
        "{stdout}"
    );
    let file = file.to_str().unwrap();
    let out = mercury(&[
        "cluster",
        "plan",
        "-f",
        file,
        "--no-file-checks",
        "-o",
        "yaml",
    ]);
    let yaml = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{yaml}");
    assert!(
        yaml.contains("- action: create\n  name: edge1-cp-0\n"),
        "{yaml}"
    );
}

#[test]
fn missing_images_are_errors_without_no_file_checks() {
    let file = example();
    let out = mercury(&["cluster", "plan", "-f", file.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("spec.controlPlane.kernel: /var/lib/mercury/images/node-kernel"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn invalid_spec_exits_one_naming_each_field() {
    let dir = TempDir::new("cluster-cli");
    let spec = std::fs::read_to_string(example())
        .unwrap()
        .replace("ip: 10.42.0.200", "ip: 192.168.7.7")
        .replace("count: 1 ", "count: 0 ");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, spec).unwrap();
    let out = mercury(&[
        "cluster",
        "plan",
        "-f",
        path.to_str().unwrap(),
        "--no-file-checks",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing planned");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.contains(&"mercury: error: spec.controlPlane.count: a cluster needs at least one control-plane node"), "{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("mercury: error: spec.workers[1].machines[0].ip: 192.168.7.7")),
        "{stderr}"
    );
}

#[test]
fn unknown_field_and_missing_file_are_named() {
    let dir = TempDir::new("cluster-cli");
    let spec = std::fs::read_to_string(example())
        .unwrap()
        .replace("  etcd:\n", "  etcd:\n    members: 3\n");
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, spec).unwrap();
    let out = mercury(&[
        "cluster",
        "plan",
        "-f",
        path.to_str().unwrap(),
        "--no-file-checks",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("members") && stderr.contains("typo.yaml"),
        "{stderr}"
    );
    let out = mercury(&["cluster", "plan", "-f", "/nonexistent/c.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/c.yaml"));
}

#[test]
fn even_control_plane_warns_and_still_plans() {
    let dir = TempDir::new("cluster-cli");
    let spec = std::fs::read_to_string(example())
        .unwrap()
        .replace("count: 1 ", "count: 2 ");
    let path = dir.path().join("even.yaml");
    std::fs::write(&path, spec).unwrap();
    let out = mercury(&[
        "cluster",
        "plan",
        "-f",
        path.to_str().unwrap(),
        "--no-file-checks",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr)
        .contains("mercury: warning: spec.controlPlane.count: 2 control-plane nodes"));
    assert!(text(&out.stdout).contains("edge1-cp-1"));
}
