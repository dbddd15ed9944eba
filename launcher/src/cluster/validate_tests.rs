use super::*;
use crate::cluster::fixtures::{example, EXAMPLE};
use crate::cluster::spec::{BaremetalMachine, ClusterSpec, EtcdMode, WorkerPool};

#[test]
fn example_parses_and_is_valid() {
    let spec = example();
    assert_eq!(spec.metadata.name, "edge1");
    assert_eq!(spec.spec.workers.len(), 2);
    assert!(matches!(spec.spec.workers[0], WorkerPool::Microvm(ref p) if p.count == 2));
    assert!(matches!(spec.spec.workers[1], WorkerPool::Baremetal(ref p) if p.machines.len() == 1));
    let report = validate(&spec);
    assert_eq!(report, Report::default(), "{report:?}");
}

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    for (from, to) in [
        ("    count: 1 ", "    count: 1\n    cpus: 4 "),
        ("  etcd:\n", "  etcd:\n    size: 3\n"),
        ("      count: 2\n", "      count: 2\n      replicas: 2\n"),
        (
            "          ip: 10.42.0.200",
            "          ip: 10.42.0.200\n          ipmi: x",
        ),
        ("kind: Cluster\n", "kind: Cluster\nstatus: {}\n"),
    ] {
        assert!(EXAMPLE.contains(from), "{from:?}");
        let text = EXAMPLE.replacen(from, to, 1);
        let e = ClusterSpec::from_yaml(&text).unwrap_err().to_string();
        let field = to
            .split_whitespace()
            .rev()
            .nth(1)
            .unwrap()
            .trim_end_matches(':');
        assert!(e.contains(field), "{field}: {e}");
    }
}

#[test]
fn bad_syntax_names_the_field() {
    let text = EXAMPLE.replace("cidr: 10.42.0.0/24", "cidr: 10.42.0.0/33");
    let e = ClusterSpec::from_yaml(&text).unwrap_err().to_string();
    assert!(e.contains("spec.network.cidr"), "{e}");
    let text = EXAMPLE.replace("kind: microvm", "kind: container");
    let e = ClusterSpec::from_yaml(&text).unwrap_err().to_string();
    assert!(e.contains("container"), "{e}");
}

fn baremetal(spec: &mut ClusterSpec) -> &mut Vec<BaremetalMachine> {
    match &mut spec.spec.workers[1] {
        WorkerPool::Baremetal(p) => &mut p.machines,
        WorkerPool::Microvm(_) => unreachable!(),
    }
}

fn microvm_count(spec: &mut ClusterSpec) -> &mut u32 {
    match &mut spec.spec.workers[0] {
        WorkerPool::Microvm(p) => &mut p.count,
        WorkerPool::Baremetal(_) => unreachable!(),
    }
}

type Edit = fn(&mut ClusterSpec);

