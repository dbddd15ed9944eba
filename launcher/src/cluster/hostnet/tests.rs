//! Tests on real netlink and real `/dev/net/tun`, each inside a network
//! namespace of its own.
//!
//! Namespaces belong to tasks, and every thread is a task: a thread that
//! calls `unshare(CLONE_NEWNET)` moves itself alone into a new, empty
//! network namespace ([`in_new_netns`]); the bridges and TAPs the test makes
//! there vanish with the thread. What the API reports is cross-checked
//! with `ip -j -d` run in that namespace through `nsenter`. These tests
//! need root (`CAP_SYS_ADMIN` to unshare, `CAP_NET_ADMIN` inside), as CI
//! has; without it they fail, saying so, rather than pass untested.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use mercury_tests::netns::{drop_net_admin, in_new_netns};
use serde_json::Value;

use super::tap::{ifreq, TAP_FLAGS};
use super::{BridgeOutcome, HostNet, HostNetError, LinkKind, Operation, TunInfo};

const BRIDGE: &str = "mbr-test0";
/// The longest TAP name there can be, as `nodes::tap_name` makes them.
const TAP: &str = "m1a2b3c4d5e6f-0";
const TAP2: &str = "m1a2b3c4d5e6f-1";
/// The virtio-net header the VMM's device uses (`virtio_net_hdr_v1`).
const VNET_HDR_LEN: usize = 12;

fn gateway() -> Ipv4Net {
    "10.77.0.1/24".parse().unwrap()
}

/// `ip ARGS` in the calling thread's namespace, by `nsenter` on its
/// namespace file (not by inheritance, so the check does not rest on how
/// the child is spawned).
fn ip_command(args: &[&str]) -> Command {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    let mut command = Command::new("nsenter");
    command
        .arg(format!(
            "--net=/proc/{}/task/{tid}/ns/net",
            std::process::id()
        ))
        .arg("ip")
        .args(args);
    command
}

/// The first object `ip -j ARGS` prints; `None` when `ip` fails (no such
/// device).
fn ip(args: &[&str]) -> Option<Value> {
    let out = ip_command(args).output().expect("run nsenter ip");
    if !out.status.success() {
        return None;
    }
    let json: Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
    json.get(0).cloned()
}

/// What `ip -j -d link show dev NAME` says, if the device exists.
fn ip_link(name: &str) -> Option<Value> {
    ip(&["-j", "-d", "link", "show", "dev", name])
}

/// The IPv4 addresses `ip -j address show` lists for `name`.
fn ip_addresses(name: &str) -> Vec<String> {
    let Some(link) = ip(&["-j", "-4", "address", "show", "dev", name]) else {
        return Vec::new();
    };
    link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn ip_flags(link: &Value) -> Vec<&str> {
    link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect()
}

/// Runs `ip ARGS` for setting up a test's preconditions.
fn ip_run(args: &[&str]) {
    let status = ip_command(args).status().expect("run nsenter ip");
    assert!(status.success(), "ip {args:?}");
}

#[test]
fn a_new_bridge_gets_its_address_and_is_up() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        assert_eq!(net.link(BRIDGE).unwrap(), None);
        let outcome = net.ensure_bridge(BRIDGE, gateway()).unwrap();
        assert_eq!(
            outcome,
            BridgeOutcome {
                created_bridge: true,
                added_address: true
            }
        );

        let link = net.link(BRIDGE).unwrap().expect("the bridge");
        assert_eq!(link.name, BRIDGE);
        assert_eq!(link.kind, LinkKind::Bridge);
        assert!(link.up);
        assert_eq!(link.master, None);
        assert_eq!(link.addresses, vec![gateway()]);

        let shown = ip_link(BRIDGE).expect("ip sees the bridge");
        assert_eq!(shown["linkinfo"]["info_kind"], "bridge");
        assert_eq!(shown["ifindex"], link.index);
        assert!(ip_flags(&shown).contains(&"UP"), "{shown}");
        assert_eq!(ip_addresses(BRIDGE), vec!["10.77.0.1/24"]);

        // Again: nothing to do, and nothing reported as done.
        let again = net.ensure_bridge(BRIDGE, gateway()).unwrap();
        assert_eq!(
            again,
            BridgeOutcome {
                created_bridge: false,
                added_address: false
            }
        );
        assert_eq!(ip_addresses(BRIDGE), vec!["10.77.0.1/24"]);
    });
}

