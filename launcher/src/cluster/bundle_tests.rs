use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use mercury_tests::TempDir;
use serde_json::Value;

use super::*;
use crate::cluster::cloudinit::{CloudConfig, MetaData, NetworkConfig, CLOUD_CONFIG_HEADER};
use crate::cluster::fixtures::example;
use crate::cluster::plan::{self, Action, Observed};

fn setup(state: &Path) -> (ClusterSpec, Plan, ClusterSecrets) {
    let spec = example();
    let plan = plan::plan(&spec, &Observed::default(), state).unwrap();
    (spec, plan, ClusterSecrets::generate().unwrap())
}

fn node<'a>(plan: &'a Plan, name: &str) -> &'a NodePlan {
    plan.actions
        .iter()
        .find_map(|a| match a {
            Action::Create(n) if n.name == name => Some(n),
            _ => None,
        })
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn bundle_parses_back_as_the_machines_worker_documents() {
    let tmp = TempDir::new("bundle");
    let (spec, plan, s) = setup(tmp.path());
    let rack = node(&plan, "rack1-a");
    let b = write_bundle(tmp.path(), &spec, &plan, rack, &s).unwrap();
    assert_eq!(b.dir, tmp.path().join("edge1/bundles/rack1-a"));
    assert_eq!(mode(&b.dir), 0o700);
    for f in ["meta-data", "network-config", "user-data"] {
        assert_eq!(mode(&b.dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&b.dir.join(APPLY_SCRIPT)), 0o700);

    let read = |f: &str| fs::read_to_string(b.dir.join(f)).unwrap();
    let meta: MetaData = serde_yaml_ng::from_str(&read("meta-data")).unwrap();
    assert_eq!(meta.local_hostname, "rack1-a");
    assert_eq!(meta.instance_id, cloudinit::instance_id(rack));
    let net: NetworkConfig = serde_yaml_ng::from_str(&read("network-config")).unwrap();
    let nic = &net.ethernets[IFACE_PLACEHOLDER];
    assert_eq!(nic.addresses, ["10.42.0.200/24"]);
    assert_eq!(nic.routes[0].via.to_string(), "10.42.0.1");
    assert_eq!(
        nic.matches.as_ref().unwrap().macaddress,
        "52:54:00:aa:00:01"
    );
    let user = read("user-data");
    let user: CloudConfig =
        serde_yaml_ng::from_str(user.strip_prefix(CLOUD_CONFIG_HEADER).unwrap()).unwrap();
    assert_eq!(user.hostname, "rack1-a");
    assert!(!user.manage_etc_hosts, "a host keeps its own /etc/hosts");
    let kubeadm: Value = serde_yaml_ng::from_str(
        &user
            .write_files
            .iter()
            .find(|f| f.path == cloudinit::KUBEADM_CONFIG_PATH)
            .unwrap()
            .content,
    )
    .unwrap();
    assert_eq!(kubeadm["kind"], "JoinConfiguration");
    assert!(kubeadm.get("controlPlane").is_none(), "a worker");
    assert_eq!(
        kubeadm["discovery"]["bootstrapToken"]["apiServerEndpoint"],
        "10.42.0.2:6443"
    );
    assert_eq!(
        kubeadm["discovery"]["bootstrapToken"]["token"],
        s.bootstrap_token.as_str()
    );
    assert!(!user.write_files.iter().any(|f| f.path.contains("pki")));

    let script = read(APPLY_SCRIPT);
    for line in [
        "NODE=rack1-a\n",
        "ADDRESS=10.42.0.200/24\n",
        "GATEWAY=10.42.0.1\n",
        "DNS=10.42.0.1\n",
        "MAC=52:54:00:aa:00:01\n",
        "ENDPOINT=10.42.0.2\n",
    ] {
        assert!(script.contains(line), "apply.sh sets {line:?}");
    }
    assert!(!script.contains("@MERCURY_VARIABLES@"));
    for shell in ["sh", "dash"] {
        let out = Command::new(shell)
            .args(["-n", b.dir.join(APPLY_SCRIPT).to_str().unwrap()])
            .output();
        if let Ok(out) = out {
            assert!(out.status.success(), "{shell} -n apply.sh: {out:?}");
        }
    }
    match Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(b.dir.join(APPLY_SCRIPT))
        .output()
    {
        Ok(out) => assert!(out.status.success(), "shellcheck apply.sh: {out:?}"),
        Err(_) => eprintln!("SKIP shellcheck: not installed"),
    }
    assert_eq!(
        b.command,
        format!(
            "tar -C {} -cf - . | ssh root@10.42.0.200 'rm -rf /tmp/mercury-join && mkdir -m 700 /tmp/mercury-join && tar -C /tmp/mercury-join -xf - && sh /tmp/mercury-join/apply.sh'",
            b.dir.display()
        )
    );

    // Written again: replaced whole, nothing left beside it.
    let again = write_bundle(tmp.path(), &spec, &plan, rack, &s).unwrap();
    assert_eq!(again, b);
    let names: Vec<_> = fs::read_dir(b.dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["rack1-a"]);
}

#[test]
fn microvm_nodes_get_no_bundle() {
    let tmp = TempDir::new("bundle-vm");
    let (spec, plan, s) = setup(tmp.path());
    let e = write_bundle(tmp.path(), &spec, &plan, node(&plan, "edge1-general-0"), &s).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("edge1-general-0 is a microVM"),
        "{e}"
    );
    assert!(!tmp.path().join("edge1/bundles").exists());
}

