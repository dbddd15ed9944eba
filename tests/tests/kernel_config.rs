//! The microVM guest kernels can run a Kubernetes node: each built `.config`
//! (`guest-images/build linux-kernel-config` and `linux-kernel-arm64-config`,
//! kept beside the cached vmlinux and Image) has what kubeadm's `SystemVerification` preflight check
//! requires, and what systemd, cloud-init, containerd and the usual CNIs
//! and kube-proxy modes need on a node.
//!
//! The check works as kubeadm's kernel-config validator does (an option is
//! met by its name or one of its aliases; required options fail, optional
//! ones are reported), with one difference: the kernel has no modules, so an
//! option counts only when built in (`=y`); `=m` fails and says so.

use std::collections::BTreeMap;

use mercury_tests::guest_image;

/// One kernel option, `CONFIG_` left off, as kubeadm's validator spells it.
struct Opt {
    name: &'static str,
    /// Older or newer names that satisfy it too.
    aliases: &'static [&'static str],
    /// Who needs it.
    why: &'static str,
}

const fn opt(name: &'static str, why: &'static str) -> Opt {
    Opt {
        name,
        aliases: &[],
        why,
    }
}

/// kubeadm's `SystemVerification` required list (k8s.io/system-validators,
/// `DefaultSysSpec.KernelSpec.Required`).
const KUBEADM_REQUIRED: &[Opt] = &[
    opt("NAMESPACES", "kubeadm"),
    opt("NET_NS", "kubeadm"),
    opt("PID_NS", "kubeadm"),
    opt("IPC_NS", "kubeadm"),
    opt("UTS_NS", "kubeadm"),
    opt("CGROUPS", "kubeadm"),
    opt("CGROUP_BPF", "kubeadm: cgroup v2 device control"),
    opt("CGROUP_CPUACCT", "kubeadm"),
    opt("CGROUP_DEVICE", "kubeadm"),
    opt("CGROUP_FREEZER", "kubeadm"),
    opt("CGROUP_PIDS", "kubeadm"),
    opt("CGROUP_SCHED", "kubeadm"),
    opt("CPUSETS", "kubeadm"),
    opt("MEMCG", "kubeadm"),
    opt("INET", "kubeadm"),
    opt("EXT4_FS", "kubeadm"),
    opt("PROC_FS", "kubeadm"),
    Opt {
        name: "NETFILTER_XT_TARGET_REDIRECT",
        aliases: &["IP_NF_TARGET_REDIRECT"],
        why: "kubeadm",
    },
    opt("NETFILTER_XT_MATCH_COMMENT", "kubeadm"),
    opt("FAIR_GROUP_SCHED", "kubeadm"),
];

/// kubeadm's optional list: it only warns about these. Reported, not failed.
const KUBEADM_OPTIONAL: &[Opt] = &[
    Opt {
        name: "OVERLAY_FS",
        aliases: &["OVERLAYFS_FS"],
        why: "overlayfs",
    },
    opt("AUFS_FS", "aufs"),
    opt("BLK_DEV_DM", "devicemapper"),
    opt("CFS_BANDWIDTH", "CPU quota"),
    opt("CGROUP_HUGETLB", "hugetlb cgroup"),
    opt("SECCOMP", "seccomp"),
    opt("SECCOMP_FILTER", "seccomp mode 2"),
];