#[test]
fn an_existing_bridge_and_address_are_reused_and_reported_as_such() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        // Made by someone else, down and without the address.
        ip_run(&["link", "add", BRIDGE, "type", "bridge"]);
        let index = net.link(BRIDGE).unwrap().unwrap().index;
        let outcome = net.ensure_bridge(BRIDGE, gateway()).unwrap();
        assert_eq!(
            outcome,
            BridgeOutcome {
                created_bridge: false,
                added_address: true
            }
        );
        let link = net.link(BRIDGE).unwrap().unwrap();
        assert_eq!(link.index, index, "the bridge was replaced");
        assert!(link.up);
        assert!(ip_flags(&ip_link(BRIDGE).unwrap()).contains(&"UP"));
        assert_eq!(ip_addresses(BRIDGE), vec!["10.77.0.1/24"]);

        // The address taken away, then removing it again: nothing there.
        assert!(net.remove_address(BRIDGE, gateway()).unwrap());
        assert_eq!(ip_addresses(BRIDGE), Vec::<String>::new());
        assert!(!net.remove_address(BRIDGE, gateway()).unwrap());
        assert!(!net.remove_address("mbr-absent", gateway()).unwrap());

        // An address that was already there is reported as not added.
        ip_run(&["address", "add", "10.77.0.1/24", "dev", BRIDGE]);
        let outcome = net.ensure_bridge(BRIDGE, gateway()).unwrap();
        assert_eq!(
            outcome,
            BridgeOutcome {
                created_bridge: false,
                added_address: false
            }
        );
        assert_eq!(ip_addresses(BRIDGE), vec!["10.77.0.1/24"]);
    });
}

#[test]
fn an_interface_that_is_not_a_bridge_is_refused_as_the_bridge() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        // A veth, as container tools leave behind.
        ip_run(&[
            "link", "add", BRIDGE, "type", "veth", "peer", "name", "mbr-peer",
        ]);
        let err = net.ensure_bridge(BRIDGE, gateway()).unwrap_err();
        assert!(
            matches!(&err, HostNetError::NotABridge { link, kind: LinkKind::Other(kind) }
                if link == BRIDGE && kind == "veth"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cannot use mbr-test0 as a bridge: it exists and is a veth interface, not a bridge"
        );
        // Left as it was: still a veth, down, without the address.
        let shown = ip_link(BRIDGE).unwrap();
        assert_eq!(shown["linkinfo"]["info_kind"], "veth");
        assert!(!ip_flags(&shown).contains(&"UP"));
        assert_eq!(ip_addresses(BRIDGE), Vec::<String>::new());

        // Neither may a TAP be put on it, nor on a bridge that is not there.
        let err = net.create_tap(TAP, BRIDGE).unwrap_err();
        assert!(matches!(err, HostNetError::NotABridge { .. }), "{err:?}");
        let err = net.create_tap(TAP, "mbr-absent").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot attach TAP m1a2b3c4d5e6f-0 to bridge mbr-absent: there is no interface named mbr-absent"
        );
        assert_eq!(ip_link(TAP), None, "a TAP was left behind");
    });
}

#[test]
fn links_made_by_others_are_reported_as_the_kernel_has_them() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        ip_run(&["tuntap", "add", "mtun-test0", "mode", "tun"]);
        let tun = net.link("mtun-test0").unwrap().unwrap();
        assert_eq!(
            tun.kind,
            LinkKind::Tun(TunInfo {
                tap: false,
                persistent: true,
                vnet_hdr: false,
                multi_queue: false
            })
        );
        assert!(!tun.up);
        assert_eq!(tun.kind.to_string(), "TUN");

        ip_run(&["tuntap", "add", "mtap-mq0", "mode", "tap", "multi_queue"]);
        let LinkKind::Tun(info) = net.link("mtap-mq0").unwrap().unwrap().kind else {
            panic!("not a tun device");
        };
        assert!(info.tap && info.multi_queue, "{info:?}");

        let lo = net.link("lo").unwrap().unwrap();
        assert_eq!(lo.kind, LinkKind::Other(String::new()));
        assert_eq!(lo.index, 1);
        assert_eq!(ip_link("lo").unwrap()["ifindex"], 1);
    });
}

