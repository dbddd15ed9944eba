//! `mercury cluster up` refuses an invalid spec before it makes anything:
//! a table of broken specs (each a small edit of examples/cluster.yaml),
//! each must exit 1, name the field, and leave the state directory empty
//! and no bridge behind. No KVM needed: validation comes first.

use std::path::Path;
use std::process::Command;

use mercury_tests::{output_within, TempDir, CHILD_TIMEOUT};

const EXAMPLE: &str = include_str!("../../examples/cluster.yaml");

/// (what is broken, the edit, the field the error must name).
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "pod CIDR overlapping the node network",
        "podCidr: 10.244.0.0/16",
        "podCidr: 10.42.0.0/16",
        "spec.kubernetes.podCidr",
    ),
    (
        "an invalid CIDR",
        "cidr: 10.42.0.0/24",
        "cidr: 10.42.0.0/33",
        "spec.network.cidr",
    ),
    (
        "zero control-plane nodes",
        "count: 1                     # odd",
        "count: 0                     # odd",
        "spec.controlPlane.count",
    ),
    (
        "a duplicate pool name",
        "- name: metal",
        "- name: general",
        "spec.workers[1].name",
    ),
    (
        "a bare-metal IP outside the node network",
        "ip: 10.42.0.200",
        "ip: 10.43.0.200",
        "spec.workers[1].machines[0].ip",
    ),
    (
        "a bare-metal IP colliding with the gateway",
        "ip: 10.42.0.200",
        "ip: 10.42.0.1",
        "spec.workers[1].machines[0].ip",
    ),
    (
        "more nodes than the network holds",
        "cidr: 10.42.0.0/24",
        "cidr: 10.42.0.0/30",
        "spec.network.cidr",
    ),
    (
        "a bridge name longer than IFNAMSIZ",
        "bridge: mbr-edge1",
        "bridge: a-bridge-name-too-long",
        "spec.network.bridge",
    ),
    (
        "an unknown field",
        "  etcd:\n",
        "  etcd:\n    replicas: 3\n",
        "replicas",
    ),
    (
        "a missing kernel file",
        "kernel: /var/lib/mercury/images/node-kernel",
        "kernel: /nonexistent/mercury/vmlinux",
        "spec.controlPlane.kernel",
    ),
];

#[test]
fn every_invalid_spec_is_refused_naming_its_field_and_nothing_is_made() {
    for (what, from, to, field) in CASES {
        assert!(
            EXAMPLE.contains(from),
            "{what}: the example has no `{from}`"
        );
        let dir = TempDir::new("cluster-up-invalid");
        let spec = dir.path().join("cluster.yaml");
        std::fs::write(&spec, EXAMPLE.replacen(from, to, 1)).unwrap();
        let state = dir.path().join("state");
        let out = output_within(
            Command::new(env!("CARGO_BIN_EXE_mercury"))
                .args(["cluster", "up", "-f"])
                .arg(&spec)
                .arg("--state-dir")
                .arg(&state),
            CHILD_TIMEOUT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(field),
            "{what}: the error does not name {field}: {stderr}"
        );
        assert!(
            !state.exists(),
            "{what}: the state directory was created: {:?}",
            std::fs::read_dir(&state).map(|d| d.count())
        );
        assert!(
            !Path::new("/sys/class/net/mbr-edge1").exists(),
            "{what}: a bridge was made"
        );
    }
}

#[test]
fn down_of_an_unknown_cluster_does_nothing_and_succeeds() {
    let dir = TempDir::new("cluster-down-none");
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_mercury"))
            .args(["cluster", "down", "--cluster", "nowhere", "--state-dir"])
            .arg(dir.path()),
        CHILD_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("cluster nowhere: nothing to remove"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
