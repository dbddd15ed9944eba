use std::path::Path;
use std::process::Command;

use mercury_tests::TempDir;
use serde_json::Value;

use super::*;
use crate::cluster::fixtures::example;
use crate::cluster::plan::{self, Observed};
use crate::cluster::validate::validate;

const STATE: &str = "/var/lib/mercury/clusters";

fn plan_of(spec: &ClusterSpec) -> Plan {
    let report = validate(spec);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    plan::plan(spec, &Observed::default(), Path::new(STATE)).unwrap()
}

fn node<'a>(plan: &'a Plan, name: &str) -> &'a NodePlan {
    plan_nodes(plan).find(|n| n.name == name).unwrap()
}

/// The example with three control-plane nodes and the given etcd mode.
fn three_cp(mode: EtcdMode) -> ClusterSpec {
    let mut spec = example();
    spec.spec.control_plane.count = 3;
    spec.spec.etcd.mode = mode;
    spec
}

fn secrets() -> ClusterSecrets {
    ClusterSecrets::generate().unwrap()
}

/// Parsed documents: meta-data, network-config, user-data (typed), and the
/// kubeadm config's YAML documents (untyped, so a field we did not mean to
/// write shows up).
struct Parsed {
    meta: MetaData,
    net: NetworkConfig,
    user: CloudConfig,
    kubeadm: Vec<Value>,
}

fn parse(docs: &NodeDocuments) -> Parsed {
    let body = docs
        .user_data
        .strip_prefix(CLOUD_CONFIG_HEADER)
        .expect("user-data starts with #cloud-config");
    let user: CloudConfig = serde_yaml_ng::from_str(body).unwrap();
    let kubeadm_file = user
        .write_files
        .iter()
        .find(|f| f.path == KUBEADM_CONFIG_PATH)
        .expect("the kubeadm config is written");
    assert_eq!(kubeadm_file.permissions, "0600");
    let kubeadm = serde_yaml_ng::Deserializer::from_str(&kubeadm_file.content)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    Parsed {
        meta: serde_yaml_ng::from_str(&docs.meta_data).unwrap(),
        net: serde_yaml_ng::from_str(&docs.network_config).unwrap(),
        user,
        kubeadm,
    }
}

fn documents(spec: &ClusterSpec, plan: &Plan, name: &str, s: &ClusterSecrets) -> Parsed {
    parse(&node_documents(spec, plan, node(plan, name), s).unwrap())
}

fn file<'a>(user: &'a CloudConfig, path: &str) -> Option<&'a WriteFile> {
    user.write_files.iter().find(|f| f.path == path)
}

