//! Planning: desired spec + observed nodes → an ordered list of actions.
//! Pure: it reads no files and touches nothing, so `mercury cluster plan`
//! and (later) `up` show and do the same thing.
//!
//! Rules:
//! - A node the spec asks for and nobody observed is created; one observed
//!   as asked is kept; one observed that differs (size, kernel, image, IP,
//!   MAC, role) or crashed is replaced; an observed node the spec no longer
//!   asks for is deleted.
//! - Addresses: an existing node keeps its observed IP while that is still
//!   a free host address of the node network, so scaling one pool never
//!   renumbers another; new nodes take the lowest free address after the
//!   gateway (wrapping round below it), in plan order: control plane, then
//!   the pools in file order. Reserved addresses (gateway, endpoint, DNS,
//!   bare-metal machines' own) are never planned; addresses of nodes being
//!   deleted are reused only when nothing else is free.
//! - Order: control-plane nodes (by index), control-plane deletes, workers
//!   (pools in file order, each by index), worker deletes. Deletes go
//!   highest-numbered first, so a scale-down leaves `-0..-n` in place.
//! - Control-plane nodes are replaced one per plan, to keep etcd's quorum:
//!   the first crashed one (already out of the quorum) or else the lowest
//!   numbered; the others that need replacing are kept this time and
//!   listed in [`Plan::deferred`]; the next run replaces the next one.
//!   Workers are replaced all in one plan.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::nodes::{self, DesiredKind, DesiredNode, Role};
use super::spec::{ClusterSpec, MachineTemplate};

/// What exists: the nodes the state directory recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub nodes: Vec<ObservedNode>,
}

/// One existing node's recorded properties.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedNode {
    pub name: String,
    pub role: Role,
    /// Size and images of a microVM; `None` for a bare-metal machine.
    pub machine: Option<MachineTemplate>,
    pub ip: Ipv4Addr,
    pub mac: Option<[u8; 6]>,
    pub state: NodeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    /// The VM exited on its own (crash, panic) or vanished.
    Crashed,
}

/// Everything needed to make one node, all names derived (see
/// [`super::nodes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    pub name: String,
    pub role: Role,
    pub pool: String,
    pub ip: Ipv4Addr,
    /// `aa:bb:cc:dd:ee:ff`; none for a bare-metal machine given without.
    pub mac: Option<String>,
    pub machine: MachinePlan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum MachinePlan {
    Microvm {
        vcpus: u32,
        memory_mib: u64,
        kernel: PathBuf,
        image: PathBuf,
        tap: String,
        disk: PathBuf,
        seed: PathBuf,
    },
    Baremetal,
}

impl NodePlan {
    pub fn tap(&self) -> Option<&str> {
        match &self.machine {
            MachinePlan::Microvm { tap, .. } => Some(tap),
            MachinePlan::Baremetal => None,
        }
    }
}

/// A node that will go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletePlan {
    pub name: String,
    pub role: Role,
    pub ip: Ipv4Addr,
}

/// One step of a plan. `Keep` carries the node's plan too, so a listing
/// shows every node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Create(NodePlan),
    Replace {
        node: NodePlan,
        /// What differs: `vcpus 2 -> 4`, `crashed`.
        reasons: Vec<String>,
    },
    Delete(DeletePlan),
    Keep(NodePlan),
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create(_) => "create",
            Action::Replace { .. } => "replace",
            Action::Delete(_) => "delete",
            Action::Keep(_) => "keep",
        }
    }

    pub fn node_name(&self) -> &str {
        match self {
            Action::Create(n) | Action::Keep(n) | Action::Replace { node: n, .. } => &n.name,
            Action::Delete(d) => &d.name,
        }
    }
}

/// A control-plane replacement left for a later run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deferred {
    pub name: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub cluster: String,
    /// The API server's address: the spec's endpoint, or the first
    /// control-plane node's IP.
    pub endpoint: Option<Ipv4Addr>,
    pub actions: Vec<Action>,
    pub deferred: Vec<Deferred>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Validation counts addresses first; this is for an unvalidated spec.
    #[error("spec.network.cidr {cidr} has no free address left for node {node}")]
    AddressesExhausted { cidr: ipnet::Ipv4Net, node: String },
}

