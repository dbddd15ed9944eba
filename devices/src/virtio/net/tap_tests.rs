//! Tests on a real TAP, each inside a network namespace of its own.
//!
//! Namespaces belong to tasks, and every thread is a task: a thread that
//! calls `unshare(CLONE_NEWNET)` moves itself alone into a new, empty
//! network namespace, while the other test threads stay in the host's
//! ([`in_new_netns`] checks this). TAPs are created and frames sent only
//! there; the namespace goes away with the thread. These tests need root
//! (`CAP_SYS_ADMIN` to unshare, `CAP_NET_ADMIN` inside), as CI has; without
//! it they fail, saying so, rather than pass untested.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mercury_tests::netns::{drop_net_admin, in_new_netns};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::tap::{if_index, Tap};
use super::test_utils::{memory, GuestQueue};
use super::{Net, NetConfig, NetError, TX_QUEUE, VNET_HDR_LEN};
use crate::virtio::test_utils::CountingInterrupt;
use crate::virtio::{FdChange, FdWatch, VirtioDevice, VERSION_1};

/// An ethertype for local experiments (IEEE 802): nothing else in the
/// namespace sends it.
pub(super) const TEST_ETHERTYPE: u16 = 0x88b5;
pub(super) const GUEST_MAC: [u8; 6] = [0x02, 0x6d, 0x65, 0x72, 0x63, 0x01];
pub(super) const HOST_MAC: [u8; 6] = [0x02, 0x6d, 0x65, 0x72, 0x63, 0x02];

pub(super) fn check(ret: libc::c_int, what: &str) {
    assert!(ret >= 0, "{what}: {}", io::Error::last_os_error());
}

fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> OwnedFd {
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    check(fd, "socket");
    // SAFETY: `fd` is a new descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain data; all zeroes is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

/// `ip link set <name> up`.
pub(super) fn bring_up(name: &str) {
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS fills the `ifreq` `ifr` points to.
    check(
        unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) },
        "SIOCGIFFLAGS",
    );
    // SAFETY: the kernel just filled in the flags member.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the `ifreq` `ifr` points to.
    check(
        unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) },
        "SIOCSIFFLAGS",
    );
}

/// A raw packet socket on interface `name`: sees every frame that comes in
/// on it and sends frames out of it.
pub(super) fn packet_socket(name: &str) -> OwnedFd {
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    let sock = socket(libc::AF_PACKET, libc::SOCK_RAW, protocol.into());
    // SAFETY: `sockaddr_ll` is plain data; all zeroes is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = if_index(name).expect("interface") as i32;
    // SAFETY: `addr` is a `sockaddr_ll` of the length given.
    let ret = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    check(ret, "bind AF_PACKET");
    sock
}

pub(super) fn wait_readable(fd: RawFd, until: Instant) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let left = until.saturating_duration_since(Instant::now()).as_millis() as i32;
    // SAFETY: `pfd` is one valid `pollfd`.
    unsafe { libc::poll(&mut pfd, 1, left) > 0 }
}

pub(super) fn test_frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut frame = Vec::with_capacity(len);
    frame.extend(dst);
    frame.extend(src);
    frame.extend(TEST_ETHERTYPE.to_be_bytes());
    frame.extend((14..len).map(|i| seed.wrapping_add(i as u8)));
    frame
}

pub(super) fn is_test_frame(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&TEST_ETHERTYPE.to_be_bytes()[..])
}