#[test]
fn shell_quoting() {
    assert_eq!(sh_quote("10.42.0.1/24"), "10.42.0.1/24");
    assert_eq!(sh_quote(""), "''");
    assert_eq!(sh_quote("a b"), "'a b'");
    assert_eq!(sh_quote("it's"), r"'it'\''s'");
    let out = Command::new("sh")
        .args(["-c", &format!("printf %s {}", sh_quote("it's $HOME `x`"))])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $HOME `x`");
}

/// Two named network namespaces joined by a veth pair: the machine's side
/// (`m0`, in `machine`) and the node network's (`g0`, in `lan`, holding
/// the gateway and the control-plane endpoint). `ip netns exec` gives each
/// its own /sys and /etc/resolv.conf (from /etc/netns/<name>/).
struct Netns {
    machine: String,
    lan: String,
}

impl Netns {
    fn new() -> Option<Netns> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("mb{}-{n}", std::process::id());
        let n = Netns {
            machine: format!("{tag}-machine"),
            lan: format!("{tag}-lan"),
        };
        if !ip(&["netns", "add", &n.machine]).status.success() {
            eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
            return None;
        }
        n.check(ip(&["netns", "add", &n.lan]));
        let resolv = n.resolv_dir();
        fs::create_dir_all(&resolv).unwrap();
        fs::write(resolv.join("resolv.conf"), "# test\n").unwrap();
        n.check(ip(&[
            "link", "add", "m0", "netns", &n.machine, "type", "veth", "peer", "name", "g0",
            "netns", &n.lan,
        ]));
        n.check(n.exec_lan(&["ip", "link", "set", "g0", "up"]));
        n.check(n.exec_lan(&["ip", "addr", "add", "10.42.0.1/24", "dev", "g0"]));
        n.check(n.exec_lan(&["ip", "addr", "add", "10.42.0.2/24", "dev", "g0"]));
        n.check(n.exec_machine(&["ip", "link", "set", "m0", "address", "52:54:00:aa:00:01"]));
        Some(n)
    }

    fn check(&self, out: Output) {
        assert!(out.status.success(), "{out:?}");
    }

    fn exec_machine(&self, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.machine];
        all.extend_from_slice(args);
        ip(&all)
    }

    fn exec_lan(&self, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.lan];
        all.extend_from_slice(args);
        ip(&all)
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.exec_machine(args);
        self.check(out.clone());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The machine's /etc/resolv.conf, as `ip netns exec` shows it there.
    fn resolv_conf(&self) -> String {
        fs::read_to_string(self.resolv_dir().join("resolv.conf")).unwrap()
    }

    fn resolv_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.machine)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.machine]);
        let _ = ip(&["netns", "del", &self.lan]);
        let _ = fs::remove_dir_all(self.resolv_dir());
    }
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().unwrap()
}

