use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::cluster::fixtures::example;
use crate::cluster::spec::{ClusterSpec, WorkerPool};
use crate::cluster::validate::validate;

const STATE: &str = "/var/lib/mercury/clusters";

fn plan_of(spec: &ClusterSpec, observed: &Observed) -> Plan {
    plan(spec, observed, Path::new(STATE)).unwrap()
}

fn set_workers(spec: &mut ClusterSpec, count: u32) {
    match &mut spec.spec.workers[0] {
        WorkerPool::Microvm(p) => p.count = count,
        WorkerPool::Baremetal(_) => unreachable!(),
    }
}

/// What `up` would record after carrying out `plan`: every node running
/// as planned.
fn observed_after(plan: &Plan) -> Observed {
    let nodes = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Create(n) | Action::Keep(n) | Action::Replace { node: n, .. } => Some(n),
            Action::Delete(_) => None,
        })
        .map(|n| ObservedNode {
            name: n.name.clone(),
            role: n.role,
            machine: match &n.machine {
                MachinePlan::Microvm {
                    vcpus,
                    memory_mib,
                    kernel,
                    image,
                    ..
                } => Some(MachineTemplate {
                    vcpus: *vcpus,
                    memory_mib: *memory_mib,
                    kernel: kernel.clone(),
                    image: image.clone(),
                }),
                MachinePlan::Baremetal => None,
            },
            ip: n.ip,
            mac: n.mac.as_deref().map(|m| vmm_core::parse_mac(m).unwrap()),
            state: NodeState::Running,
        })
        .collect();
    Observed { nodes }
}

fn summary(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| format!("{} {}", a.verb(), a.node_name()))
        .collect()
}

#[test]
fn example_plans_every_node_with_derived_names() {
    let p = plan_of(&example(), &Observed::default());
    assert_eq!(
        summary(&p),
        [
            "create edge1-cp-0",
            "create edge1-general-0",
            "create edge1-general-1",
            "create rack1-a"
        ]
    );
    let Action::Create(cp) = &p.actions[0] else {
        panic!()
    };
    assert_eq!(
        cp.ip.to_string(),
        "10.42.0.2",
        "first address after the gateway"
    );
    assert_eq!(p.endpoint, Some(cp.ip));
    let MachinePlan::Microvm {
        tap, disk, seed, ..
    } = &cp.machine
    else {
        panic!()
    };
    assert_eq!(tap, &nodes::tap_name("edge1", "edge1-cp-0", 0));
    assert_eq!(
        disk,
        Path::new("/var/lib/mercury/clusters/edge1/edge1-cp-0/root.img")
    );
    assert_eq!(
        seed,
        Path::new("/var/lib/mercury/clusters/edge1/edge1-cp-0/seed.img")
    );
    let Action::Create(bm) = &p.actions[3] else {
        panic!()
    };
    assert_eq!(bm.ip.to_string(), "10.42.0.200");
    assert_eq!(bm.mac.as_deref(), Some("52:54:00:aa:00:01"));
    assert_eq!(bm.machine, MachinePlan::Baremetal);
}

#[test]
fn planning_is_deterministic_and_a_rerun_keeps_everything() {
    let spec = example();
    let first = plan_of(&spec, &Observed::default());
    assert_eq!(first, plan_of(&spec, &Observed::default()));
    let again = plan_of(&spec, &observed_after(&first));
    assert!(
        again.actions.iter().all(|a| a.verb() == "keep"),
        "{:?}",
        summary(&again)
    );
    assert!(again.deferred.is_empty());
}

#[test]
fn planned_ips_skip_reserved_and_bare_metal_addresses() {
    let mut spec = example();
    spec.spec.kubernetes.control_plane_endpoint = Some("10.42.0.3".parse().unwrap());
    spec.spec.network.dns = vec!["10.42.0.4".parse().unwrap()];
    match &mut spec.spec.workers[1] {
        WorkerPool::Baremetal(p) => p.machines[0].ip = "10.42.0.5".parse().unwrap(),
        WorkerPool::Microvm(_) => unreachable!(),
    }
    let p = plan_of(&spec, &Observed::default());
    let ips: Vec<String> = observed_after(&p)
        .nodes
        .iter()
        .map(|n| n.ip.to_string())
        .collect();
    assert_eq!(ips, ["10.42.0.2", "10.42.0.6", "10.42.0.7", "10.42.0.5"]);
    assert_eq!(p.endpoint, Some("10.42.0.3".parse().unwrap()));
}

