//! The nodes a spec asks for, and the rules that name everything a node
//! owns. Every name is derived from the cluster and node names alone, so a
//! rerun finds what an earlier run made instead of duplicating it.
//!
//! | what | rule | example |
//! |---|---|---|
//! | control-plane node | `<cluster>-cp-<i>` | `edge1-cp-0` |
//! | microVM worker | `<cluster>-<pool>-<i>` | `edge1-general-1` |
//! | bare-metal worker | the machine's `name`, as given | `rack1-a` |
//! | MAC (microVM) | `devices::virtio::net::mac_from_name("<cluster>/<node>/eth0")`: `02:` + 40 bits of FNV-1a | `02:…` |
//! | TAP | `m` + the top 12 hex digits of mix64(FNV-1a-64(`<cluster>/<node>`)) + `-` + NIC index: 15 bytes, IFNAMSIZ − 1 | `m1a2b3c4d5e6f-0` |
//! | root disk | `<state_dir>/<cluster>/<node>/root.img` | |
//! | cloud-init seed | `<state_dir>/<cluster>/<node>/seed.img` | |
//!
//! The TAP hash covers the cluster name, so two clusters on one host get
//! different TAPs; 48 bits make a collision between any two of a host's
//! nodes vanishingly rare, and validation refuses one within a spec.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{ClusterSpec, MachineTemplate, WorkerPool};

/// Longest interface name Linux takes (IFNAMSIZ less the NUL).
pub const MAX_IFNAME: usize = 15;
/// Longest node name: a DNS label (a node's hostname).
pub const MAX_NODE_NAME: usize = 63;
/// The pool name control-plane node names use; no worker pool may take it.
pub const CONTROL_PLANE_POOL: &str = "cp";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        })
    }
}

/// One node the spec asks for, before addresses are assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredNode {
    pub name: String,
    pub role: Role,
    /// The worker pool's name; `cp` for the control plane.
    pub pool: String,
    /// The node's number within its pool (a bare-metal machine's position).
    pub index: u32,
    /// Where in the spec it comes from, for error messages:
    /// `spec.controlPlane`, `spec.workers[1]`, `spec.workers[2].machines[0]`.
    pub field: String,
    pub kind: DesiredKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DesiredKind {
    /// A microVM mercury runs.
    Microvm(MachineTemplate),
    /// An existing machine with its own address (and maybe MAC, unparsed).
    Baremetal { ip: Ipv4Addr, mac: Option<String> },
}

/// Every node of `spec`, in plan order: control plane by index, then the
/// worker pools in file order, each by index.
pub fn desired_nodes(spec: &ClusterSpec) -> Vec<DesiredNode> {
    let cluster = &spec.metadata.name;
    let cp = &spec.spec.control_plane;
    let mut nodes: Vec<DesiredNode> = (0..cp.count)
        .map(|i| DesiredNode {
            name: node_name(cluster, CONTROL_PLANE_POOL, i),
            role: Role::ControlPlane,
            pool: CONTROL_PLANE_POOL.to_string(),
            index: i,
            field: "spec.controlPlane".to_string(),
            kind: DesiredKind::Microvm(cp.machine()),
        })
        .collect();
    for (p, pool) in spec.spec.workers.iter().enumerate() {
        match pool {
            WorkerPool::Microvm(pool) => nodes.extend((0..pool.count).map(|i| DesiredNode {
                name: node_name(cluster, &pool.name, i),
                role: Role::Worker,
                pool: pool.name.clone(),
                index: i,
                field: format!("spec.workers[{p}]"),
                kind: DesiredKind::Microvm(pool.machine()),
            })),
            WorkerPool::Baremetal(pool) => nodes.extend(pool.machines.iter().enumerate().map(
                |(m, machine)| DesiredNode {
                    name: machine.name.clone(),
                    role: Role::Worker,
                    pool: pool.name.clone(),
                    index: m as u32,
                    field: format!("spec.workers[{p}].machines[{m}]"),
                    kind: DesiredKind::Baremetal {
                        ip: machine.ip,
                        mac: machine.mac.clone(),
                    },
                },
            )),
        }
    }
    nodes
}