#[test]
fn a_tap_is_created_persistent_on_the_bridge_and_up() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        net.ensure_bridge(BRIDGE, gateway()).unwrap();
        net.create_tap(TAP, BRIDGE).unwrap();

        let link = net.link(TAP).unwrap().expect("the TAP");
        assert_eq!(
            link.kind,
            LinkKind::Tun(TunInfo {
                tap: true,
                persistent: true,
                vnet_hdr: true,
                multi_queue: false
            })
        );
        assert_eq!(link.master.as_deref(), Some(BRIDGE));
        assert!(link.up);
        assert_eq!(link.addresses, Vec::new());

        let shown = ip_link(TAP).expect("ip sees the TAP");
        assert_eq!(shown["linkinfo"]["info_kind"], "tun");
        assert_eq!(shown["linkinfo"]["info_data"]["type"], "tap");
        assert_eq!(shown["linkinfo"]["info_data"]["persist"], true);
        assert_eq!(shown["linkinfo"]["info_data"]["pi"], false);
        assert_eq!(shown["linkinfo"]["info_data"]["multi_queue"], false);
        assert_eq!(shown["master"], BRIDGE);
        assert!(ip_flags(&shown).contains(&"UP"), "{shown}");

        // A second create of the same TAP fails by name and leaves the
        // first as it was.
        let err = net.create_tap(TAP, BRIDGE).unwrap_err();
        assert!(
            matches!(&err, HostNetError::NameInUse { tap } if tap == TAP),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cannot create TAP m1a2b3c4d5e6f-0: the name is in use by an existing interface"
        );
        assert_eq!(net.link(TAP).unwrap().unwrap(), link);
        let again = ip_link(TAP).unwrap();
        assert_eq!(again["ifindex"], shown["ifindex"]);
        assert_eq!(again["master"], BRIDGE);
        assert_eq!(again["linkinfo"]["info_data"]["persist"], true);

        // Any interface's name is in use, not only a TAP's.
        let err = net.create_tap(BRIDGE, BRIDGE).unwrap_err();
        assert!(matches!(err, HostNetError::NameInUse { .. }), "{err:?}");
        assert_eq!(net.link(BRIDGE).unwrap().unwrap().kind, LinkKind::Bridge);
    });
}

#[test]
fn a_tap_that_lost_its_bridge_is_attached_again_in_place() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        net.ensure_bridge(BRIDGE, gateway()).unwrap();
        net.create_tap(TAP, BRIDGE).unwrap();
        let index = net.link(TAP).unwrap().unwrap().index;
        // The bridge deleted and made again: the TAP is on no bridge.
        assert!(net.delete_link(BRIDGE).unwrap());
        net.ensure_bridge(BRIDGE, gateway()).unwrap();
        assert_eq!(net.link(TAP).unwrap().unwrap().master, None);
        assert!(ip_link(TAP).unwrap().get("master").is_none());

        net.attach_to_bridge(TAP, BRIDGE).unwrap();
        net.attach_to_bridge(TAP, BRIDGE).unwrap();
        let link = net.link(TAP).unwrap().unwrap();
        assert_eq!(link.index, index, "the TAP was replaced");
        assert_eq!(link.master.as_deref(), Some(BRIDGE));
        assert!(link.up);
        assert_eq!(ip_link(TAP).unwrap()["master"], BRIDGE);

        let err = net.attach_to_bridge(TAP2, BRIDGE).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot attach TAP m1a2b3c4d5e6f-1 to bridge mbr-test0: "),
            "{err}"
        );
        let err = net.attach_to_bridge(TAP, "mbr-absent").unwrap_err();
        assert!(matches!(err, HostNetError::NoBridge { .. }), "{err:?}");
    });
}

#[test]
fn the_vmm_net_device_attaches_to_a_new_tap_and_leaves_it_in_place() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        net.ensure_bridge(BRIDGE, gateway()).unwrap();
        net.create_tap(TAP, BRIDGE).unwrap();
        let before = net.link(TAP).unwrap().unwrap();

        // The device itself, not a copy of its ioctls.
        let device = devices::virtio::net::Net::new(&devices::virtio::net::NetConfig {
            tap: TAP.to_string(),
            mac: [0x02, 0x6d, 0x65, 0x72, 0x63, 0x01],
        })
        .expect("the VMM's virtio-net device opens the TAP");
        assert_eq!(device.tap_name(), TAP);
        drop(device);

        // A persistent TAP it did not create: left where it was.
        let after = net.link(TAP).unwrap().expect("the device removed the TAP");
        assert_eq!(after.index, before.index);
        assert_eq!(after.master.as_deref(), Some(BRIDGE));
        assert_eq!(ip_link(TAP).unwrap()["master"], BRIDGE);
    });
}

