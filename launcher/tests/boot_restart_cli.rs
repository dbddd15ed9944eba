//! `mercury cluster up` with a node whose VMM exits before the node is
//! ready: the real `up`, in a network namespace of its own (`unshare -n`:
//! its bridge and TAP go with it), on this host's /dev/kvm. The "node" is
//! the no_std test guest, which prints its report and resets without ever
//! printing cloud-init's ready line, so its `mercury run` exits at once:
//! `up` must start it again from its disk once (`--boot-restarts`, default
//! 1), say so, and then fail naming the node, with the end of its logs.

use std::process::Command;

use mercury_tests::{guest_image, output_within, TempDir, CHILD_TIMEOUT};

mod common;
use common::text;

#[test]
fn a_node_that_exits_before_ready_is_started_once_more_then_up_fails() {
    let dir = TempDir::new("boot-restart");
    let kernel = guest_image("test-guest");
    // Any file serves as the root image: the test guest reads no disk.
    let image = dir.path().join("root.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let spec = format!(
        "apiVersion: mercury.dev/v1alpha1
kind: Cluster
metadata:
  name: restart
spec:
  network: {{ cidr: 10.81.0.0/24, bridge: mbr-restart, gateway: 10.81.0.1, dns: [10.81.0.1] }}
  kubernetes: {{ version: v1.31.2, podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12 }}
  controlPlane: {{ count: 1, vcpus: 1, memoryMib: 256, kernel: {}, image: {} }}
",
        kernel.display(),
        image.display()
    );
    let spec_path = dir.path().join("cluster.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let out = output_within(
        Command::new("unshare")
            .args(["-n", env!("CARGO_BIN_EXE_mercury"), "cluster", "up", "-f"])
            .arg(&spec_path)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--timeout", "60"]),
        CHILD_TIMEOUT,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let restarts: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("restart-cp-0 exited before it was ready ("))
        .collect();
    assert_eq!(restarts.len(), 1, "one restart, reported:\n{stderr}");
    assert!(
        restarts[0].ends_with("; starting it again from its disk (1 of 1)"),
        "{}",
        restarts[0]
    );
    // The exit it reports is the VMM's own last line: the guest's reset.
    assert!(restarts[0].contains("guest reset"), "{}", restarts[0]);
    assert!(
        stderr.contains("error: node restart-cp-0 exited before it was ready; the end of"),
        "{stderr}"
    );
    // The second boot's console is the one shown: the test guest's report.
    assert!(stderr.contains("TEST-GUEST START"), "{stderr}");
}