/// apply.sh run for real in a namespace: it sets the address, default
/// route and DNS it was given (read back with `ip -j`), finds the NIC by
/// MAC without `--iface`, and tells a reachable endpoint from one that is
/// gone (exit 2).
#[test]
fn apply_script_sets_the_network_in_a_namespace() {
    let tmp = TempDir::new("bundle-netns");
    let (spec, plan, s) = setup(tmp.path());
    let b = write_bundle(tmp.path(), &spec, &plan, node(&plan, "rack1-a"), &s).unwrap();
    let Some(ns) = Netns::new() else { return };
    let script = b.dir.join(APPLY_SCRIPT);
    let script = script.to_str().unwrap();

    let out = ns.exec_machine(&["sh", script, "--network-only", "--iface", "m0"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("mercury-join: m0: address 10.42.0.200/24, default route via 10.42.0.1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rack1-a reaches the control-plane endpoint 10.42.0.2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--network-only: cloud-init not run"),
        "{stdout}"
    );

    let addrs = ns.json(&["ip", "-j", "-4", "addr", "show", "dev", "m0"]);
    let info = &addrs[0]["addr_info"];
    assert_eq!(info.as_array().unwrap().len(), 1, "{addrs}");
    assert_eq!(info[0]["local"], "10.42.0.200");
    assert_eq!(info[0]["prefixlen"], 24);
    assert!(
        addrs[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "{addrs}"
    );
    let routes = ns.json(&["ip", "-j", "-4", "route", "show", "default"]);
    assert_eq!(routes.as_array().unwrap().len(), 1, "{routes}");
    assert_eq!(routes[0]["gateway"], "10.42.0.1");
    assert_eq!(routes[0]["dev"], "m0");
    assert_eq!(ns.resolv_conf(), "# test\nnameserver 10.42.0.1\n");

    // Again, finding m0 by its MAC: nothing changes, nothing doubles.
    let out = ns.exec_machine(&["sh", script, "--network-only"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mercury-join: m0: address"),
        "{out:?}"
    );
    assert_eq!(
        ns.json(&["ip", "-j", "-4", "route", "show", "default"]),
        routes
    );
    assert_eq!(
        ns.json(&["ip", "-j", "-4", "addr", "show", "dev", "m0"])[0]["addr_info"],
        *info
    );
    assert_eq!(ns.resolv_conf(), "# test\nnameserver 10.42.0.1\n");

    // The endpoint gone: said so, exit 2.
    ns.check(ns.exec_lan(&["ip", "addr", "del", "10.42.0.2/24", "dev", "g0"]));
    let out = ns.exec_machine(&["sh", script, "--network-only", "--iface=m0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("rack1-a does not reach the control-plane endpoint 10.42.0.2"),
        "{out:?}"
    );

    // A wrong interface name or argument: exit 1, named.
    let out = ns.exec_machine(&["sh", script, "--iface", "nope0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--iface nope0: no such interface"),
        "{out:?}"
    );
    let out = ns.exec_machine(&["sh", script, "--bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown argument: --bogus"),
        "{out:?}"
    );
    let out = ns.exec_machine(&["sh", script, "--help"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("mercury join bundle"),
        "{out:?}"
    );
}

/// The cloud-init path, with a stand-in `cloud-init` first on PATH (it
/// logs its arguments and writes the kubeadm result line as the real
/// runcmd would) and cloud-init's directories under a scratch root: the
/// seed gets the three documents with the placeholder replaced by the NIC
/// found, 0600, and cloud-init runs clean, init --local, init, modules.
#[test]
fn apply_script_seeds_and_runs_cloud_init() {
    let tmp = TempDir::new("bundle-cloudinit");
    let (spec, plan, s) = setup(tmp.path());
    let b = write_bundle(tmp.path(), &spec, &plan, node(&plan, "rack1-a"), &s).unwrap();
    let Some(ns) = Netns::new() else { return };
    let root = tmp.path().join("root");
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = tmp.path().join("cloud-init.log");
    fs::write(
        bin.join("cloud-init"),
        format!(
            "#!/bin/sh\necho \"$*\" >>{log}\nif [ \"$*\" = 'modules --mode final' ]; then\n  mkdir -p {root}/var/lib/mercury\n  echo 'mercury-kubeadm node=rack1-a result=ok' >{root}/var/lib/mercury/kubeadm-result\nfi\n",
            log = log.display(),
            root = root.display()
        ),
    )
    .unwrap();
    fs::set_permissions(bin.join("cloud-init"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = b.dir.join(APPLY_SCRIPT);
    let out = ns.exec_machine(&[
        "env",
        &format!("PATH={path}"),
        &format!("MERCURY_JOIN_ROOT={}", root.display()),
        "sh",
        script.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("reaches the control-plane endpoint"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("mercury-kubeadm node=rack1-a result=ok\n"),
        "{stdout}"
    );
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "clean --logs\ninit --local\ninit\nmodules --mode config\nmodules --mode final\n"
    );
    let seed = root.join("var/lib/cloud/seed/nocloud");
    for f in ["meta-data", "user-data"] {
        assert_eq!(
            fs::read(seed.join(f)).unwrap(),
            fs::read(b.dir.join(f)).unwrap(),
            "{f}"
        );
    }
    for f in ["meta-data", "user-data", "network-config"] {
        assert_eq!(mode(&seed.join(f)), 0o600, "{f}");
    }
    let net: NetworkConfig =
        serde_yaml_ng::from_str(&fs::read_to_string(seed.join("network-config")).unwrap()).unwrap();
    assert_eq!(net.ethernets.keys().collect::<Vec<_>>(), ["m0"]);
    assert_eq!(net.ethernets["m0"].addresses, ["10.42.0.200/24"]);
    assert_eq!(
        fs::read_to_string(root.join("etc/cloud/cloud.cfg.d/90-mercury-nocloud.cfg")).unwrap(),
        "datasource_list: [ NoCloud, None ]\n"
    );
}