#[test]
fn delete_removes_an_interface_once_and_then_reports_it_gone() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        net.ensure_bridge(BRIDGE, gateway()).unwrap();
        net.create_tap(TAP, BRIDGE).unwrap();

        assert!(net.delete_link(TAP).unwrap());
        assert_eq!(net.link(TAP).unwrap(), None);
        assert_eq!(ip_link(TAP), None, "the persistent TAP outlived delete");
        assert!(!net.delete_link(TAP).unwrap());

        assert!(net.delete_link(BRIDGE).unwrap());
        assert_eq!(ip_link(BRIDGE), None);
        assert!(!net.delete_link(BRIDGE).unwrap());
    });
}

#[test]
fn a_tap_that_cannot_be_attached_is_removed_again() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        // No interface has this index: the kernel refuses the master.
        let err = net.create_tap_on(TAP, "mbr-gone", 0x7fff_fff0).unwrap_err();
        assert!(
            matches!(&err, HostNetError::Failed { operation: Operation::AttachTap { tap, .. }, .. }
                if tap == TAP),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("cannot attach TAP m1a2b3c4d5e6f-0 to bridge mbr-gone: "),
            "{err}"
        );
        assert_eq!(net.link(TAP).unwrap(), None);
        assert_eq!(ip_link(TAP), None, "a half-made TAP was left behind");
    });
}

#[test]
fn bad_names_are_refused_before_the_kernel_sees_them() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        for name in ["", "sixteen-bytes-xx", "a/b", "a b"] {
            let err = net.ensure_bridge(name, gateway()).unwrap_err();
            assert!(
                matches!(&err, HostNetError::InvalidName { name: n, .. } if n == name),
                "{name:?}: {err:?}"
            );
            assert!(matches!(
                net.create_tap(name, BRIDGE),
                Err(HostNetError::InvalidName { .. })
            ));
            assert!(matches!(
                net.delete_link(name),
                Err(HostNetError::InvalidName { .. })
            ));
        }
        assert_eq!(
            net.link("sixteen-bytes-xx").unwrap_err().to_string(),
            "invalid interface name \"sixteen-bytes-xx\": longer than 15 bytes (IFNAMSIZ - 1)"
        );
    });
}

#[test]
fn without_a_tun_driver_the_error_says_so() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        net.ensure_bridge(BRIDGE, gateway()).unwrap();
        // A mount namespace of this thread's own in which /dev/net is an
        // empty tmpfs: there is no /dev/net/tun. Mounts are made private
        // first, so nothing propagates to the host.
        // SAFETY: unshare takes only flags; it changes only this thread.
        let ret = unsafe { libc::unshare(libc::CLONE_NEWNS) };
        assert_eq!(
            ret,
            0,
            "unshare(CLONE_NEWNS): {}",
            io::Error::last_os_error()
        );
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: the strings are NUL-terminated literals; the other
        // pointers may be null for these mount calls.
        let ret = unsafe {
            libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        assert_eq!(ret, 0, "make / private: {}", io::Error::last_os_error());
        // SAFETY: as above.
        let ret = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c"/dev/net".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            ret,
            0,
            "mount tmpfs on /dev/net: {}",
            io::Error::last_os_error()
        );

        let err = net.create_tap(TAP, BRIDGE).unwrap_err();
        assert!(
            matches!(&err, HostNetError::NoKernelSupport { operation: Operation::CreateTap { tap }, .. }
                if tap == TAP),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(
                "cannot create TAP m1a2b3c4d5e6f-0: this kernel has no TUN/TAP driver"
            ),
            "{err}"
        );
        assert_eq!(ip_link(TAP), None);
    });
}

#[test]
fn without_cap_net_admin_the_error_says_what_is_missing() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        net.ensure_bridge(BRIDGE, gateway()).unwrap();
        drop_net_admin();

        let err = net.ensure_bridge("mbr-test1", gateway()).unwrap_err();
        assert!(
            matches!(&err, HostNetError::NotPermitted { operation: Operation::CreateBridge { bridge } }
                if bridge == "mbr-test1"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cannot create bridge mbr-test1: not permitted (host networking needs CAP_NET_ADMIN \
             in this network namespace: run mercury as root)"
        );
        let err = net.create_tap(TAP, BRIDGE).unwrap_err();
        assert!(
            matches!(&err, HostNetError::NotPermitted { operation: Operation::CreateTap { tap } }
                if tap == TAP),
            "{err:?}"
        );
        let err = net.delete_link(BRIDGE).unwrap_err();
        assert!(matches!(err, HostNetError::NotPermitted { .. }), "{err:?}");
        assert!(ip_link(BRIDGE).is_some());
    });
}