/// What the node image needs beyond kubeadm's list; required here.
const NODE_REQUIRED: &[Opt] = &[
    // Containers and the cgroup v2 hierarchy kubelet and systemd manage.
    opt("MEMCG", "cgroup v2 memory controller"),
    opt("BLK_CGROUP", "cgroup v2 io controller"),
    opt("CFS_BANDWIDTH", "CPU limits (cpu.max)"),
    opt("BPF_SYSCALL", "cgroup v2 device filters (runc, systemd)"),
    opt("USER_NS", "user namespaces (systemd sandboxing, pods)"),
    opt("SYSVIPC", "IPC namespaces, shared memory in pods"),
    opt("POSIX_MQUEUE", "message queues in IPC namespaces"),
    opt("SECCOMP", "containerd's default seccomp profile"),
    opt("SECCOMP_FILTER", "containerd's default seccomp profile"),
    opt("KEYS", "runc session keyrings"),
    opt("OVERLAY_FS", "containerd's overlayfs snapshotter"),
    opt("IKCONFIG_PROC", "/proc/config.gz for kubeadm's validator"),
    // Pod networking: kube-proxy (iptables or nftables mode) and CNIs.
    opt("IPV6", "dual-stack, systemd"),
    opt("BRIDGE", "CNI bridge plugin"),
    opt("BRIDGE_NETFILTER", "net.bridge.bridge-nf-call-iptables"),
    opt("VETH", "pod network interfaces"),
    opt("VXLAN", "overlay CNIs (flannel)"),
    opt("NETFILTER", "kube-proxy"),
    opt("NF_CONNTRACK", "kube-proxy, NAT"),
    opt("NF_CT_NETLINK", "conntrack(8), run by kube-proxy"),
    opt("NF_NAT", "service NAT"),
    opt("NF_TABLES", "nftables, iptables-nft"),
    opt("NF_TABLES_INET", "kube-proxy nftables mode"),
    opt("NFT_CT", "nftables conntrack"),
    opt("NFT_NAT", "nftables NAT"),
    opt("NFT_MASQ", "nftables masquerade"),
    opt("NFT_REDIR", "nftables redirect"),
    opt("NFT_COMPAT", "iptables-nft with xt matches"),
    opt("NFT_LIMIT", "nftables limit"),
    opt("NFT_REJECT", "nftables reject"),
    opt("NFT_NUMGEN", "kube-proxy nftables mode: endpoint choice"),
    opt("NFT_FIB_INET", "kube-proxy nftables mode: local addresses"),
    opt("IP_NF_IPTABLES", "iptables-legacy"),
    opt("IP_NF_FILTER", "iptables filter table"),
    opt("IP_NF_NAT", "iptables nat table"),
    opt("IP_NF_MANGLE", "iptables mangle table"),
    opt("IP_NF_TARGET_MASQUERADE", "SNAT of pod traffic"),
    opt(
        "IP_NF_TARGET_REJECT",
        "kube-proxy: services without endpoints",
    ),
    opt("IP6_NF_IPTABLES", "ip6tables"),
    opt("IP6_NF_FILTER", "ip6tables filter table"),
    opt("IP6_NF_NAT", "ip6tables nat table"),
    opt("NETFILTER_XT_MARK", "kube-proxy MARK"),
    opt("NETFILTER_XT_NAT", "DNAT/SNAT targets"),
    opt("NETFILTER_XT_TARGET_MASQUERADE", "MASQUERADE target"),
    opt("NETFILTER_XT_MATCH_MULTIPORT", "kube-proxy"),
    opt("NETFILTER_XT_MATCH_CONNTRACK", "kube-proxy ctstate"),
    opt("NETFILTER_XT_MATCH_ADDRTYPE", "kube-proxy LOCAL addresses"),
    opt("NETFILTER_XT_MATCH_STATISTIC", "kube-proxy endpoint choice"),
    opt("NETFILTER_XT_MATCH_RECENT", "kube-proxy session affinity"),
    // systemd, udev and cloud-init.
    opt("PROC_SYSCTL", "/proc/sys: systemd, journald, sysctls"),
    opt("DEVTMPFS", "udev"),
    opt("DEVTMPFS_MOUNT", "systemd on a disk root"),
    opt("TMPFS", "systemd"),
    opt("TMPFS_POSIX_ACL", "systemd-journald"),
    opt("TMPFS_XATTR", "systemd"),
    opt("AUTOFS_FS", "systemd automounts"),
    opt("FHANDLE", "systemd, udev"),
    opt("INOTIFY_USER", "systemd, udev"),
    opt("EPOLL", "systemd"),
    opt("SIGNALFD", "systemd"),
    opt("TIMERFD", "systemd"),
    opt("UNIX", "systemd, D-Bus"),
    opt("EXT4_FS_POSIX_ACL", "systemd-journald ACLs"),
    opt("EXT4_FS_SECURITY", "file capabilities"),
    opt("VFAT_FS", "NoCloud seed (vfat, label CIDATA)"),
    opt("NLS_CODEPAGE_437", "vfat default codepage"),
    opt("NLS_ISO8859_1", "vfat default iocharset"),
    opt("NLS_UTF8", "vfat utf8 names"),
    opt("ISO9660_FS", "NoCloud seed (iso9660)"),
];

