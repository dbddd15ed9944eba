//! The cluster spec: what a `kind: Cluster` YAML file says should exist.
//!
//! Plain serde data, Kubernetes-style (`apiVersion`, `kind`, `metadata`,
//! `spec`), camelCase keys, unknown fields rejected everywhere. Syntax
//! (types, addresses, CIDR notation) is checked here by serde, with the
//! field path in the message; meaning (overlaps, counts, names) is checked
//! by [`super::validate`].

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The only `apiVersion` this mercury reads.
pub const API_VERSION: &str = "mercury.dev/v1alpha1";
/// The only `kind` this mercury reads.
pub const KIND: &str = "Cluster";

/// A whole cluster file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The cluster name: a DNS label; every node and resource name starts
    /// with it.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub network: Network,
    pub kubernetes: Kubernetes,
    #[serde(default)]
    pub etcd: Etcd,
    pub control_plane: ControlPlane,
    #[serde(default)]
    pub workers: Vec<WorkerPool>,
    #[serde(default)]
    pub ssh: Ssh,
}

/// The node network: one bridge on the host, one address per node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    pub cidr: Ipv4Net,
    /// The host bridge's name (an interface name, at most 15 bytes).
    pub bridge: String,
    /// The bridge's own address, the nodes' default route.
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kubernetes {
    /// `v1.31.2`.
    pub version: String,
    pub pod_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    /// A virtual IP in the node network for the API server; absent: the
    /// first control-plane node's address.
    #[serde(default)]
    pub control_plane_endpoint: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    #[serde(default)]
    pub mode: EtcdMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdMode {
    /// One etcd member on each control-plane node, as kubeadm does.
    #[default]
    Stacked,
    /// etcd run from the node image on the control-plane nodes, outside
    /// kubeadm's management.
    External,
}

/// A microVM's size and images, as both the control plane and a `microvm`
/// pool give them (written out in each: serde's `flatten` does not mix with
/// `deny_unknown_fields`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MachineTemplate {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    /// The root disk image each node's disk is copied from.
    pub image: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlane {
    pub count: u32,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    /// The root disk image each node's disk is copied from.
    pub image: PathBuf,
}

/// A group of worker nodes, told apart by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WorkerPool {
    /// `count` identical microVMs.
    Microvm(MicrovmPool),
    /// Machines that already exist, joined as they are.
    Baremetal(BaremetalPool),
}

impl ControlPlane {
    pub fn machine(&self) -> MachineTemplate {
        MachineTemplate {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            kernel: self.kernel.clone(),
            image: self.image.clone(),
        }
    }
}

impl MicrovmPool {
    pub fn machine(&self) -> MachineTemplate {
        MachineTemplate {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            kernel: self.kernel.clone(),
            image: self.image.clone(),
        }
    }
}

impl WorkerPool {
    pub fn name(&self) -> &str {
        match self {
            WorkerPool::Microvm(p) => &p.name,
            WorkerPool::Baremetal(p) => &p.name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MicrovmPool {
    pub name: String,
    pub count: u32,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    /// The root disk image each node's disk is copied from.
    pub image: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaremetalPool {
    pub name: String,
    pub machines: Vec<BaremetalMachine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaremetalMachine {
    /// The node name, as the machine's hostname.
    pub name: String,
    pub ip: Ipv4Addr,
    /// `52:54:00:12:34:56`; checked by validation.
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ssh {
    #[serde(default)]
    pub authorized_keys: Vec<String>,
}

/// A spec file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot parse cluster spec {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("cannot read cluster spec {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClusterSpec {
    /// Parses a spec from YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(text)
    }

    /// Reads and parses the spec file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|source| SpecError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}