/// Each case: an edit of the example, and the field its error names.
#[test]
fn every_validation_error_names_its_field() {
    let cases: &[(&str, Edit, &str)] = &[
        ("api version", |s| s.api_version = "v1".into(), "apiVersion"),
        ("kind", |s| s.kind = "Pod".into(), "kind"),
        (
            "cluster name",
            |s| s.metadata.name = "Edge_1".into(),
            "metadata.name",
        ),
        (
            "long cluster name",
            |s| s.metadata.name = "e".repeat(41),
            "metadata.name",
        ),
        (
            "host bits",
            |s| s.spec.network.cidr = "10.42.0.5/24".parse().unwrap(),
            "spec.network.cidr",
        ),
        (
            "tiny network",
            |s| {
                s.spec.network.cidr = "10.42.0.0/31".parse().unwrap();
                s.spec.network.gateway = "10.42.0.0".parse().unwrap();
            },
            "spec.network.cidr",
        ),
        (
            "bridge name",
            |s| s.spec.network.bridge = "a-very-long-bridge-name".into(),
            "spec.network.bridge",
        ),
        (
            "gateway outside",
            |s| s.spec.network.gateway = "10.43.0.1".parse().unwrap(),
            "spec.network.gateway",
        ),
        (
            "gateway is network",
            |s| s.spec.network.gateway = "10.42.0.0".parse().unwrap(),
            "spec.network.gateway",
        ),
        (
            "version",
            |s| s.spec.kubernetes.version = "1.31".into(),
            "spec.kubernetes.version",
        ),
        (
            "pod cidr host bits",
            |s| s.spec.kubernetes.pod_cidr = "10.244.1.0/16".parse().unwrap(),
            "spec.kubernetes.podCidr",
        ),
        (
            "pod overlaps node",
            |s| s.spec.kubernetes.pod_cidr = "10.42.0.0/16".parse().unwrap(),
            "spec.kubernetes.podCidr",
        ),
        (
            "service overlaps pod",
            |s| s.spec.kubernetes.service_cidr = "10.244.128.0/20".parse().unwrap(),
            "spec.kubernetes.serviceCidr",
        ),
        (
            "endpoint is gateway",
            |s| s.spec.kubernetes.control_plane_endpoint = Some("10.42.0.1".parse().unwrap()),
            "spec.kubernetes.controlPlaneEndpoint",
        ),
        (
            "zero control plane",
            |s| s.spec.control_plane.count = 0,
            "spec.controlPlane.count",
        ),
        (
            "vcpus",
            |s| s.spec.control_plane.vcpus = 0,
            "spec.controlPlane.vcpus",
        ),
        (
            "memory",
            |s| s.spec.control_plane.memory_mib = 64,
            "spec.controlPlane.memoryMib",
        ),
        (
            "pool name",
            |s| match &mut s.spec.workers[0] {
                WorkerPool::Microvm(p) => p.name = "General".into(),
                WorkerPool::Baremetal(_) => unreachable!(),
            },
            "spec.workers[0].name",
        ),
        (
            "reserved pool name",
            |s| match &mut s.spec.workers[0] {
                WorkerPool::Microvm(p) => p.name = "cp".into(),
                WorkerPool::Baremetal(_) => unreachable!(),
            },
            "spec.workers[0].name",
        ),
        (
            "duplicate pool",
            |s| match &mut s.spec.workers[1] {
                WorkerPool::Baremetal(p) => p.name = "general".into(),
                WorkerPool::Microvm(_) => unreachable!(),
            },
            "spec.workers[1].name",
        ),
        (
            "pool vcpus",
            |s| match &mut s.spec.workers[0] {
                WorkerPool::Microvm(p) => p.vcpus = 33,
                WorkerPool::Baremetal(_) => unreachable!(),
            },
            "spec.workers[0].vcpus",
        ),
        (
            "empty baremetal pool",
            |s| baremetal(s).clear(),
            "spec.workers[1].machines",
        ),
        (
            "duplicate node name",
            |s| baremetal(s)[0].name = "edge1-general-1".into(),
            "spec.workers[1].machines[0].name",
        ),
        (
            "bad machine name",
            |s| baremetal(s)[0].name = "Rack 1".into(),
            "spec.workers[1].machines[0].name",
        ),
        (
            "machine ip outside",
            |s| baremetal(s)[0].ip = "192.168.1.5".parse().unwrap(),
            "spec.workers[1].machines[0].ip",
        ),
        (
            "machine ip is broadcast",
            |s| baremetal(s)[0].ip = "10.42.0.255".parse().unwrap(),
            "spec.workers[1].machines[0].ip",
        ),
        (
            "machine ip is gateway",
            |s| baremetal(s)[0].ip = "10.42.0.1".parse().unwrap(),
            "spec.workers[1].machines[0].ip",
        ),
        (
            "machine ip is endpoint",
            |s| {
                s.spec.kubernetes.control_plane_endpoint = Some("10.42.0.200".parse().unwrap());
            },
            "spec.workers[1].machines[0].ip",
        ),
        (
            "machine ips collide",
            |s| {
                let mut twin = baremetal(s)[0].clone();
                twin.name = "rack1-b".into();
                twin.mac = None;
                baremetal(s).push(twin);
            },
            "spec.workers[1].machines[1].ip",
        ),
        (
            "machine mac",
            |s| baremetal(s)[0].mac = Some("01:00:5e:00:00:01".into()),
            "spec.workers[1].machines[0].mac",
        ),
        (
            "machine macs collide",
            |s| {
                let mut twin = baremetal(s)[0].clone();
                twin.name = "rack1-b".into();
                twin.ip = "10.42.0.201".parse().unwrap();
                baremetal(s).push(twin);
            },
            "spec.workers[1].machines[1].mac",
        ),
        (
            "too many nodes",
            |s| {
                s.spec.network.cidr = "10.42.0.0/29".parse().unwrap();
                baremetal(s)[0].ip = "10.42.0.6".parse().unwrap();
                *microvm_count(s) = 4;
            },
            "spec.network.cidr",
        ),
        (
            "node name too long",
            |s| {
                s.metadata.name = "e".repeat(40);
                match &mut s.spec.workers[0] {
                    WorkerPool::Microvm(p) => p.name = "p".repeat(30),
                    WorkerPool::Baremetal(_) => unreachable!(),
                }
            },
            "spec.workers[0].name",
        ),
        (
            "ssh key",
            |s| s.spec.ssh.authorized_keys.push("hunter2".into()),
            "spec.ssh.authorizedKeys[1]",
        ),
    ];
    for (what, edit, field) in cases {
        let mut spec = example();
        edit(&mut spec);
        let report = validate(&spec);
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.field == *field && e.to_string().starts_with(field)),
            "{what}: no error for {field}: {:?}",
            report.errors
        );
    }
}