#[test]
fn scale_up_creates_one_and_keeps_the_rest() {
    let mut spec = example();
    let before = plan_of(&spec, &Observed::default());
    set_workers(&mut spec, 3);
    let p = plan_of(&spec, &observed_after(&before));
    assert_eq!(
        summary(&p),
        [
            "keep edge1-cp-0",
            "keep edge1-general-0",
            "keep edge1-general-1",
            "create edge1-general-2",
            "keep rack1-a"
        ]
    );
}

#[test]
fn scaling_one_pool_does_not_renumber_another() {
    let mut spec = example();
    let WorkerPool::Microvm(general) = spec.spec.workers[0].clone() else {
        panic!()
    };
    let mut second = general.clone();
    second.name = "gpu".into();
    spec.spec.workers.push(WorkerPool::Microvm(second));
    let before = plan_of(&spec, &Observed::default());
    set_workers(&mut spec, 4);
    let p = plan_of(&spec, &observed_after(&before));
    let creates: Vec<_> = p.actions.iter().filter(|a| a.verb() != "keep").collect();
    assert_eq!(creates.len(), 2, "{:?}", summary(&p));
}

#[test]
fn scale_down_deletes_highest_numbered_first() {
    let mut spec = example();
    set_workers(&mut spec, 3);
    let before = plan_of(&spec, &Observed::default());
    set_workers(&mut spec, 1);
    let p = plan_of(&spec, &observed_after(&before));
    assert_eq!(
        summary(&p),
        [
            "keep edge1-cp-0",
            "keep edge1-general-0",
            "keep rack1-a",
            "delete edge1-general-2",
            "delete edge1-general-1"
        ]
    );
}

#[test]
fn control_plane_scale_down_deletes_after_control_plane_and_highest_first() {
    let mut spec = example();
    spec.spec.control_plane.count = 3;
    let before = plan_of(&spec, &Observed::default());
    spec.spec.control_plane.count = 1;
    let p = plan_of(&spec, &observed_after(&before));
    assert_eq!(
        &summary(&p)[..3],
        ["keep edge1-cp-0", "delete edge1-cp-2", "delete edge1-cp-1"]
    );
}

#[test]
fn size_or_image_change_replaces_workers_together() {
    let mut spec = example();
    let before = observed_after(&plan_of(&spec, &Observed::default()));
    match &mut spec.spec.workers[0] {
        WorkerPool::Microvm(p) => {
            p.vcpus = 4;
            p.image = "/var/lib/mercury/images/node-v1.32.0.ext4".into();
        }
        WorkerPool::Baremetal(_) => unreachable!(),
    }
    let p = plan_of(&spec, &before);
    assert_eq!(
        summary(&p),
        [
            "keep edge1-cp-0",
            "replace edge1-general-0",
            "replace edge1-general-1",
            "keep rack1-a"
        ]
    );
    let Action::Replace { reasons, .. } = &p.actions[1] else {
        panic!()
    };
    assert_eq!(reasons[0], "vcpus 2 -> 4");
    assert!(reasons[1].starts_with("image "), "{reasons:?}");
}

#[test]
fn control_plane_is_replaced_one_node_per_plan() {
    let mut spec = example();
    spec.spec.control_plane.count = 3;
    let mut observed = observed_after(&plan_of(&spec, &Observed::default()));
    spec.spec.control_plane.memory_mib = 4096;
    for round in 0..3 {
        let p = plan_of(&spec, &observed);
        let replaced: Vec<_> = p.actions.iter().filter(|a| a.verb() == "replace").collect();
        assert_eq!(replaced.len(), 1, "round {round}: {:?}", summary(&p));
        assert_eq!(replaced[0].node_name(), format!("edge1-cp-{round}"));
        assert_eq!(p.deferred.len(), 2 - round);
        // `up` replaced that one; the others still run the old size.
        let name = replaced[0].node_name().to_string();
        let node = observed.nodes.iter_mut().find(|n| n.name == name).unwrap();
        node.machine.as_mut().unwrap().memory_mib = 4096;
    }
    assert!(plan_of(&spec, &observed)
        .actions
        .iter()
        .all(|a| a.verb() == "keep"));
}

