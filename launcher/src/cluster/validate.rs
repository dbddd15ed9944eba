//! Validation of a parsed [`ClusterSpec`]: every problem at once, each
//! naming the field it is about (`spec.workers[1].machines[0].ip`), plus
//! warnings that do not stop a plan. Nothing is created from a spec with
//! errors.
//!
//! Two steps: [`validate`] looks only at the spec; [`check_files`] looks
//! for the kernel and image files on this host (`mercury cluster plan
//! --no-file-checks` skips it, so a spec plans on a machine without
//! images).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::nodes::{self, DesiredKind, CONTROL_PLANE_POOL, MAX_IFNAME, MAX_NODE_NAME};
use super::spec::{ClusterSpec, EtcdMode, WorkerPool, API_VERSION, KIND};

/// vCPUs a microVM may have (as `mercury run`).
const VCPUS: std::ops::RangeInclusive<u32> = 1..=32;
/// The least memory a Kubernetes node boots in, MiB.
const MIN_MEMORY_MIB: u64 = 256;
/// Longest cluster name: node names (`<cluster>-<pool>-<n>`) must stay
/// DNS labels.
const MAX_CLUSTER_NAME: usize = 40;

/// One problem with a spec, about one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The field's path, as in the YAML: `spec.network.cidr`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// What [`validate`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<ValidationError>,
    pub warnings: Vec<ValidationError>,
}