#[test]
fn first_control_plane_node_initializes_the_cluster() {
    let spec = example();
    let plan = plan_of(&spec);
    let s = secrets();
    let p = documents(&spec, &plan, "edge1-cp-0", &s);
    assert_eq!(p.meta.local_hostname, "edge1-cp-0");
    assert!(p.meta.instance_id.starts_with("edge1-cp-0-"));
    assert_eq!(p.user.hostname, "edge1-cp-0");
    assert_eq!(p.user.ssh_authorized_keys, spec.spec.ssh.authorized_keys);
    assert_eq!(
        p.user.final_message,
        format!(
            "mercury-ready node=edge1-cp-0 instance-id={} uptime=$UPTIME",
            p.meta.instance_id
        )
    );

    let [init, cluster] = &p.kubeadm[..] else {
        panic!("two documents: {:?}", p.kubeadm)
    };
    assert_eq!(init["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(init["kind"], "InitConfiguration");
    assert_eq!(
        init["bootstrapTokens"][0]["token"],
        s.bootstrap_token.as_str()
    );
    assert_eq!(init["bootstrapTokens"][0]["ttl"], "0s");
    assert_eq!(init["certificateKey"], s.certificate_key.as_str());
    assert_eq!(init["localAPIEndpoint"]["advertiseAddress"], "10.42.0.2");
    assert_eq!(init["localAPIEndpoint"]["bindPort"], 6443);
    assert_eq!(init["nodeRegistration"]["name"], "edge1-cp-0");
    assert_eq!(
        init["nodeRegistration"]["kubeletExtraArgs"],
        serde_json::json!([{"name": "node-ip", "value": "10.42.0.2"}])
    );
    assert_eq!(cluster["kind"], "ClusterConfiguration");
    assert_eq!(cluster["kubernetesVersion"], "v1.31.2");
    assert_eq!(cluster["clusterName"], "edge1");
    assert_eq!(cluster["controlPlaneEndpoint"], "10.42.0.2:6443");
    assert_eq!(cluster["networking"]["podSubnet"], "10.244.0.0/16");
    assert_eq!(cluster["networking"]["serviceSubnet"], "10.96.0.0/12");
    assert_eq!(
        cluster["etcd"],
        serde_json::json!({"local": {"dataDir": "/var/lib/etcd"}})
    );

    let ca = file(&p.user, "/etc/kubernetes/pki/ca.crt").unwrap();
    assert_eq!(ca.content, s.ca_cert_pem);
    let key = file(&p.user, "/etc/kubernetes/pki/ca.key").unwrap();
    assert_eq!(
        (key.content.as_str(), key.permissions.as_str()),
        (s.ca_key_pem.as_str(), "0600")
    );
    assert!(file(&p.user, "/etc/default/etcd").is_none());
    let kubeadm = p.user.runcmd.last().unwrap();
    assert!(
        kubeadm.contains("kubeadm init --config /var/lib/mercury/kubeadm.yaml --upload-certs"),
        "{kubeadm}"
    );
    assert!(
        p.user
            .runcmd
            .iter()
            .any(|c| c.contains("systemctl disable --now etcd")),
        "stacked etcd: the image's etcd must not hold port 2379"
    );
}

#[test]
fn microvm_worker_joins_with_the_pinned_ca() {
    let spec = example();
    let plan = plan_of(&spec);
    let s = secrets();
    let p = documents(&spec, &plan, "edge1-general-1", &s);
    let [join] = &p.kubeadm[..] else {
        panic!("{:?}", p.kubeadm)
    };
    assert_eq!(join["kind"], "JoinConfiguration");
    let discovery = &join["discovery"]["bootstrapToken"];
    assert_eq!(discovery["apiServerEndpoint"], "10.42.0.2:6443");
    assert_eq!(discovery["token"], s.bootstrap_token.as_str());
    assert_eq!(
        discovery["caCertHashes"],
        serde_json::json!([s.ca_cert_hash.clone()])
    );
    assert_eq!(join["nodeRegistration"]["name"], "edge1-general-1");
    assert_eq!(
        join["nodeRegistration"]["kubeletExtraArgs"][0]["value"],
        "10.42.0.4"
    );
    assert!(join.get("controlPlane").is_none());
    assert!(file(&p.user, "/etc/kubernetes/pki/ca.key").is_none());
    assert!(file(&p.user, "/etc/kubernetes/pki/ca.crt").is_none());
    assert!(!p.user.user_data_mentions(&s.ca_key_pem));
    let kubeadm = p.user.runcmd.last().unwrap();
    assert!(
        kubeadm.contains("kubeadm join --config /var/lib/mercury/kubeadm.yaml;"),
        "{kubeadm}"
    );
    assert!(!kubeadm.contains("init"), "{kubeadm}");
}

impl CloudConfig {
    fn user_data_mentions(&self, text: &str) -> bool {
        self.write_files.iter().any(|f| f.content.contains(text))
            || self.runcmd.iter().any(|c| c.contains(text))
    }
}

#[test]
fn network_config_pins_the_nic_and_the_static_address() {
    let spec = example();
    let plan = plan_of(&spec);
    let s = secrets();
    let cp = node(&plan, "edge1-cp-0");
    let p = documents(&spec, &plan, "edge1-cp-0", &s);
    assert_eq!(p.net.version, 2);
    let eth0 = &p.net.ethernets["eth0"];
    assert_eq!(p.net.ethernets.len(), 1);
    assert_eq!(
        eth0.matches.as_ref().unwrap().macaddress,
        *cp.mac.as_ref().unwrap()
    );
    assert_eq!(eth0.set_name.as_deref(), Some("eth0"));
    assert!(!eth0.dhcp4);
    assert_eq!(eth0.addresses, ["10.42.0.2/24"]);
    assert_eq!(
        eth0.routes,
        [Route {
            to: "0.0.0.0/0".to_string(),
            via: "10.42.0.1".parse().unwrap()
        }]
    );
    assert_eq!(
        eth0.nameservers.as_ref().unwrap().addresses,
        ["10.42.0.1".parse::<Ipv4Addr>().unwrap()]
    );

    // Bare metal: the host's NIC keeps its name (apply.sh fills it in).
    let metal = documents(&spec, &plan, "rack1-a", &s);
    let nic = &metal.net.ethernets[IFACE_PLACEHOLDER];
    assert_eq!(
        nic.matches.as_ref().unwrap().macaddress,
        "52:54:00:aa:00:01"
    );
    assert_eq!(nic.set_name, None);
    assert_eq!(nic.addresses, ["10.42.0.200/24"]);
    assert_eq!(metal.kubeadm[0]["kind"], "JoinConfiguration");

    let mut no_mac = example();
    match &mut no_mac.spec.workers[1] {
        crate::cluster::spec::WorkerPool::Baremetal(p) => p.machines[0].mac = None,
        crate::cluster::spec::WorkerPool::Microvm(_) => unreachable!(),
    }
    no_mac.spec.network.dns.clear();
    let plan = plan_of(&no_mac);
    let p = documents(&no_mac, &plan, "rack1-a", &s);
    let nic = &p.net.ethernets[IFACE_PLACEHOLDER];
    assert_eq!(
        (&nic.matches, &nic.set_name, &nic.nameservers),
        (&None, &None, &None)
    );
    assert!(!node_documents(&no_mac, &plan, node(&plan, "rack1-a"), &s)
        .unwrap()
        .network_config
        .contains("nameservers"));
    // No microVM's etcd to stop on a host that may run its own.
    assert!(
        !p.user.runcmd.iter().any(|c| c.contains("etcd")),
        "{:?}",
        p.user.runcmd
    );
}

#[test]
fn other_control_plane_nodes_join_as_control_plane_and_external_etcd_spans_all() {
    let spec = three_cp(EtcdMode::External);
    let plan = plan_of(&spec);
    let s = secrets();
    let ips = ["10.42.0.2", "10.42.0.3", "10.42.0.4"];
    let members = "edge1-cp-0=http://10.42.0.2:2380,edge1-cp-1=http://10.42.0.3:2380,edge1-cp-2=http://10.42.0.4:2380";

    let first = documents(&spec, &plan, "edge1-cp-0", &s);
    assert_eq!(
        first.kubeadm[1]["etcd"],
        serde_json::json!({"external": {"endpoints": ips.map(|ip| format!("http://{ip}:2379"))}})
    );
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("edge1-cp-{i}");
        let p = documents(&spec, &plan, &name, &s);
        let etcd = &file(&p.user, "/etc/default/etcd").unwrap().content;
        let vars: BTreeMap<&str, &str> = etcd
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_once('=').unwrap())
            .collect();
        assert_eq!(vars["ETCD_NAME"], name);
        assert_eq!(vars["ETCD_INITIAL_CLUSTER"], members);
        assert_eq!(vars["ETCD_INITIAL_CLUSTER_STATE"], "new");
        assert_eq!(vars["ETCD_INITIAL_CLUSTER_TOKEN"], "edge1");
        assert_eq!(vars["ETCD_DATA_DIR"], "/var/lib/etcd/edge1");
        assert_eq!(
            vars["ETCD_LISTEN_CLIENT_URLS"],
            format!("http://{ip}:2379,http://127.0.0.1:2379")
        );
        assert_eq!(
            vars["ETCD_ADVERTISE_CLIENT_URLS"],
            format!("http://{ip}:2379")
        );
        assert_eq!(vars["ETCD_LISTEN_PEER_URLS"], format!("http://{ip}:2380"));
        assert_eq!(
            vars["ETCD_INITIAL_ADVERTISE_PEER_URLS"],
            format!("http://{ip}:2380")
        );
        let etcd_at = p
            .user
            .runcmd
            .iter()
            .position(|c| c.contains("systemctl restart etcd"));
        let kubeadm_at = p.user.runcmd.iter().position(|c| c.contains("kubeadm"));
        assert!(
            etcd_at.unwrap() < kubeadm_at.unwrap(),
            "etcd before kubeadm"
        );
        assert!(file(&p.user, "/etc/kubernetes/pki/ca.key").is_some());
        if i > 0 {
            let [join] = &p.kubeadm[..] else {
                panic!("{:?}", p.kubeadm)
            };
            assert_eq!(join["kind"], "JoinConfiguration");
            assert_eq!(
                join["controlPlane"]["certificateKey"],
                s.certificate_key.as_str()
            );
            assert_eq!(
                join["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
                *ip
            );
            assert_eq!(
                join["discovery"]["bootstrapToken"]["apiServerEndpoint"],
                "10.42.0.2:6443"
            );
        }
    }
    // Workers run no etcd, in either mode.
    let w = documents(&spec, &plan, "edge1-general-0", &s);
    assert!(file(&w.user, "/etc/default/etcd").is_none());
    assert!(!w.user.runcmd.iter().any(|c| c.contains("restart etcd")));

    let stacked = three_cp(EtcdMode::Stacked);
    let plan = plan_of(&stacked);
    let p = documents(&stacked, &plan, "edge1-cp-2", &s);
    assert!(file(&p.user, "/etc/default/etcd").is_none());
    assert_eq!(
        p.kubeadm[0]["controlPlane"]["certificateKey"],
        s.certificate_key.as_str()
    );
}

#[test]
fn a_virtual_ip_endpoint_is_what_joins_use() {
    let mut spec = example();
    spec.spec.kubernetes.control_plane_endpoint = Some("10.42.0.250".parse().unwrap());
    let plan = plan_of(&spec);
    let s = secrets();
    let cp = documents(&spec, &plan, "edge1-cp-0", &s);
    assert_eq!(cp.kubeadm[1]["controlPlaneEndpoint"], "10.42.0.250:6443");
    assert_eq!(
        cp.kubeadm[0]["localAPIEndpoint"]["advertiseAddress"],
        "10.42.0.2"
    );
    let w = documents(&spec, &plan, "rack1-a", &s);
    assert_eq!(
        w.kubeadm[0]["discovery"]["bootstrapToken"]["apiServerEndpoint"],
        "10.42.0.250:6443"
    );
}

#[test]
fn instance_id_follows_the_node_plan() {
    let spec = example();
    let plan = plan_of(&spec);
    let cp = node(&plan, "edge1-cp-0");
    assert_eq!(instance_id(cp), instance_id(&cp.clone()));
    assert_ne!(instance_id(cp), instance_id(node(&plan, "edge1-general-0")));
    let mut bigger = spec.clone();
    bigger.spec.control_plane.vcpus = 4;
    let plan2 = plan_of(&bigger);
    assert_ne!(instance_id(cp), instance_id(node(&plan2, "edge1-cp-0")));
    // Another pool's change leaves this node alone.
    let mut other = spec.clone();
    if let crate::cluster::spec::WorkerPool::Microvm(p) = &mut other.spec.workers[0] {
        p.memory_mib = 8192;
    }
    let plan3 = plan_of(&other);
    assert_eq!(instance_id(cp), instance_id(node(&plan3, "edge1-cp-0")));
    let id = instance_id(cp);
    let hash = id.strip_prefix("edge1-cp-0-").unwrap();
    assert_eq!(hash.len(), 12);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn a_replaced_first_node_joins_when_other_control_plane_nodes_are_kept() {
    let spec = three_cp(EtcdMode::Stacked);
    let mut plan = plan_of(&spec);
    for a in plan.actions.iter_mut() {
        if let Action::Create(n) = a {
            if n.name != "edge1-cp-0" {
                *a = Action::Keep(n.clone());
            }
        }
    }
    let cp0 = node(&plan, "edge1-cp-0").clone();
    assert!(!initializes(&plan, &cp0));
    let p = documents(&spec, &plan, "edge1-cp-0", &secrets());
    assert_eq!(p.kubeadm[0]["kind"], "JoinConfiguration");
    assert!(p.kubeadm[0]["controlPlane"].is_object());
    // A fresh plan: cp-0 and only cp-0 initializes.
    let fresh = plan_of(&spec);
    let inits: Vec<&str> = plan_nodes(&fresh)
        .filter(|n| initializes(&fresh, n))
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(inits, ["edge1-cp-0"]);
}

#[test]
fn kubernetes_before_1_31_gets_v1beta3() {
    assert_eq!(KubeadmApi::for_version("v1.30.9"), KubeadmApi::V1Beta3);
    assert_eq!(KubeadmApi::for_version("v1.31.0"), KubeadmApi::V1Beta4);
    assert_eq!(KubeadmApi::for_version("v2.0.0"), KubeadmApi::V1Beta4);
    let mut spec = example();
    spec.spec.kubernetes.version = "v1.29.4".to_string();
    let plan = plan_of(&spec);
    let p = documents(&spec, &plan, "edge1-general-0", &secrets());
    assert_eq!(p.kubeadm[0]["apiVersion"], "kubeadm.k8s.io/v1beta3");
    assert_eq!(
        p.kubeadm[0]["nodeRegistration"]["kubeletExtraArgs"],
        serde_json::json!({"node-ip": "10.42.0.3"})
    );
}

#[test]
fn no_endpoint_or_a_node_outside_the_plan_is_an_error() {
    let spec = example();
    let mut plan = plan_of(&spec);
    let s = secrets();
    let mut stranger = node(&plan, "edge1-general-0").clone();
    stranger.name = "edge1-general-9".to_string();
    let e = node_documents(&spec, &plan, &stranger, &s).unwrap_err();
    assert_eq!(
        e.to_string(),
        "node edge1-general-9 is not in the plan for cluster edge1"
    );
    let mut on = spec.clone();
    on.metadata.name = "on".to_string();
    let e = node_documents(&on, &plan_of(&on), node(&plan_of(&on), "on-cp-0"), &s).unwrap_err();
    assert_eq!(
        e,
        DocumentError::AmbiguousName {
            field: "metadata.name",
            value: "on".to_string()
        }
    );
    let mut yes = spec.clone();
    if let crate::cluster::spec::WorkerPool::Baremetal(p) = &mut yes.spec.workers[1] {
        p.machines[0].name = "yes".to_string();
    }
    let yes_plan = plan_of(&yes);
    let e = node_documents(&yes, &yes_plan, node(&yes_plan, "yes"), &s).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("node name \"yes\" would be read as a boolean"),
        "{e}"
    );
    plan.endpoint = None;
    let cp = node(&plan, "edge1-cp-0").clone();
    let e = node_documents(&spec, &plan, &cp, &s).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the plan for cluster edge1 has no control-plane endpoint"
    );
}