fn open(name: &str) -> Net {
    Net::new(&NetConfig {
        tap: name.to_string(),
        mac: GUEST_MAC,
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn activate(net: &mut Net, memory: &GuestMemoryMmap, rx: &GuestQueue, tx: &GuestQueue) -> RawFd {
    net.ack_features(VERSION_1);
    let mut fds = FdWatch::default();
    net.activate(
        memory.clone(),
        vec![
            rx.mock.create_queue().unwrap(),
            tx.mock.create_queue().unwrap(),
        ],
        Arc::new(CountingInterrupt::default()),
        &mut fds,
    )
    .unwrap();
    match fds.changes[..] {
        [FdChange::Add(fd, events)] if events == EventSet::IN => fd,
        ref other => panic!("activation asked for {other:?}"),
    }
}

#[test]
fn a_real_tap_carries_frames_both_ways() {
    in_new_netns(|| {
        let name = "mercury-net0";
        let mut net = open(name);
        let memory = memory();
        let mut rx = GuestQueue::new(&memory, 0, 64);
        let mut tx = GuestQueue::new(&memory, 0x8000, 16);
        for i in 0..32 {
            rx.add_chain(&[(0x20_0000 + i * 0x1000, 2048, true)]);
        }
        let tap_fd = activate(&mut net, &memory, &rx, &tx);
        bring_up(name);
        let host = packet_socket(name);
        let deadline = Instant::now() + Duration::from_secs(5);

        // Guest → host: a chain with the header in its own descriptor.
        let sent = test_frame([0xff; 6], GUEST_MAC, 200, 1);
        memory
            .write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(0x10_0000))
            .unwrap();
        memory.write_slice(&sent, GuestAddress(0x11_0000)).unwrap();
        tx.add_chain(&[
            (0x10_0000, 12, false),
            (0x11_0000, sent.len() as u32, false),
        ]);
        net.queue_notified(TX_QUEUE, &mut FdWatch::default());
        assert_eq!(net.stats().tx_frames, 1, "{:?}", net.stats());
        let mut buf = vec![0u8; 4096];
        let got = loop {
            assert!(
                wait_readable(host.as_raw_fd(), deadline),
                "the frame never reached the TAP"
            );
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::recv(host.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            check(n as i32, "recv");
            if is_test_frame(&buf[..n as usize]) {
                break buf[..n as usize].to_vec();
            }
        };
        assert_eq!(got, sent);

        // Host → guest.
        let sent = test_frame(GUEST_MAC, HOST_MAC, 300, 7);
        // SAFETY: the kernel reads `sent.len()` bytes from `sent`.
        let n = unsafe { libc::send(host.as_raw_fd(), sent.as_ptr().cast(), sent.len(), 0) };
        assert_eq!(
            n,
            sent.len() as isize,
            "send: {}",
            io::Error::last_os_error()
        );
        let found = loop {
            assert!(
                wait_readable(tap_fd, deadline),
                "the frame never left the TAP"
            );
            net.host_event(tap_fd, EventSet::IN, &mut FdWatch::default());
            // Past other traffic (IPv6 neighbour discovery) to the test frame.
            let found = rx.used().into_iter().find_map(|(head, len)| {
                let mut bytes = vec![0u8; len as usize];
                let addr = GuestAddress(0x20_0000 + u64::from(head) * 0x1000);
                memory.read_slice(&mut bytes, addr).unwrap();
                is_test_frame(&bytes[VNET_HDR_LEN..]).then_some(bytes)
            });
            if let Some(found) = found {
                break found;
            }
        };
        assert_eq!(found[VNET_HDR_LEN..], sent[..]);
        assert_eq!(u16::from_le_bytes([found[10], found[11]]), 1, "num_buffers");
    });
}

#[test]
fn a_created_tap_is_removed_on_drop_and_a_persistent_one_is_kept() {
    in_new_netns(|| {
        // The longest name there can be: IFNAMSIZ - 1 bytes.
        let name = "mercury-created";
        assert_eq!(name.len(), 15);
        assert_eq!(if_index(name), None);
        let net = open(name);
        assert!(if_index(name).is_some(), "Net::new did not create {name}");
        drop(net);
        assert_eq!(if_index(name), None, "{name} outlived the device");

        // Made persistent by someone else: attached to, then left alone.
        let name = "persistent0";
        let admin = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap();
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes the `ifreq` given.
        check(
            unsafe { libc::ioctl(admin.as_raw_fd(), libc::TUNSETIFF, &mut ifr) },
            "TUNSETIFF",
        );
        // SAFETY: TUNSETPERSIST takes an integer.
        check(
            unsafe { libc::ioctl(admin.as_raw_fd(), libc::TUNSETPERSIST, 1) },
            "TUNSETPERSIST",
        );
        drop(admin);
        let tap = Tap::open(name).unwrap();
        assert!(tap.persistent());
        drop(tap);
        assert!(
            if_index(name).is_some(),
            "mercury removed a TAP it did not create"
        );
    });
}

#[test]
fn a_busy_tap_and_a_non_tap_are_reported_by_name() {
    in_new_netns(|| {
        let name = "mercury-busy";
        let _first = open(name);
        let err = Net::new(&NetConfig {
            tap: name.to_string(),
            mac: GUEST_MAC,
        })
        .err()
        .expect("a second open of a single-queue TAP");
        assert!(matches!(err, NetError::TapBusy { .. }), "{err}");
        assert!(err.to_string().contains(name), "{err}");

        let err = Tap::open("lo").expect_err("lo is no TAP");
        assert!(matches!(err, NetError::TapNotATap { .. }), "{err}");
        assert!(err.to_string().contains("lo"), "{err}");
    });
}

#[test]
fn without_cap_net_admin_a_tap_is_not_permitted() {
    in_new_netns(|| {
        drop_net_admin();
        let err = Tap::open("mercury-eperm").expect_err("created without CAP_NET_ADMIN");
        assert!(matches!(err, NetError::TapNotPermitted { .. }), "{err}");
        assert!(err.to_string().contains("mercury-eperm"), "{err}");
    });
}

#[test]
fn a_real_tap_accepts_checksum_and_tso_offloads() {
    in_new_netns(|| {
        use super::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
        let tap = Tap::open("mercury-offld").unwrap();
        let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        assert_eq!(tap.offloads() & base, base, "{:#x}", tap.offloads());
        let net = open("mercury-offld2");
        let guest_tso = 1u64 << virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_TSO4;
        assert_ne!(net.features() & guest_tso, 0);
    });
}