/// `<cluster>-<pool>-<index>`.
pub fn node_name(cluster: &str, pool: &str, index: u32) -> String {
    format!("{cluster}-{pool}-{index}")
}

/// The number at the end of a node name (`edge1-general-12` → 12), used to
/// order scale-down deletes; names without one sort first.
pub fn name_index(name: &str) -> Option<u32> {
    name.rsplit('-').next()?.parse().ok()
}

/// splitmix64's finalizer: FNV-1a alone changes few high bits when names
/// differ only in their last character (`-0`, `-1`); this spreads every
/// input bit over all 64.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The TAP for NIC `nic` (0..=9) of `node`: 15 bytes.
pub fn tap_name(cluster: &str, node: &str, nic: u8) -> String {
    let hash = mix64(devices::fnv1a64(format!("{cluster}/{node}").bytes())) >> 16;
    format!("m{hash:012x}-{}", nic % 10)
}

/// The MAC of a microVM node's first NIC.
pub fn node_mac(cluster: &str, node: &str) -> [u8; 6] {
    devices::virtio::net::mac_from_name(&format!("{cluster}/{node}/eth0"))
}

/// The directory holding everything a node owns on the host.
pub fn node_dir(state_dir: &Path, cluster: &str, node: &str) -> PathBuf {
    state_dir.join(cluster).join(node)
}

/// The node network's host addresses, network and broadcast excluded
/// (empty for a /31 or /32, which validation refuses).
pub fn usable_hosts(net: &ipnet::Ipv4Net) -> std::ops::RangeInclusive<u32> {
    let net = net.trunc();
    let first = u32::from(net.network()).saturating_add(1);
    let last = u32::from(net.broadcast()).saturating_sub(1);
    // A /31 or /32 leaves first > last: an empty range.
    first..=last
}

/// Addresses in the node network that no node gets: the gateway, a
/// control-plane virtual IP, DNS servers, bare-metal machines' own.
pub fn reserved_addresses(spec: &ClusterSpec) -> std::collections::BTreeSet<Ipv4Addr> {
    let s = &spec.spec;
    let mut reserved: std::collections::BTreeSet<Ipv4Addr> = [s.network.gateway]
        .into_iter()
        .chain(s.kubernetes.control_plane_endpoint)
        .chain(s.network.dns.iter().copied())
        .collect();
    for pool in &s.workers {
        if let WorkerPool::Baremetal(pool) = pool {
            reserved.extend(pool.machines.iter().map(|m| m.ip));
        }
    }
    let hosts = usable_hosts(&s.network.cidr);
    reserved.retain(|ip| hosts.contains(&u32::from(*ip)));
    reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_ifnamsiz_and_differ_by_cluster() {
        let a = tap_name("edge1", "edge1-cp-0", 0);
        assert_eq!(a.len(), MAX_IFNAME, "{a}");
        assert_eq!(a, tap_name("edge1", "edge1-cp-0", 0));
        assert_ne!(a, tap_name("edge2", "edge1-cp-0", 0));
        assert!(a.starts_with('m') && a.ends_with("-0"));
        let long = "x".repeat(63);
        assert_eq!(tap_name(&long, &long, 3).len(), MAX_IFNAME);
    }

    #[test]
    fn macs_are_local_unicast_and_stable() {
        let m = node_mac("edge1", "edge1-cp-0");
        assert_eq!(m[0], 0x02);
        assert_eq!(m, node_mac("edge1", "edge1-cp-0"));
        assert_ne!(m, node_mac("edge1", "edge1-cp-1"));
    }

    #[test]
    fn name_index_reads_the_trailing_number() {
        assert_eq!(name_index("edge1-general-12"), Some(12));
        assert_eq!(name_index("rack1-a"), None);
    }
}