/// The kubeadm step run for real by `sh`, with its paths moved into a
/// temporary directory: a `kubeadm` on PATH is called with the config,
/// none leaves the absent note; both write the result line.
#[test]
fn runcmd_runs_kubeadm_or_notes_its_absence() {
    let spec = example();
    let plan = plan_of(&spec);
    let p = documents(&spec, &plan, "edge1-general-0", &secrets());
    let tmp = TempDir::new("runcmd");
    let root = tmp.path().to_str().unwrap();
    let script = p
        .user
        .runcmd
        .last()
        .unwrap()
        .replace("/var/lib/mercury", root);
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let run = |path: &str| {
        let out = Command::new("sh")
            .args(["-c", &script])
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::read_to_string(tmp.path().join("kubeadm-result")).unwrap()
    };
    // /usr/bin:/bin for `cat`.
    let without = format!("{}:/usr/bin:/bin", bin.display());
    if Command::new("sh")
        .args(["-c", "command -v kubeadm"])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
        .status
        .success()
    {
        eprintln!("SKIP (absent case): this host has a kubeadm in /usr/bin");
    } else {
        assert_eq!(
            run(&without),
            "mercury-kubeadm node=edge1-general-0 result=absent\n"
        );
        let note = std::fs::read_to_string(tmp.path().join("kubeadm-absent")).unwrap();
        assert!(note.contains("kubeadm is absent"), "{note}");
        assert!(note.contains("did not run kubeadm join"), "{note}");
    }
    let log = tmp.path().join("kubeadm-args");
    for (exit, result) in [(0, "ok"), (1, "failed")] {
        std::fs::write(
            bin.join("kubeadm"),
            format!("#!/bin/sh\necho \"$@\" >{}\nexit {exit}\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(
            bin.join("kubeadm"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(
            run(&without),
            format!("mercury-kubeadm node=edge1-general-0 result={result}\n")
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("join --config {root}/kubeadm.yaml\n")
        );
    }
}

/// Every runcmd line of every node is valid `sh` (`sh -n`), and every
/// document is YAML that Debian's Python yaml (what cloud-init uses) reads
/// the same.
#[test]
fn every_document_is_valid_for_sh_and_pyyaml() {
    let mut spec = three_cp(EtcdMode::External);
    // All digits, each part below 60: a YAML 1.1 reader (PyYAML) takes it
    // for a base-60 integer unless it is quoted.
    match &mut spec.spec.workers[1] {
        crate::cluster::spec::WorkerPool::Baremetal(p) => {
            p.machines[0].mac = Some("12:34:56:12:34:56".to_string())
        }
        crate::cluster::spec::WorkerPool::Microvm(_) => unreachable!(),
    }
    let plan = plan_of(&spec);
    let s = secrets();
    let python = Command::new(DEBIAN_PYTHON)
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    for n in plan_nodes(&plan) {
        let docs = node_documents(&spec, &plan, n, &s).unwrap();
        let p = parse(&docs);
        let out = Command::new("sh")
            .args(["-n", "-c", &p.user.runcmd.join("\n")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", n.name);
        if !python {
            continue;
        }
        for (name, text) in docs.files() {
            let out = Command::new(DEBIAN_PYTHON)
                .args([
                    "-c",
                    "import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.argv[1]), sort_keys=True))",
                    text,
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{} {name}: {out:?}", n.name);
            let from_python: Value = serde_json::from_slice(&out.stdout).unwrap();
            let from_serde: Value = serde_yaml_ng::from_str(text).unwrap();
            assert_eq!(from_python, from_serde, "{} {name}", n.name);
        }
    }
}

/// Debian's Python, with the packages cloud-init needs (scripts/setup.sh),
/// not whichever `python3` comes first on PATH.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// cloud-init's Python modules as scripts/setup.sh unpacks them, if there.
fn cloud_init_pythonpath() -> Option<std::path::PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    let path = cache.join("mercury/cloud-init/usr/lib/python3/dist-packages");
    if path.join("cloudinit").is_dir() {
        Some(path)
    } else {
        eprintln!(
            "SKIP: no cloud-init modules in {} (scripts/setup.sh unpacks them)",
            path.display()
        );
        None
    }
}

/// Parses a network-config with cloud-init's own network_state and renders
/// it with its networkd renderer (what a Debian node without ifupdown
/// uses); prints the .network file.
const RENDER_NETWORKD: &str = r##"
import os, sys, tempfile
from cloudinit import safeyaml
from cloudinit.net import network_state, networkd
ns = network_state.parse_net_config_data(safeyaml.load(open(sys.argv[1]).read()))
d = tempfile.mkdtemp()
networkd.Renderer({}).render_network_state(ns, target=d)
out = os.path.join(d, "etc/systemd/network")
for f in sorted(os.listdir(out)):
    print("#", f)
    print(open(os.path.join(out, f)).read())
"##;

/// The documents as cloud-init 22.4 (the nodes' version) reads them: every
/// user-data passes `cloud-init schema`, and network-config renders to a
/// systemd-networkd file matching the MAC, with the address, route and
/// DNS — also for a bare-metal MAC that PyYAML would misread unquoted.
#[test]
fn cloud_init_itself_accepts_the_documents() {
    let Some(pythonpath) = cloud_init_pythonpath() else {
        return;
    };
    let mut spec = three_cp(EtcdMode::External);
    if let crate::cluster::spec::WorkerPool::Baremetal(p) = &mut spec.spec.workers[1] {
        p.machines[0].mac = Some("12:34:56:12:34:56".to_string());
    }
    let plan = plan_of(&spec);
    let s = secrets();
    let tmp = TempDir::new("cloud-init-check");
    for n in plan_nodes(&plan) {
        let docs = node_documents(&spec, &plan, n, &s).unwrap();
        let dir = tmp.path().join(&n.name);
        std::fs::create_dir(&dir).unwrap();
        for (f, text) in docs.files() {
            std::fs::write(dir.join(f), text).unwrap();
        }
        let out = Command::new(DEBIAN_PYTHON)
            .args(["-m", "cloudinit.cmd.main", "schema", "--config-file"])
            .arg(dir.join("user-data"))
            .env("PYTHONPATH", &pythonpath)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Valid cloud-config"),
            "{}: {out:?}",
            n.name
        );
        // The bare-metal placeholder as apply.sh replaces it.
        let net = docs.network_config.replace(IFACE_PLACEHOLDER, "enp1s0");
        std::fs::write(dir.join("network-config"), &net).unwrap();
        let out = Command::new(DEBIAN_PYTHON)
            .args(["-c", RENDER_NETWORKD])
            .arg(dir.join("network-config"))
            .env("PYTHONPATH", &pythonpath)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", n.name);
        let unit = String::from_utf8_lossy(&out.stdout);
        let (iface, mac) = match &n.machine {
            MachinePlan::Microvm { .. } => ("eth0", n.mac.clone().unwrap()),
            MachinePlan::Baremetal => ("enp1s0", "12:34:56:12:34:56".to_string()),
        };
        for line in [
            format!("# 10-cloud-init-{iface}.network"),
            format!("Name={iface}"),
            format!("MACAddress={mac}"),
            format!("Address={}/24", n.ip),
            "Gateway=10.42.0.1".to_string(),
            "Destination=0.0.0.0/0".to_string(),
            "DNS=10.42.0.1".to_string(),
            "DHCP=no".to_string(),
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "{}: no {line:?} in\n{unit}",
                n.name
            );
        }
    }
}