/// Plans `spec` against `observed`; disks and seeds go under
/// `<state_dir>/<cluster>/<node>/`. Call it on a validated spec.
pub fn plan(spec: &ClusterSpec, observed: &Observed, state_dir: &Path) -> Result<Plan, PlanError> {
    let cluster = &spec.metadata.name;
    let desired = nodes::desired_nodes(spec);
    let seen: BTreeMap<&str, &ObservedNode> = observed
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n))
        .collect();
    let ips = assign_ips(spec, &desired, &seen)?;
    let mut cp_actions = Vec::new();
    let mut worker_actions = Vec::new();
    let mut cp_replacements = Vec::new();
    for (node, ip) in desired.iter().zip(ips) {
        let plan = node_plan(cluster, node, ip, state_dir);
        let action = match seen.get(node.name.as_str()) {
            None => Action::Create(plan),
            Some(o) => match drift(&plan, o) {
                reasons if reasons.is_empty() => Action::Keep(plan),
                reasons => Action::Replace {
                    node: plan,
                    reasons,
                },
            },
        };
        if node.role == Role::ControlPlane {
            if matches!(action, Action::Replace { .. }) {
                let crashed = seen[node.name.as_str()].state == NodeState::Crashed;
                cp_replacements.push((cp_actions.len(), crashed));
            }
            cp_actions.push(action);
        } else {
            worker_actions.push(action);
        }
    }
    let deferred = defer_control_plane_replacements(&mut cp_actions, &cp_replacements);
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    let mut deletes: Vec<&ObservedNode> = observed
        .nodes
        .iter()
        .filter(|o| !wanted.contains(o.name.as_str()))
        .collect();
    // Highest-numbered first; then by name, so the order is total.
    deletes.sort_by(|a, b| {
        (nodes::name_index(&b.name), &b.name).cmp(&(nodes::name_index(&a.name), &a.name))
    });
    let delete = |role: Role| {
        deletes.iter().filter(move |o| o.role == role).map(|o| {
            Action::Delete(DeletePlan {
                name: o.name.clone(),
                role: o.role,
                ip: o.ip,
            })
        })
    };
    let endpoint = spec.spec.kubernetes.control_plane_endpoint.or_else(|| {
        cp_actions.first().and_then(|a| match a {
            Action::Create(n) | Action::Keep(n) | Action::Replace { node: n, .. } => Some(n.ip),
            Action::Delete(_) => None,
        })
    });
    let mut actions = cp_actions;
    actions.extend(delete(Role::ControlPlane));
    actions.extend(worker_actions);
    actions.extend(delete(Role::Worker));
    Ok(Plan {
        cluster: cluster.clone(),
        endpoint,
        actions,
        deferred,
    })
}

/// Keeps all control-plane replacements but one: the first crashed node's,
/// or else the lowest-numbered.
fn defer_control_plane_replacements(
    actions: &mut [Action],
    replacements: &[(usize, bool)],
) -> Vec<Deferred> {
    let chosen = replacements
        .iter()
        .find(|(_, crashed)| *crashed)
        .or(replacements.first())
        .map(|(i, _)| *i);
    let mut deferred = Vec::new();
    for &(i, _) in replacements {
        if Some(i) == chosen {
            continue;
        }
        let keep = match &actions[i] {
            Action::Replace { node, reasons } => {
                deferred.push(Deferred {
                    name: node.name.clone(),
                    reasons: reasons.clone(),
                });
                Action::Keep(node.clone())
            }
            other => other.clone(),
        };
        actions[i] = keep;
    }
    deferred
}

