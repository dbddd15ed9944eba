//! The three cloud-init NoCloud documents of a node — `meta-data`,
//! `network-config` (version 2) and `user-data` (`#cloud-config`) — made
//! from typed structs serialized with serde, for a node of a validated spec
//! and its plan.
//!
//! What a node does on its first boot, by role:
//!
//! | node | kubeadm config | also written |
//! |---|---|---|
//! | the initializing control-plane node ([`initializes`]) | InitConfiguration + ClusterConfiguration; `kubeadm init --upload-certs` | CA cert + key |
//! | other control-plane nodes | JoinConfiguration with `controlPlane.certificateKey`; `kubeadm join` | CA cert + key |
//! | workers (microVM and bare metal) | JoinConfiguration; `kubeadm join` | |
//!
//! With `etcd.mode: external` every control-plane node also gets
//! `/etc/default/etcd` for Debian's etcd-server, one member per
//! control-plane node, **plain HTTP** on the node network (no TLS yet), and
//! starts it before kubeadm; with stacked etcd an etcd the image may have
//! enabled is stopped, so it cannot hold kubeadm's port 2379.
//!
//! An image without kubeadm still boots to the ready line: the node writes
//! why to `/var/lib/mercury/kubeadm-absent`. Every node writes
//! `mercury-kubeadm node=<name> result=ok|failed|absent` to
//! `/var/lib/mercury/kubeadm-result` and the console, and cloud-init's
//! final message is `mercury-ready node=<name> instance-id=<id>
//! uptime=<seconds>`: the line the host waits for.
//!
//! `network-config` is written as JSON (a subset of YAML), the other two
//! as YAML: see [`node_documents`].
//!
//! The NIC: a microVM's is matched by its MAC and named `eth0`. A bare-metal
//! machine's keeps its own name, unknown here: its `network-config` names it
//! [`IFACE_PLACEHOLDER`], which the join bundle's `apply.sh` replaces with
//! the interface it finds (by MAC, `--iface`, or the one holding the
//! machine's address).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::nodes::Role;
use super::plan::{Action, MachinePlan, NodePlan, Plan};
use super::secrets::{self, ClusterSecrets};
use super::spec::{ClusterSpec, EtcdMode};

/// The API server's port on every control-plane node and the endpoint.
pub const API_SERVER_PORT: u16 = 6443;
/// Where the node's kubeadm configuration is written (mode 0600).
pub const KUBEADM_CONFIG_PATH: &str = "/var/lib/mercury/kubeadm.yaml";
/// Written when the image has no kubeadm.
pub const KUBEADM_ABSENT_PATH: &str = "/var/lib/mercury/kubeadm-absent";
/// The `mercury-kubeadm ...` result line, also sent to the console.
pub const KUBEADM_RESULT_PATH: &str = "/var/lib/mercury/kubeadm-result";
/// The microVM NIC's name in the guest.
pub const MICROVM_IFACE: &str = "eth0";
/// A bare-metal machine's interface name in its `network-config`, for the
/// join bundle's `apply.sh` to replace.
pub const IFACE_PLACEHOLDER: &str = "MERCURY_IFACE";
/// The first line of `user-data`.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config\n";
/// containerd's CRI socket, as the node images have it.
const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;

/// A node's NoCloud seed: the three files' contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDocuments {
    pub meta_data: String,
    pub network_config: String,
    pub user_data: String,
}

impl NodeDocuments {
    /// (file name, contents) of the three, as a seed names them.
    pub fn files(&self) -> [(&'static str, &str); 3] {
        [
            ("meta-data", &self.meta_data),
            ("network-config", &self.network_config),
            ("user-data", &self.user_data),
        ]
    }
}

/// Lowercase words that YAML 1.1 readers (cloud-init's PyYAML, kubeadm's
/// go-yaml) read as booleans or null, which serde_yaml_ng (YAML 1.2)
/// writes unquoted: a DNS label can be one.
pub const YAML11_NON_STRINGS: &[&str] =
    &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// Why documents cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("{field} {value:?} would be read as a boolean or null by cloud-init and kubeadm (YAML 1.1): choose another name")]
    AmbiguousName { field: &'static str, value: String },
    #[error("the plan for cluster {cluster} has no control-plane endpoint")]
    NoEndpoint { cluster: String },
    #[error("node {node} is not in the plan for cluster {cluster}")]
    NotInPlan { cluster: String, node: String },
    #[error("cannot serialize the {what} of node {node}: {message}")]
    Serialize {
        node: String,
        what: &'static str,
        message: String,
    },
}

// ---- meta-data ----

/// `meta-data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetaData {
    pub instance_id: String,
    pub local_hostname: String,
}