/// Attaches to TAP `name` as the VMM's virtio-net device does: the same
/// flags, a 12-byte vnet header, non-blocking.
fn open_like_the_device(name: &str) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .unwrap();
    let mut ifr = ifreq(name, TAP_FLAGS);
    // SAFETY: TUNSETIFF reads and writes the `ifreq` given.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    assert_eq!(ret, 0, "TUNSETIFF {name}: {}", io::Error::last_os_error());
    let hdr_len = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one `int`.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
    assert_eq!(ret, 0, "TUNSETVNETHDRSZ: {}", io::Error::last_os_error());
    file
}

/// An ethertype for local experiments (IEEE 802): nothing else in the
/// namespace sends it.
const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

fn test_frame() -> Vec<u8> {
    let mut frame = vec![0xff; 6]; // broadcast: flooded to every port
    frame.extend([0x02, 0x6d, 0x65, 0x72, 0x63, 0x01]);
    frame.extend(TEST_ETHERTYPE);
    frame.extend(b"mercury hostnet: a frame across the bridge");
    frame.resize(60, 0);
    frame
}

/// Reads frames from `tap` until one of the test ethertype comes, waiting
/// at most `wait`; the frame without its vnet header.
fn read_test_frame(tap: &mut File, wait: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let mut pollfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one `pollfd` given.
        unsafe { libc::poll(&mut pollfd, 1, 50) };
        match tap.read(&mut buf) {
            Ok(n) if n >= VNET_HDR_LEN + 14 => {
                let frame = &buf[VNET_HDR_LEN..n];
                if frame[12..14] == TEST_ETHERTYPE {
                    return Some(frame.to_vec());
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read TAP: {e}"),
        }
    }
    None
}

#[test]
fn a_frame_crosses_the_bridge_from_one_tap_to_another() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        net.ensure_bridge(BRIDGE, gateway()).unwrap();
        net.create_tap(TAP, BRIDGE).unwrap();
        net.create_tap(TAP2, BRIDGE).unwrap();
        let mut sender = open_like_the_device(TAP);
        let mut receiver = open_like_the_device(TAP2);

        // A port forwards once the kernel has seen its carrier come up
        // (link events are processed asynchronously): send until a copy
        // arrives, for at most ~10 s.
        let sent = test_frame();
        let mut packet = vec![0u8; VNET_HDR_LEN];
        packet.extend(&sent);
        let mut received = None;
        for _ in 0..50 {
            let n = sender.write(&packet).expect("write a frame into the TAP");
            assert_eq!(n, packet.len());
            received = read_test_frame(&mut receiver, Duration::from_millis(200));
            if received.is_some() {
                break;
            }
        }
        assert_eq!(
            received.as_deref(),
            Some(&sent[..]),
            "the frame written into {TAP} did not come out of {TAP2}"
        );
    });
}

/// The descriptor that created a TAP must not outlive `create_tap` in a
/// child forked meanwhile (a single-queue TAP takes one descriptor): with
/// the creation in the shared descriptor table this found several of the
/// 300 TAPs busy on every run.
#[test]
fn a_new_tap_is_free_for_the_vmm_while_other_threads_fork() {
    in_new_netns(|| {
        let net = HostNet::open().unwrap();
        net.ensure_bridge(BRIDGE, gateway()).unwrap();
        // Another thread forks children all along: each holds a copy of
        // the process's descriptors until it execs.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forkers: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = Command::new("true").status();
                    }
                })
            })
            .collect();
        let mut busy = Vec::new();
        for i in 0..300 {
            let name = format!("mtap-race-{i}");
            net.create_tap(&name, BRIDGE).unwrap();
            // Attach at once, as a VM started right after `create_tap` does.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap();
            let mut ifr = ifreq(&name, TAP_FLAGS);
            // SAFETY: TUNSETIFF reads and writes the `ifreq` given.
            if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } != 0 {
                busy.push(format!("{name}: {}", io::Error::last_os_error()));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for forker in forkers {
            forker.join().unwrap();
        }
        assert_eq!(
            busy,
            Vec::<String>::new(),
            "TAPs the VMM could not attach to"
        );
    });
}