#[test]
fn even_control_plane_with_stacked_etcd_warns_only() {
    let mut spec = example();
    spec.spec.control_plane.count = 2;
    let report = validate(&spec);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(report.warnings[0].field, "spec.controlPlane.count");
    spec.spec.etcd.mode = EtcdMode::External;
    assert!(validate(&spec).warnings.is_empty());
}

#[test]
fn all_errors_are_reported_at_once() {
    let mut spec = example();
    spec.spec.control_plane.count = 0;
    spec.spec.network.bridge = String::new();
    baremetal(&mut spec)[0].ip = "10.0.0.1".parse().unwrap();
    assert_eq!(
        validate(&spec).errors.len(),
        3,
        "{:?}",
        validate(&spec).errors
    );
}

#[test]
fn missing_files_are_named_and_present_ones_pass() {
    let spec = example();
    let errors = check_files(&spec);
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.controlPlane.kernel",
            "spec.controlPlane.image",
            "spec.workers[0].kernel",
            "spec.workers[0].image"
        ]
    );
    assert!(errors[0]
        .message
        .contains("/var/lib/mercury/images/node-kernel"));
    let mut spec = example();
    let exe = std::env::current_exe().unwrap();
    spec.spec.control_plane.kernel = exe.clone();
    spec.spec.control_plane.image = exe.clone();
    match &mut spec.spec.workers[0] {
        WorkerPool::Microvm(p) => {
            p.kernel = exe.clone();
            p.image = exe;
        }
        WorkerPool::Baremetal(_) => unreachable!(),
    }
    assert_eq!(check_files(&spec), vec![]);
}

#[test]
fn a_network_filled_exactly_is_valid_and_plans() {
    let mut spec = example();
    spec.spec.network.cidr = "10.42.0.0/29".parse().unwrap();
    baremetal(&mut spec)[0].ip = "10.42.0.6".parse().unwrap();
    *microvm_count(&mut spec) = 3; // 1 + 3 microVMs in .2-.5
    assert_eq!(validate(&spec).errors, vec![]);
    let plan = crate::cluster::plan::plan(
        &spec,
        &crate::cluster::plan::Observed::default(),
        std::path::Path::new("/s"),
    )
    .unwrap();
    assert_eq!(plan.actions.len(), 5);
    *microvm_count(&mut spec) = 4;
    let errors = validate(&spec).errors;
    assert!(
        errors[0]
            .to_string()
            .starts_with("spec.network.cidr: 10.42.0.0/29 holds 4 node addresses"),
        "{errors:?}"
    );
}
