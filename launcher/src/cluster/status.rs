//! `status` and `down`: what the state directory says exists, compared with
//! the spec; and removing exactly that.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::hostnet::HostNet;
use super::node;
use super::nodes::{self, Role};
use super::plan::{self, Action};
use super::spec::ClusterSpec;
use super::state::{self, ClusterDir, NodeKind, NodeRecord};
use super::up::{self, Progress, UpError};

/// A node's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Running and reported ready (its cloud-init finished).
    Ready,
    /// Running, not ready yet.
    Running,
    /// Recorded, but its process is gone.
    Crashed,
    /// The spec asks for it and nothing was made.
    Missing,
    /// A bare-metal machine whose kubelet does not answer yet.
    Pending,
    /// A bare-metal machine whose kubelet answers.
    Joined,
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// One node as `status` and `up` show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    pub role: Role,
    pub kind: &'static str,
    pub ip: Ipv4Addr,
    pub mac: Option<String>,
    pub state: Condition,
    /// Seconds since its process started.
    pub uptime: Option<f64>,
    /// Seconds from start to ready, as `up` saw it.
    pub ready_after: Option<f64>,
    /// The guest's own uptime when it reported ready.
    pub guest_uptime_at_ready: Option<f64>,
    /// The spec still asks for it.
    pub in_spec: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub cluster: String,
    pub nodes: Vec<NodeStatus>,
    /// Why the host does not match the spec (empty: it does).
    pub differences: Vec<String>,
}

/// The kubelet's port: a bare-metal worker that answers on it has joined.
const KUBELET_PORT: u16 = 10250;

/// Compares the state directory with `spec`.
pub fn status(spec: &ClusterSpec, state_dir: &Path) -> Result<ClusterStatus, UpError> {
    let cluster = ClusterDir::new(state_dir, &spec.metadata.name);
    let records = cluster.load_nodes()?;
    let observed = state::observed(&records);
    let plan = plan::plan(spec, &observed, state_dir)?;
    let wanted: BTreeSet<&str> = plan
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::Delete(_)))
        .map(|a| a.node_name())
        .collect();
    let now = node::unix_now();
    let mut nodes = Vec::new();
    let mut differences = Vec::new();
    for action in &plan.actions {
        match action {
            Action::Delete(d) => differences.push(format!("{} is not in the spec", d.name)),
            Action::Replace { node, reasons } => {
                differences.push(format!("{} differs: {}", node.name, reasons.join(", ")));
            }
            Action::Create(n) => differences.push(format!("{} is missing", n.name)),
            Action::Keep(_) => {}
        }
    }
    for action in &plan.actions {
        if let Action::Create(n) = action {
            nodes.push(NodeStatus {
                name: n.name.clone(),
                role: n.role,
                kind: match n.machine {
                    plan::MachinePlan::Microvm { .. } => "microvm",
                    plan::MachinePlan::Baremetal => "baremetal",
                },
                ip: n.ip,
                mac: n.mac.clone(),
                state: Condition::Missing,
                uptime: None,
                ready_after: None,
                guest_uptime_at_ready: None,
                in_spec: true,
            });
        }
    }
    for r in &records {
        let state = condition(&cluster, r);
        if r.kind == NodeKind::Microvm && state != Condition::Ready && state != Condition::Crashed {
            differences.push(format!("{} is not ready", r.name));
        }
        nodes.push(NodeStatus {
            name: r.name.clone(),
            role: r.role,
            kind: match r.kind {
                NodeKind::Microvm => "microvm",
                NodeKind::Baremetal => "baremetal",
            },
            ip: r.ip,
            mac: r.mac.clone(),
            state,
            uptime: match state {
                Condition::Ready | Condition::Running => r.started_at.map(|s| now - s),
                _ => None,
            },
            ready_after: r.ready_after,
            guest_uptime_at_ready: r.guest_uptime_at_ready,
            in_spec: wanted.contains(r.name.as_str()),
        });
    }
    // Spec order (control plane, then pools), then what the spec dropped.
    let order: Vec<String> = nodes::desired_nodes(spec)
        .into_iter()
        .map(|d| d.name)
        .collect();
    nodes.sort_by_key(|n| {
        (
            order
                .iter()
                .position(|o| *o == n.name)
                .unwrap_or(usize::MAX),
            n.name.clone(),
        )
    });
    Ok(ClusterStatus {
        cluster: spec.metadata.name.clone(),
        nodes,
        differences,
    })
}

fn condition(cluster: &ClusterDir, r: &NodeRecord) -> Condition {
    match r.kind {
        NodeKind::Baremetal => {
            let addr = SocketAddr::from((r.ip, KUBELET_PORT));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                Condition::Joined
            } else {
                Condition::Pending
            }
        }
        NodeKind::Microvm if !state::process_alive(r) => Condition::Crashed,
        NodeKind::Microvm => {
            let ready = r.ready_after.is_some()
                || matches!(
                    node::find_ready(&cluster.node(&r.name).console(), &r.name, &r.instance_id),
                    Ok(Some(_))
                );
            if ready {
                Condition::Ready
            } else {
                Condition::Running
            }
        }
    }
}

/// What `down` removed.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DownReport {
    pub nodes: Vec<String>,
    pub taps: Vec<String>,
    pub bridge: Option<String>,
    pub bridge_address: Option<String>,
}

/// Stops every node of cluster `name` (power button, then SIGTERM after
/// `grace`), removes its TAPs, the bridge or address mercury added, and the
/// cluster's directory. Running it again finds nothing and does nothing.
pub fn down(
    name: &str,
    state_dir: &Path,
    grace: Duration,
    progress: &mut dyn Progress,
) -> Result<DownReport, UpError> {
    let cluster = ClusterDir::new(state_dir, name);
    let mut report = DownReport::default();
    if !cluster.exists() {
        return Ok(report);
    }
    let lock = cluster.lock()?;
    let records = cluster.load_nodes()?;
    let net = HostNet::open()?;
    // Power the nodes off together: each gets `grace`, not the sum.
    let stopped: Vec<io::Result<node::Stopped>> = std::thread::scope(|s| {
        let stopping: Vec<_> = records
            .iter()
            .map(|r| s.spawn(move || node::stop(r, grace)))
            .collect();
        stopping
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other("its stopping thread panicked")))
            })
            .collect()
    });
    for (r, how) in records.iter().zip(stopped) {
        let how = how.map_err(|source| UpError::Node {
            node: r.name.clone(),
            what: "cannot stop it",
            source,
        })?;
        if how != node::Stopped::NotRunning {
            progress.event(&format!("stopped {} ({how:?})", r.name));
        }
    }
    // Each is stopped now: removing it finds it not running.
    for r in &records {
        up::remove_node(&cluster, &net, r, grace, progress)?;
        report.nodes.push(r.name.clone());
        report.taps.extend(r.tap.clone());
        progress.event(&format!("removed {}", r.name));
    }
    let record = cluster.load_cluster()?;
    if let Some(bridge) = record.bridge {
        if bridge.created {
            net.delete_link(&bridge.name)?;
            report.bridge = Some(bridge.name.clone());
            progress.event(&format!("removed bridge {}", bridge.name));
        } else if let Some(address) = bridge.added_address {
            net.remove_address(&bridge.name, address)?;
            report.bridge_address = Some(format!("{address} on {}", bridge.name));
            progress.event(&format!("removed {address} from bridge {}", bridge.name));
        }
    }
    drop(lock);
    cluster.remove_all().map_err(UpError::from)?;
    Ok(report)
}