impl Report {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ValidationError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Checks everything about `spec` but the files it names.
pub fn validate(spec: &ClusterSpec) -> Report {
    let mut r = Report::default();
    if spec.api_version != API_VERSION {
        r.error(
            "apiVersion",
            format!(
                "{:?} is not supported (expected {API_VERSION})",
                spec.api_version
            ),
        );
    }
    if spec.kind != KIND {
        r.error("kind", format!("{:?} is not {KIND}", spec.kind));
    }
    check_label(
        &mut r,
        "metadata.name",
        &spec.metadata.name,
        MAX_CLUSTER_NAME,
    );
    check_network(&mut r, spec);
    check_kubernetes(&mut r, spec);
    check_machines(&mut r, spec);
    check_nodes(&mut r, spec);
    for (i, key) in spec.spec.ssh.authorized_keys.iter().enumerate() {
        let kind = key.split_whitespace().next().unwrap_or("");
        let known =
            kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
        if !known || key.split_whitespace().count() < 2 {
            r.error(
                format!("spec.ssh.authorizedKeys[{i}]"),
                format!(
                    "{:?} is not an OpenSSH public key (\"ssh-ed25519 AAAA… comment\")",
                    short(key)
                ),
            );
        }
    }
    r
}

/// Checks that the kernel and image files the spec names exist.
pub fn check_files(spec: &ClusterSpec) -> Vec<ValidationError> {
    let s = &spec.spec;
    let mut templates = vec![("spec.controlPlane".to_string(), s.control_plane.machine())];
    for (p, pool) in s.workers.iter().enumerate() {
        if let WorkerPool::Microvm(pool) = pool {
            templates.push((format!("spec.workers[{p}]"), pool.machine()));
        }
    }
    let mut errors = Vec::new();
    for (field, t) in templates {
        for (key, path) in [("kernel", &t.kernel), ("image", &t.image)] {
            if !path.is_file() {
                errors.push(ValidationError {
                    field: format!("{field}.{key}"),
                    message: format!("{} does not exist or is not a file", path.display()),
                });
            }
        }
    }
    errors
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A DNS label: lowercase letters, digits and `-`, starting with a letter,
/// not ending with `-`.
fn check_label(r: &mut Report, field: &str, name: &str, max: usize) {
    let ok = name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        r.error(
            field,
            format!(
                "{name:?} is not a DNS label of at most {max} characters (lowercase letters, digits, '-', starting with a letter)"
            ),
        );
    }
}

fn check_cidr(r: &mut Report, field: &str, net: &Ipv4Net) {
    if net.trunc() != *net {
        r.error(
            field,
            format!("{net} has host bits set (the network is {})", net.trunc()),
        );
    }
}

fn check_network(r: &mut Report, spec: &ClusterSpec) {
    let n = &spec.spec.network;
    check_cidr(r, "spec.network.cidr", &n.cidr);
    if n.cidr.prefix_len() > 30 {
        r.error(
            "spec.network.cidr",
            format!(
                "{} is too small: a node network needs a /30 or larger",
                n.cidr
            ),
        );
    }
    let bridge_ok = !n.bridge.is_empty()
        && n.bridge.len() <= MAX_IFNAME
        && n.bridge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !bridge_ok {
        r.error(
            "spec.network.bridge",
            format!("{:?} is not an interface name (1..={MAX_IFNAME} bytes of letters, digits, '-', '_', '.')", n.bridge),
        );
    }
    if !is_host(&n.cidr, n.gateway) {
        r.error(
            "spec.network.gateway",
            format!(
                "{} is not a host address of spec.network.cidr {}",
                n.gateway, n.cidr
            ),
        );
    }
}

fn is_host(net: &Ipv4Net, ip: Ipv4Addr) -> bool {
    nodes::usable_hosts(net).contains(&u32::from(ip))
}

fn check_kubernetes(r: &mut Report, spec: &ClusterSpec) {
    let k = &spec.spec.kubernetes;
    let version_ok = k
        .version
        .strip_prefix('v')
        .map(|v| {
            let parts: Vec<_> = v.split('.').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .unwrap_or(false);
    if !version_ok {
        r.error(
            "spec.kubernetes.version",
            format!("{:?} is not a Kubernetes version like v1.31.2", k.version),
        );
    }
    check_cidr(r, "spec.kubernetes.podCidr", &k.pod_cidr);
    check_cidr(r, "spec.kubernetes.serviceCidr", &k.service_cidr);
    let nets = [
        ("spec.network.cidr", spec.spec.network.cidr),
        ("spec.kubernetes.podCidr", k.pod_cidr),
        ("spec.kubernetes.serviceCidr", k.service_cidr),
    ];
    for (i, (field, net)) in nets.iter().enumerate() {
        for (other_field, other) in &nets[..i] {
            if overlaps(net, other) {
                r.error(*field, format!("{net} overlaps {other_field} {other}"));
            }
        }
    }
    if let Some(vip) = k.control_plane_endpoint {
        let n = &spec.spec.network;
        if (n.cidr.contains(&vip) && !is_host(&n.cidr, vip)) || vip == n.gateway {
            r.error(
                "spec.kubernetes.controlPlaneEndpoint",
                format!(
                    "{vip} is the network, broadcast or gateway address of spec.network.cidr {}",
                    n.cidr
                ),
            );
        }
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.trunc().contains(&b.trunc().network()) || b.trunc().contains(&a.trunc().network())
}

fn check_machines(r: &mut Report, spec: &ClusterSpec) {
    let s = &spec.spec;
    let cp = &s.control_plane;
    if cp.count == 0 {
        r.error(
            "spec.controlPlane.count",
            "a cluster needs at least one control-plane node",
        );
    } else if cp.count.is_multiple_of(2) && s.etcd.mode == EtcdMode::Stacked {
        r.warn(
            "spec.controlPlane.count",
            format!(
                "{} control-plane nodes with stacked etcd: an even count tolerates no more failures than {} (etcd quorum)",
                cp.count,
                cp.count - 1
            ),
        );
    }
    let mut templates = vec![("spec.controlPlane".to_string(), cp.machine())];
    let mut pools = BTreeMap::new();
    for (p, pool) in s.workers.iter().enumerate() {
        let field = format!("spec.workers[{p}]");
        check_label(r, &format!("{field}.name"), pool.name(), MAX_NODE_NAME);
        if pool.name() == CONTROL_PLANE_POOL {
            r.error(
                format!("{field}.name"),
                format!("{CONTROL_PLANE_POOL:?} is reserved for the control plane's node names"),
            );
        }
        if let Some(first) = pools.insert(pool.name().to_string(), p) {
            r.error(
                format!("{field}.name"),
                format!(
                    "pool name {:?} is already used by spec.workers[{first}]",
                    pool.name()
                ),
            );
        }
        match pool {
            WorkerPool::Microvm(pool) => templates.push((field, pool.machine())),
            WorkerPool::Baremetal(pool) if pool.machines.is_empty() => r.error(
                format!("{field}.machines"),
                "a baremetal pool needs at least one machine",
            ),
            WorkerPool::Baremetal(_) => {}
        }
    }
    for (field, t) in templates {
        if !VCPUS.contains(&t.vcpus) {
            r.error(
                format!("{field}.vcpus"),
                format!(
                    "{} is out of range ({}..={})",
                    t.vcpus,
                    VCPUS.start(),
                    VCPUS.end()
                ),
            );
        }
        if t.memory_mib < MIN_MEMORY_MIB {
            r.error(
                format!("{field}.memoryMib"),
                format!(
                    "{} MiB is less than a node needs ({MIN_MEMORY_MIB} MiB)",
                    t.memory_mib
                ),
            );
        }
    }
}

/// Names, addresses and MACs across all nodes: unique, inside the network,
/// and enough addresses for the microVMs.
fn check_nodes(r: &mut Report, spec: &ClusterSpec) {
    let cluster = &spec.metadata.name;
    let net = &spec.spec.network;
    let desired = nodes::desired_nodes(spec);
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    let mut taps: BTreeMap<String, String> = BTreeMap::new();
    let mut macs: BTreeMap<[u8; 6], String> = BTreeMap::new();
    let mut ips: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut microvms = 0u64;
    for node in &desired {
        let name_field = format!("{}.name", node.field);
        if let Some(first) = names.insert(&node.name, &node.field) {
            r.error(
                name_field.clone(),
                format!("node name {:?} is already used by {first}", node.name),
            );
            continue;
        }
        match &node.kind {
            DesiredKind::Microvm(_) => {
                microvms += 1;
                if node.name.len() > MAX_NODE_NAME {
                    r.error(
                        name_field,
                        format!(
                            "node name {:?} is longer than {MAX_NODE_NAME} characters",
                            node.name
                        ),
                    );
                }
                let tap = nodes::tap_name(cluster, &node.name, 0);
                if let Some(first) = taps.insert(tap.clone(), node.name.clone()) {
                    r.error(
                        node.field.clone(),
                        format!("node {:?} would share TAP {tap} with {first:?}", node.name),
                    );
                }
                let mac = nodes::node_mac(cluster, &node.name);
                if let Some(first) = macs.insert(mac, node.name.clone()) {
                    r.error(
                        node.field.clone(),
                        format!("node {:?} would share its MAC with {first:?}", node.name),
                    );
                }
            }
            DesiredKind::Baremetal { ip, mac } => {
                check_label(r, &name_field, &node.name, MAX_NODE_NAME);
                let ip_field = format!("{}.ip", node.field);
                if !is_host(&net.cidr, *ip) {
                    r.error(
                        ip_field.clone(),
                        format!(
                            "{ip} is not a host address of spec.network.cidr {}",
                            net.cidr
                        ),
                    );
                } else if *ip == net.gateway {
                    r.error(ip_field.clone(), format!("{ip} is spec.network.gateway"));
                } else if Some(*ip) == spec.spec.kubernetes.control_plane_endpoint {
                    r.error(
                        ip_field.clone(),
                        format!("{ip} is spec.kubernetes.controlPlaneEndpoint"),
                    );
                }
                if let Some(first) = ips.insert(*ip, node.field.clone()) {
                    r.error(ip_field, format!("{ip} is already the address of {first}"));
                }
                if let Some(text) = mac {
                    let mac_field = format!("{}.mac", node.field);
                    match vmm_core::parse_mac(text) {
                        Ok(mac) => {
                            if let Some(first) = macs.insert(mac, node.name.clone()) {
                                r.error(
                                    mac_field,
                                    format!("{text} is already the MAC of {first:?}"),
                                );
                            }
                        }
                        Err(e) => r.error(mac_field, e.to_string()),
                    }
                }
            }
        }
    }
    let hosts = nodes::usable_hosts(&net.cidr);
    let free = (u64::from(*hosts.end()) + 1)
        .saturating_sub(u64::from(*hosts.start()))
        .saturating_sub(nodes::reserved_addresses(spec).len() as u64);
    if microvms > free {
        r.error(
            "spec.network.cidr",
            format!(
                "{} holds {free} node addresses besides the gateway, DNS, endpoint and bare-metal ones; the spec asks for {microvms} microVM nodes",
                net.cidr
            ),
        );
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