// ---- network-config, version 2 ----

/// `network-config` (netplan-style version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub version: u8,
    pub ethernets: BTreeMap<String, Ethernet>,
}

/// One interface of [`NetworkConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ethernet {
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<MacMatch>,
    #[serde(rename = "set-name", default, skip_serializing_if = "Option::is_none")]
    pub set_name: Option<String>,
    pub dhcp4: bool,
    /// `ip/prefix`.
    pub addresses: Vec<String>,
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Nameservers>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacMatch {
    pub macaddress: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `0.0.0.0/0`: every renderer of cloud-init 22.4 reads it (`default`
    /// is newer).
    pub to: String,
    pub via: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nameservers {
    pub addresses: Vec<Ipv4Addr>,
}

// ---- user-data ----

/// `user-data` (after the `#cloud-config` line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudConfig {
    pub hostname: String,
    pub preserve_hostname: bool,
    pub manage_etc_hosts: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// Root may log in with the keys (nodes have no other user to rely on).
    pub disable_root: bool,
    pub write_files: Vec<WriteFile>,
    /// Shell lines, run in order by one `sh` in cloud-init's final stage.
    pub runcmd: Vec<String>,
    pub final_message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFile {
    pub path: String,
    pub content: String,
    pub owner: String,
    /// Octal, as a string: `"0600"`.
    pub permissions: String,
}

// ---- kubeadm ----

/// Which kubeadm config API a Kubernetes version reads: `v1beta4` from
/// v1.31 on, `v1beta3` before (they differ in `kubeletExtraArgs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeadmApi {
    V1Beta3,
    V1Beta4,
}

impl KubeadmApi {
    /// For `v1.31.2`; an unreadable version gets the newest.
    pub fn for_version(version: &str) -> Self {
        let mut parts = version.trim_start_matches('v').split('.');
        let major: u32 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(u32::MAX);
        let minor: u32 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(u32::MAX);
        if (major, minor) < (1, 31) {
            KubeadmApi::V1Beta3
        } else {
            KubeadmApi::V1Beta4
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            KubeadmApi::V1Beta3 => "kubeadm.k8s.io/v1beta3",
            KubeadmApi::V1Beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }

    fn kubelet_args(self, args: &[(&str, String)]) -> KubeletArgs {
        match self {
            KubeadmApi::V1Beta3 => KubeletArgs::Map(
                args.iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
            KubeadmApi::V1Beta4 => KubeletArgs::List(
                args.iter()
                    .map(|(k, v)| Arg {
                        name: k.to_string(),
                        value: v.clone(),
                    })
                    .collect(),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitConfiguration {
    api_version: String,
    kind: String,
    bootstrap_tokens: Vec<BootstrapToken>,
    certificate_key: String,
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: ApiEndpoint,
    node_registration: NodeRegistration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapToken {
    token: String,
    /// `0s`: never expires, so workers added later (scale-up, bare-metal
    /// bundles applied any time) join with the cluster's one token.
    ttl: String,
    usages: Vec<String>,
    groups: Vec<String>,
    description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiEndpoint {
    advertise_address: Ipv4Addr,
    bind_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration {
    name: String,
    cri_socket: String,
    kubelet_extra_args: KubeletArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum KubeletArgs {
    Map(BTreeMap<String, String>),
    List(Vec<Arg>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Arg {
    name: String,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration {
    api_version: String,
    kind: String,
    cluster_name: String,
    kubernetes_version: String,
    control_plane_endpoint: String,
    networking: Networking,
    etcd: EtcdConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Networking {
    pod_subnet: String,
    service_subnet: String,
}

/// One of the two (a struct, not an enum: serde_yaml_ng writes enum
/// variants as YAML tags, which kubeadm does not read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EtcdConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<LocalEtcd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external: Option<ExternalEtcd>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LocalEtcd {
    data_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ExternalEtcd {
    endpoints: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration {
    api_version: String,
    kind: String,
    discovery: Discovery,
    node_registration: NodeRegistration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    control_plane: Option<JoinControlPlane>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Discovery {
    bootstrap_token: BootstrapTokenDiscovery,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenDiscovery {
    api_server_endpoint: String,
    token: String,
    ca_cert_hashes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinControlPlane {
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: ApiEndpoint,
    certificate_key: String,
}

// ---- building ----

/// The control-plane nodes the plan keeps or makes, in plan order.
pub fn control_plane_nodes(plan: &Plan) -> Vec<&NodePlan> {
    plan_nodes(plan)
        .filter(|n| n.role == Role::ControlPlane)
        .collect()
}

/// Every node the plan keeps or makes (deletes left out), in plan order.
fn plan_nodes(plan: &Plan) -> impl Iterator<Item = &NodePlan> {
    plan.actions.iter().filter_map(|a| match a {
        Action::Create(n) | Action::Keep(n) | Action::Replace { node: n, .. } => Some(n),
        Action::Delete(_) => None,
    })
}

/// Whether `node` runs `kubeadm init`: it is the plan's first
/// control-plane node and no other control-plane node is kept (a kept one
/// means the cluster exists, so a replaced first node joins it).
pub fn initializes(plan: &Plan, node: &NodePlan) -> bool {
    let first = control_plane_nodes(plan).first().map(|n| n.name.as_str()) == Some(&node.name);
    let others_kept = plan.actions.iter().any(
        |a| matches!(a, Action::Keep(n) if n.role == Role::ControlPlane && n.name != node.name),
    );
    node.role == Role::ControlPlane && first && !others_kept
}

/// `<node>-` + 12 hex digits of SHA-256 over the node's plan: the same for
/// the same plan, new when anything in it changes (so cloud-init runs
/// again on a replaced node).
pub fn instance_id(node: &NodePlan) -> String {
    // NodePlan serializes to JSON in declaration order: deterministic.
    let json = serde_json::to_vec(node).unwrap_or_default();
    let digest = Sha256::digest(&json);
    format!("{}-{}", node.name, &secrets::hex(&digest)[..12])
}

/// The documents for `node` of `plan` (made from the validated `spec`).
pub fn node_documents(
    spec: &ClusterSpec,
    plan: &Plan,
    node: &NodePlan,
    secrets: &ClusterSecrets,
) -> Result<NodeDocuments, DocumentError> {
    let endpoint = plan.endpoint.ok_or_else(|| DocumentError::NoEndpoint {
        cluster: plan.cluster.clone(),
    })?;
    for (field, value) in [("metadata.name", &plan.cluster), ("node name", &node.name)] {
        if YAML11_NON_STRINGS.contains(&value.as_str()) {
            return Err(DocumentError::AmbiguousName {
                field,
                value: value.clone(),
            });
        }
    }
    if !plan_nodes(plan).any(|n| n == node) {
        return Err(DocumentError::NotInPlan {
            cluster: plan.cluster.clone(),
            node: node.name.clone(),
        });
    }
    let ser = |what: &'static str, r: Result<String, serde_yaml_ng::Error>| {
        r.map_err(|e| DocumentError::Serialize {
            node: node.name.clone(),
            what,
            message: e.to_string(),
        })
    };
    let id = instance_id(node);
    let meta = MetaData {
        instance_id: id.clone(),
        local_hostname: node.name.clone(),
    };
    let meta_data = ser("meta-data", serde_yaml_ng::to_string(&meta))?;
    // JSON, which is YAML: cloud-init's YAML 1.1 reader takes a MAC such
    // as 12:34:56:12:34:56, which serde_yaml_ng leaves unquoted, for a
    // base-60 integer; JSON quotes every string.
    let network_config = serde_json::to_string_pretty(&network_config(spec, node))
        .map(|text| text + "\n")
        .map_err(|e| DocumentError::Serialize {
            node: node.name.clone(),
            what: "network-config",
            message: e.to_string(),
        })?;
    let kubeadm = ser(
        "kubeadm config",
        kubeadm_config(spec, plan, node, secrets, endpoint),
    )?;
    let config = cloud_config(spec, plan, node, secrets, &id, kubeadm);
    let user_data = format!(
        "{CLOUD_CONFIG_HEADER}{}",
        ser("user-data", serde_yaml_ng::to_string(&config))?
    );
    Ok(NodeDocuments {
        meta_data,
        network_config,
        user_data,
    })
}

/// The node's static address, default route and DNS.
pub fn network_config(spec: &ClusterSpec, node: &NodePlan) -> NetworkConfig {
    let net = &spec.spec.network;
    let microvm = matches!(node.machine, MachinePlan::Microvm { .. });
    let (name, set_name) = if microvm {
        (MICROVM_IFACE, Some(MICROVM_IFACE.to_string()))
    } else {
        // A host's NIC keeps its name; apply.sh fills it in.
        (IFACE_PLACEHOLDER, None)
    };
    let ethernet = Ethernet {
        matches: node.mac.as_ref().map(|m| MacMatch {
            macaddress: m.clone(),
        }),
        set_name: set_name.filter(|_| node.mac.is_some()),
        dhcp4: false,
        addresses: vec![format!("{}/{}", node.ip, net.cidr.prefix_len())],
        routes: vec![Route {
            to: "0.0.0.0/0".to_string(),
            via: net.gateway,
        }],
        nameservers: (!net.dns.is_empty()).then(|| Nameservers {
            addresses: net.dns.clone(),
        }),
    };
    NetworkConfig {
        version: 2,
        ethernets: [(name.to_string(), ethernet)].into_iter().collect(),
    }
}

/// The kubeadm configuration for the node's role, as YAML (two documents
/// for the initializing node).
fn kubeadm_config(
    spec: &ClusterSpec,
    plan: &Plan,
    node: &NodePlan,
    secrets: &ClusterSecrets,
    endpoint: Ipv4Addr,
) -> Result<String, serde_yaml_ng::Error> {
    let k = &spec.spec.kubernetes;
    let api = KubeadmApi::for_version(&k.version);
    let endpoint = format!("{endpoint}:{API_SERVER_PORT}");
    let registration = NodeRegistration {
        name: node.name.clone(),
        cri_socket: CRI_SOCKET.to_string(),
        kubelet_extra_args: api.kubelet_args(&[("node-ip", node.ip.to_string())]),
    };
    let local_endpoint = ApiEndpoint {
        advertise_address: node.ip,
        bind_port: API_SERVER_PORT,
    };
    if initializes(plan, node) {
        let init = InitConfiguration {
            api_version: api.api_version().to_string(),
            kind: "InitConfiguration".to_string(),
            bootstrap_tokens: vec![BootstrapToken {
                token: secrets.bootstrap_token.clone(),
                ttl: "0s".to_string(),
                usages: vec!["signing".to_string(), "authentication".to_string()],
                groups: vec!["system:bootstrappers:kubeadm:default-node-token".to_string()],
                description: format!("mercury cluster {}", plan.cluster),
            }],
            certificate_key: secrets.certificate_key.clone(),
            local_api_endpoint: local_endpoint,
            node_registration: registration,
        };
        let etcd = match spec.spec.etcd.mode {
            EtcdMode::Stacked => EtcdConfig {
                local: Some(LocalEtcd {
                    data_dir: "/var/lib/etcd".to_string(),
                }),
                external: None,
            },
            EtcdMode::External => EtcdConfig {
                local: None,
                external: Some(ExternalEtcd {
                    endpoints: control_plane_nodes(plan)
                        .iter()
                        .map(|n| format!("http://{}:{ETCD_CLIENT_PORT}", n.ip))
                        .collect(),
                }),
            },
        };
        let cluster = ClusterConfiguration {
            api_version: api.api_version().to_string(),
            kind: "ClusterConfiguration".to_string(),
            cluster_name: plan.cluster.clone(),
            kubernetes_version: k.version.clone(),
            control_plane_endpoint: endpoint,
            networking: Networking {
                pod_subnet: k.pod_cidr.to_string(),
                service_subnet: k.service_cidr.to_string(),
            },
            etcd,
        };
        Ok(format!(
            "{}---\n{}",
            serde_yaml_ng::to_string(&init)?,
            serde_yaml_ng::to_string(&cluster)?
        ))
    } else {
        let join = JoinConfiguration {
            api_version: api.api_version().to_string(),
            kind: "JoinConfiguration".to_string(),
            discovery: Discovery {
                bootstrap_token: BootstrapTokenDiscovery {
                    api_server_endpoint: endpoint,
                    token: secrets.bootstrap_token.clone(),
                    ca_cert_hashes: vec![secrets.ca_cert_hash.clone()],
                },
            },
            node_registration: registration,
            control_plane: (node.role == Role::ControlPlane).then(|| JoinControlPlane {
                local_api_endpoint: local_endpoint,
                certificate_key: secrets.certificate_key.clone(),
            }),
        };
        serde_yaml_ng::to_string(&join)
    }
}

fn file(path: &str, content: String, permissions: &str) -> WriteFile {
    WriteFile {
        path: path.to_string(),
        content,
        owner: "root:root".to_string(),
        permissions: permissions.to_string(),
    }
}

/// `/etc/default/etcd` for Debian's etcd-server on control-plane node
/// `node`: one member per control-plane node, plain HTTP.
pub fn etcd_environment(plan: &Plan, node: &NodePlan) -> String {
    let members: Vec<String> = control_plane_nodes(plan)
        .iter()
        .map(|n| format!("{}=http://{}:{ETCD_PEER_PORT}", n.name, n.ip))
        .collect();
    let ip = node.ip;
    let vars = [
        ("ETCD_NAME", node.name.clone()),
        // A directory of its own: an etcd the image ran once left a
        // one-member cluster in Debian's default one.
        ("ETCD_DATA_DIR", format!("/var/lib/etcd/{}", plan.cluster)),
        (
            "ETCD_LISTEN_PEER_URLS",
            format!("http://{ip}:{ETCD_PEER_PORT}"),
        ),
        (
            "ETCD_LISTEN_CLIENT_URLS",
            format!("http://{ip}:{ETCD_CLIENT_PORT},http://127.0.0.1:{ETCD_CLIENT_PORT}"),
        ),
        (
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            format!("http://{ip}:{ETCD_PEER_PORT}"),
        ),
        // Only the node address: other members and kube-apiservers
        // elsewhere cannot use a loopback one.
        (
            "ETCD_ADVERTISE_CLIENT_URLS",
            format!("http://{ip}:{ETCD_CLIENT_PORT}"),
        ),
        ("ETCD_INITIAL_CLUSTER", members.join(",")),
        ("ETCD_INITIAL_CLUSTER_STATE", "new".to_string()),
        ("ETCD_INITIAL_CLUSTER_TOKEN", plan.cluster.clone()),
    ];
    let mut text = format!(
        "# Written by mercury (cloud-init) for cluster {}: etcd outside kubeadm.\n",
        plan.cluster
    );
    for (k, v) in vars {
        text.push_str(&format!("{k}={v}\n"));
    }
    text
}

fn cloud_config(
    spec: &ClusterSpec,
    plan: &Plan,
    node: &NodePlan,
    secrets: &ClusterSecrets,
    instance_id: &str,
    kubeadm: String,
) -> CloudConfig {
    let control_plane = node.role == Role::ControlPlane;
    let external_etcd = control_plane && spec.spec.etcd.mode == EtcdMode::External;
    let microvm = matches!(node.machine, MachinePlan::Microvm { .. });
    let mut write_files = vec![
        file(KUBEADM_CONFIG_PATH, kubeadm, "0600"),
        file(
            "/etc/modules-load.d/mercury-kubernetes.conf",
            "overlay\nbr_netfilter\n".to_string(),
            "0644",
        ),
        file(
            "/etc/sysctl.d/90-mercury-kubernetes.conf",
            "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n".to_string(),
            "0644",
        ),
    ];
    if control_plane {
        write_files.push(file(
            "/etc/kubernetes/pki/ca.crt",
            secrets.ca_cert_pem.clone(),
            "0644",
        ));
        write_files.push(file(
            "/etc/kubernetes/pki/ca.key",
            secrets.ca_key_pem.clone(),
            "0600",
        ));
    }
    if external_etcd {
        write_files.push(file(
            "/etc/default/etcd",
            etcd_environment(plan, node),
            "0644",
        ));
    }
    let name = &node.name;
    let mut runcmd = vec![
        "modprobe overlay 2>/dev/null || true".to_string(),
        "modprobe br_netfilter 2>/dev/null || true".to_string(),
        "sysctl -q --system || true".to_string(),
    ];
    if external_etcd {
        // restart, not just start: an etcd the image enabled may already
        // run with Debian's defaults. Blocks until the member has quorum.
        runcmd.push("systemctl enable etcd && systemctl restart etcd".to_string());
    } else if microvm {
        // Our image's etcd-server, never a bare-metal host's own etcd.
        runcmd.push(
            "if systemctl cat etcd.service >/dev/null 2>&1; then systemctl disable --now etcd; fi"
                .to_string(),
        );
    }
    // What the node itself sees, for the host to check on its console: the
    // hostname and address its seed gave it and, on a node that joins, that
    // it reaches the control-plane endpoint by IP.
    runcmd.push(
        "echo \"mercury-node name=$(hostname) addr=$(ip -4 -o addr show scope global | \
         awk '{print $4}' | head -n 1)\" >/dev/console"
            .to_string(),
    );
    if let (false, Some(endpoint)) = (initializes(plan, node), plan.endpoint) {
        runcmd.push(format!(
            "r=lost; for i in $(seq 30); do if ping -c 1 -W 2 {endpoint} >/dev/null 2>&1; \
             then r=ok; break; fi; done; echo \"mercury-node ping {endpoint} $r\" >/dev/console"
        ));
    }
    let (verb, command) = if initializes(plan, node) {
        (
            "init",
            format!("kubeadm init --config {KUBEADM_CONFIG_PATH} --upload-certs"),
        )
    } else {
        (
            "join",
            format!("kubeadm join --config {KUBEADM_CONFIG_PATH}"),
        )
    };
    runcmd.push(format!(
        "if command -v kubeadm >/dev/null 2>&1; then \
         if {command}; then r=ok; else r=failed; fi; \
         else r=absent; \
         echo \"kubeadm is absent from this image: node {name} did not run kubeadm {verb}\" >{KUBEADM_ABSENT_PATH}; \
         fi; \
         echo \"mercury-kubeadm node={name} result=$r\" >{KUBEADM_RESULT_PATH}; \
         cat {KUBEADM_RESULT_PATH} 2>/dev/null >/dev/console || true"
    ));
    CloudConfig {
        hostname: name.clone(),
        preserve_hostname: false,
        // Our image's /etc/hosts, not an existing host's own.
        manage_etc_hosts: microvm,
        ssh_authorized_keys: spec.spec.ssh.authorized_keys.clone(),
        disable_root: false,
        write_files,
        runcmd,
        final_message: ready_message(name, instance_id),
    }
}

/// cloud-init's final message: `mercury-ready node=<name>
/// instance-id=<id> uptime=$UPTIME` (cloud-init fills in `$UPTIME`).
pub fn ready_message(node: &str, instance_id: &str) -> String {
    format!("mercury-ready node={node} instance-id={instance_id} uptime=$UPTIME")
}

#[cfg(test)]
#[path = "cloudinit_tests.rs"]
mod tests;