/// x86_64: graceful shutdown, the GED's power button reaching
/// systemd-logind.
const X86_POWER_BUTTON: &[Opt] = &[
    opt("ACPI_BUTTON", "ACPI power button (PNP0C0C)"),
    opt("INPUT_EVDEV", "logind reads the power key (evdev)"),
];

/// arm64: graceful shutdown, the PL061 line under gpio-keys reaching
/// systemd-logind.
const ARM64_POWER_BUTTON: &[Opt] = &[
    opt("GPIO_PL061", "the power button's GPIO controller"),
    opt("KEYBOARD_GPIO", "gpio-keys: the line as KEY_POWER"),
    opt("INPUT_EVDEV", "logind reads the power key (evdev)"),
];

/// Optional for the node: reported when absent.
const NODE_OPTIONAL: &[Opt] = &[
    opt("IP_VS", "kube-proxy IPVS mode"),
    opt("IP_VS_RR", "kube-proxy IPVS mode"),
    opt("IP_VS_WRR", "kube-proxy IPVS mode"),
    opt("IP_VS_SH", "kube-proxy IPVS mode"),
    opt("IP_SET", "kube-proxy IPVS mode, network policy"),
    opt("NETFILTER_XT_SET", "kube-proxy IPVS mode"),
    opt("NETFILTER_XT_MATCH_PHYSDEV", "bridge CNIs"),
    opt("NETFILTER_XT_CONNMARK", "CNIs (Calico, Cilium)"),
    opt("DUMMY", "kube-proxy IPVS mode (kube-ipvs0)"),
    opt("PSI", "pressure stall information (kubelet, systemd-oomd)"),
    opt("DMIID", "kubelet's product UUID"),
];

/// Options that must stay off: this is a microVM kernel without modules.
const FORBIDDEN: &[Opt] = &[opt("MODULES", "a microVM kernel has everything built in")];

/// `CONFIG_X=v` lines of a `.config`, by `X`. `# CONFIG_X is not set` and
/// other comments are absent keys, as for kubeadm's parser.
fn parse_config(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("CONFIG_")?.split_once('='))
        .collect()
}

/// Why `o` is not met by `config`, or `None` when it is (built in).
fn unmet(config: &BTreeMap<&str, &str>, o: &Opt) -> Option<String> {
    let names = std::iter::once(&o.name).chain(o.aliases);
    let mut found = Vec::new();
    for name in names {
        match config.get(name) {
            Some(&"y") => return None,
            Some(v) => found.push(format!("CONFIG_{name}={v}")),
            None => {}
        }
    }
    let value = if found.is_empty() {
        "not set".to_string()
    } else {
        format!("{} (modules are off: must be =y)", found.join(", "))
    };
    Some(format!("CONFIG_{}: {value} — needed by {}", o.name, o.why))
}

/// The verdict on one `.config`: failures (required unmet, forbidden set)
/// and warnings (optional unmet).
#[derive(Debug, Default)]
struct Verdict {
    errors: Vec<String>,
    warnings: Vec<String>,
}