/// One IP per desired node, in order (see the module's rules).
fn assign_ips(
    spec: &ClusterSpec,
    desired: &[DesiredNode],
    seen: &BTreeMap<&str, &ObservedNode>,
) -> Result<Vec<Ipv4Addr>, PlanError> {
    let net = &spec.spec.network;
    let hosts = nodes::usable_hosts(&net.cidr);
    let mut taken = nodes::reserved_addresses(spec);
    let mut ips: Vec<Option<Ipv4Addr>> = vec![None; desired.len()];
    // Bare-metal machines have theirs; existing microVMs keep theirs.
    for (slot, node) in ips.iter_mut().zip(desired) {
        match &node.kind {
            DesiredKind::Baremetal { ip, .. } => *slot = Some(*ip),
            DesiredKind::Microvm(_) => {
                if let Some(o) = seen.get(node.name.as_str()) {
                    if hosts.contains(&u32::from(o.ip)) && taken.insert(o.ip) {
                        *slot = Some(o.ip);
                    }
                }
            }
        }
    }
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    let doomed: BTreeSet<Ipv4Addr> = seen
        .values()
        .filter(|o| !wanted.contains(o.name.as_str()))
        .map(|o| o.ip)
        .collect();
    let gateway = u32::from(net.gateway);
    let (first, last) = (*hosts.start(), *hosts.end());
    let after_gateway = gateway.saturating_add(1).max(first);
    let order = (after_gateway..=last).chain(first..after_gateway.min(last.saturating_add(1)));
    let taken_before = taken.clone();
    let mut fresh = order
        .clone()
        .map(Ipv4Addr::from)
        .filter(|ip| !taken_before.contains(ip) && !doomed.contains(ip));
    let mut reused = order
        .map(Ipv4Addr::from)
        .filter(|ip| !taken_before.contains(ip) && doomed.contains(ip));
    ips.iter()
        .zip(desired)
        .map(|(ip, node)| {
            ip.or_else(|| fresh.next())
                .or_else(|| reused.next())
                .ok_or_else(|| PlanError::AddressesExhausted {
                    cidr: net.cidr,
                    node: node.name.clone(),
                })
        })
        .collect()
}

fn node_plan(cluster: &str, node: &DesiredNode, ip: Ipv4Addr, state_dir: &Path) -> NodePlan {
    let (mac, machine) = match &node.kind {
        DesiredKind::Microvm(t) => {
            let dir = nodes::node_dir(state_dir, cluster, &node.name);
            (
                Some(vmm_core::format_mac(&nodes::node_mac(cluster, &node.name))),
                MachinePlan::Microvm {
                    vcpus: t.vcpus,
                    memory_mib: t.memory_mib,
                    kernel: t.kernel.clone(),
                    image: t.image.clone(),
                    tap: nodes::tap_name(cluster, &node.name, 0),
                    disk: dir.join("root.img"),
                    seed: dir.join("seed.img"),
                },
            )
        }
        DesiredKind::Baremetal { mac, .. } => (
            // Normalized when it parses (validation refuses it otherwise).
            mac.as_ref().map(|m| {
                vmm_core::parse_mac(m)
                    .map(|m| vmm_core::format_mac(&m))
                    .unwrap_or_else(|_| m.clone())
            }),
            MachinePlan::Baremetal,
        ),
    };
    NodePlan {
        name: node.name.clone(),
        role: node.role,
        pool: node.pool.clone(),
        ip,
        mac,
        machine,
    }
}

/// Why an observed node is not what `plan` asks for (empty: it is).
fn drift(plan: &NodePlan, o: &ObservedNode) -> Vec<String> {
    let mut reasons = Vec::new();
    if o.state == NodeState::Crashed {
        reasons.push("crashed".to_string());
    }
    if o.role != plan.role {
        reasons.push(format!("role {} -> {}", o.role, plan.role));
    }
    match (&plan.machine, &o.machine) {
        (
            MachinePlan::Microvm {
                vcpus,
                memory_mib,
                kernel,
                image,
                ..
            },
            Some(t),
        ) => {
            if t.vcpus != *vcpus {
                reasons.push(format!("vcpus {} -> {vcpus}", t.vcpus));
            }
            if t.memory_mib != *memory_mib {
                reasons.push(format!("memoryMib {} -> {memory_mib}", t.memory_mib));
            }
            if t.kernel != *kernel {
                reasons.push(format!(
                    "kernel {} -> {}",
                    t.kernel.display(),
                    kernel.display()
                ));
            }
            if t.image != *image {
                reasons.push(format!(
                    "image {} -> {}",
                    t.image.display(),
                    image.display()
                ));
            }
        }
        (MachinePlan::Microvm { .. }, None) => reasons.push("bare metal -> microvm".to_string()),
        (MachinePlan::Baremetal, Some(_)) => reasons.push("microvm -> bare metal".to_string()),
        (MachinePlan::Baremetal, None) => {}
    }
    if o.ip != plan.ip {
        reasons.push(format!("ip {} -> {}", o.ip, plan.ip));
    }
    let observed_mac = o.mac.map(|m| vmm_core::format_mac(&m));
    if plan.mac.is_some() && observed_mac != plan.mac {
        reasons.push(format!(
            "mac {} -> {}",
            observed_mac.as_deref().unwrap_or("none"),
            plan.mac.as_deref().unwrap_or("none")
        ));
    }
    reasons
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