#[test]
fn a_crashed_control_plane_node_is_replaced_before_an_outdated_one() {
    let mut spec = example();
    spec.spec.control_plane.count = 3;
    let mut observed = observed_after(&plan_of(&spec, &Observed::default()));
    spec.spec.control_plane.vcpus = 4;
    observed.nodes[2].state = NodeState::Crashed;
    let p = plan_of(&spec, &observed);
    let replaced: Vec<_> = p
        .actions
        .iter()
        .filter(|a| a.verb() == "replace")
        .map(|a| a.node_name())
        .collect();
    assert_eq!(replaced, ["edge1-cp-2"]);
}

#[test]
fn drift_is_repaired_crashed_replaced_missing_created() {
    let spec = example();
    let mut observed = observed_after(&plan_of(&spec, &Observed::default()));
    observed.nodes[1].state = NodeState::Crashed;
    observed.nodes.remove(2); // edge1-general-1 vanished from the records
    let p = plan_of(&spec, &observed);
    assert_eq!(
        summary(&p),
        [
            "keep edge1-cp-0",
            "replace edge1-general-0",
            "create edge1-general-1",
            "keep rack1-a"
        ]
    );
    let Action::Replace { reasons, .. } = &p.actions[1] else {
        panic!()
    };
    assert_eq!(reasons, &["crashed"]);
}

#[test]
fn an_observed_ip_taken_by_a_new_machine_is_moved() {
    let mut spec = example();
    let observed = observed_after(&plan_of(&spec, &Observed::default()));
    match &mut spec.spec.workers[1] {
        WorkerPool::Baremetal(p) => p.machines[0].ip = "10.42.0.3".parse().unwrap(),
        WorkerPool::Microvm(_) => unreachable!(),
    }
    let p = plan_of(&spec, &observed);
    let Action::Replace { node, reasons } = &p.actions[1] else {
        panic!("{:?}", summary(&p))
    };
    assert_eq!(node.name, "edge1-general-0");
    assert!(
        reasons.iter().any(|r| r.starts_with("ip 10.42.0.3 -> ")),
        "{reasons:?}"
    );
}

/// A small deterministic generator (xorshift), for many specs without a
/// property-testing crate.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn generated_specs_never_share_a_name_ip_mac_or_tap() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base = example();
    let mut planned = 0;
    for case in 0..300 {
        let mut spec = base.clone();
        spec.metadata.name = format!("c{}", rng.below(1000));
        spec.spec.control_plane.count = 1 + rng.below(5) as u32;
        let WorkerPool::Microvm(template) = base.spec.workers[0].clone() else {
            panic!()
        };
        let WorkerPool::Baremetal(metal) = base.spec.workers[1].clone() else {
            panic!()
        };
        spec.spec.workers.clear();
        for p in 0..rng.below(4) {
            let mut pool = template.clone();
            pool.name = format!("p{p}");
            pool.count = rng.below(40) as u32;
            spec.spec.workers.push(WorkerPool::Microvm(pool));
        }
        let mut metal = metal.clone();
        metal.machines[0].ip = format!("10.42.0.{}", 2 + rng.below(250)).parse().unwrap();
        spec.spec.workers.push(WorkerPool::Baremetal(metal));
        if !validate(&spec).errors.is_empty() {
            continue;
        }
        planned += 1;
        let p = plan_of(&spec, &Observed::default());
        let nodes = observed_after(&p).nodes;
        let count = nodes.len();
        let names: BTreeSet<_> = nodes.iter().map(|n| n.name.clone()).collect();
        let ips: BTreeSet<_> = nodes.iter().map(|n| n.ip).collect();
        let macs: BTreeSet<_> = nodes.iter().filter_map(|n| n.mac).collect();
        let taps: BTreeSet<_> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Create(n) => n.tap().map(String::from),
                _ => None,
            })
            .collect();
        assert_eq!(
            (names.len(), ips.len(), macs.len()),
            (count, count, count),
            "case {case}"
        );
        assert_eq!(taps.len(), count - 1, "case {case}");
        assert!(taps.iter().all(|t| t.len() <= nodes::MAX_IFNAME));
        assert!(!ips.contains(&spec.spec.network.gateway));
        // Planning what was planned changes nothing.
        assert!(plan_of(&spec, &observed_after(&p))
            .actions
            .iter()
            .all(|a| a.verb() == "keep"));
    }
    assert!(planned > 200, "only {planned} generated specs were valid");
}