fn verify(text: &str, required: &[&[Opt]], optional: &[&[Opt]]) -> Verdict {
    let config = parse_config(text);
    let mut verdict = Verdict::default();
    for o in required.iter().flat_map(|list| list.iter()) {
        verdict.errors.extend(unmet(&config, o));
    }
    for o in optional.iter().flat_map(|list| list.iter()) {
        verdict.warnings.extend(unmet(&config, o));
    }
    for o in FORBIDDEN {
        if let Some(v) = config.get(o.name) {
            verdict
                .errors
                .push(format!("CONFIG_{}={v}: forbidden — {}", o.name, o.why));
        }
    }
    verdict.errors.dedup();
    verdict
}

/// The `.config` of a built kernel: `linux-kernel-config` (x86_64) or
/// `linux-kernel-arm64-config`.
fn built_config(image: &str) -> (std::path::PathBuf, String) {
    let path = guest_image(image);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path, text)
}

fn assert_clean(path: &std::path::Path, verdict: &Verdict) {
    for w in &verdict.warnings {
        eprintln!("kernel config: optional, absent: {w}");
    }
    assert!(
        verdict.errors.is_empty(),
        "{} fails the node's kernel requirements:\n  {}",
        path.display(),
        verdict.errors.join("\n  ")
    );
}

#[test]
fn built_kernel_passes_kubeadm_system_verification() {
    let (path, text) = built_config("linux-kernel-config");
    let verdict = verify(&text, &[KUBEADM_REQUIRED], &[KUBEADM_OPTIONAL]);
    assert_clean(&path, &verdict);
}

#[test]
fn built_kernel_has_what_a_node_image_needs() {
    let (path, text) = built_config("linux-kernel-config");
    let verdict = verify(&text, &[NODE_REQUIRED, X86_POWER_BUTTON], &[NODE_OPTIONAL]);
    assert_clean(&path, &verdict);
}

#[test]
fn built_arm64_kernel_passes_kubeadm_system_verification() {
    let (path, text) = built_config("linux-kernel-arm64-config");
    let verdict = verify(&text, &[KUBEADM_REQUIRED], &[KUBEADM_OPTIONAL]);
    assert_clean(&path, &verdict);
}

#[test]
fn built_arm64_kernel_has_what_a_node_image_needs() {
    let (path, text) = built_config("linux-kernel-arm64-config");
    let verdict = verify(
        &text,
        &[NODE_REQUIRED, ARM64_POWER_BUTTON],
        &[NODE_OPTIONAL],
    );
    assert_clean(&path, &verdict);
}

#[test]
fn the_check_names_what_is_missing_built_as_a_module_or_forbidden() {
    let text = "\
CONFIG_NAMESPACES=y
CONFIG_IP_NF_TARGET_REDIRECT=y
CONFIG_NETFILTER_XT_MATCH_COMMENT=m
# CONFIG_CGROUPS is not set
CONFIG_MODULES=y
";
    let required = [
        opt("NAMESPACES", "t"),
        Opt {
            name: "NETFILTER_XT_TARGET_REDIRECT",
            aliases: &["IP_NF_TARGET_REDIRECT"],
            why: "t",
        },
        opt("NETFILTER_XT_MATCH_COMMENT", "t"),
        opt("CGROUPS", "t"),
    ];
    let optional = [opt("AUFS_FS", "t")];
    let verdict = verify(text, &[&required], &[&optional]);
    let names: Vec<&str> = verdict
        .errors
        .iter()
        .map(|e| e.split([':', '=']).next().unwrap())
        .collect();
    // The alias satisfies REDIRECT; a module does not count; an option that
    // is "not set" is missing; MODULES is forbidden.
    assert_eq!(
        names,
        [
            "CONFIG_NETFILTER_XT_MATCH_COMMENT",
            "CONFIG_CGROUPS",
            "CONFIG_MODULES"
        ],
        "{verdict:?}"
    );
    assert!(
        verdict.errors[0].contains("=m (modules are off"),
        "{verdict:?}"
    );
    assert!(verdict.errors[1].contains("not set"), "{verdict:?}");
    assert_eq!(verdict.warnings.len(), 1, "{verdict:?}");
    assert!(
        verdict.warnings[0].starts_with("CONFIG_AUFS_FS"),
        "{verdict:?}"
    );
}
