//! Network test helpers: a private network namespace for the calling
//! thread, and a raw packet socket on an interface in it, to see the
//! frames a guest sends through its TAP and to send it some.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

/// Moves the calling thread into a new, empty network namespace (and so
/// every TAP, bridge and socket it creates after this). Needs root.
/// Threads and child processes started from this thread afterwards are in
/// it too; other threads of the test binary are not.
pub fn enter_new_netns() -> io::Result<()> {
    unshare_netns()?;
    ip(&["link", "set", "lo", "up"])
}

fn unshare_netns() -> io::Result<()> {
    // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNET
    // affects only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's network namespace (`net:[4026531840]`).
pub fn current_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("unknown: {e}"))
}

/// Runs `body` on a new thread in a new, empty network namespace of its
/// own (only `lo`, down), and returns when it ends, passing on its panic.
/// Namespaces belong to tasks, so the other test threads stay where they
/// are, and what `body` creates vanishes with its thread. Panics, saying
/// root is needed, if the namespace cannot be made, and if the calling
/// thread's namespace changed (the check that only the new thread moved).
pub fn in_new_netns(body: impl FnOnce() + Send + 'static) {
    let host_ns = current_netns();
    let before = host_ns.clone();
    let thread = std::thread::spawn(move || {
        if let Err(e) = unshare_netns() {
            panic!("unshare(CLONE_NEWNET): {e} (the network namespace tests need root)");
        }
        assert_ne!(
            current_netns(),
            before,
            "the thread did not get its own namespace"
        );
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(
        current_netns(),
        host_ns,
        "the test thread's namespace changed"
    );
}

/// `struct __user_cap_header_struct` and `struct __user_cap_data_struct`
/// (linux/capability.h), for dropping a capability from one thread.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_NET_ADMIN: u32 = 12;

/// Drops `CAP_NET_ADMIN` from the calling thread's effective set
/// (capabilities are per thread: run it in an [`in_new_netns`] body, whose
/// thread ends with the test). Panics if the kernel refuses.
pub fn drop_net_admin() {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two `CapData` (version 3) into `data` and reads
    // `header`.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(ret, 0, "capget: {}", io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    // SAFETY: capset reads `header` and two `CapData`.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    assert_eq!(ret, 0, "capset: {}", io::Error::last_os_error());
}

/// Runs `ip ARGS` (iproute2) in the calling thread's namespace.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether an interface of this name exists in the calling thread's
/// namespace.
pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A raw `AF_PACKET` socket bound to one interface: every frame through it.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a socket on interface `name` (which must exist).
    pub fn bind(name: &str) -> io::Result<PacketSocket> {
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: an all-zero sockaddr_ll is valid; fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// The next frame within `timeout`, or None.
    pub fn recv(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pollfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pollfd, 1, left.as_millis().max(1) as i32) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                continue;
            }
            let mut buf = vec![0u8; 65536];
            // SAFETY: `buf` is writable for its length.
            let len =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if len < 0 {
                return Err(io::Error::last_os_error());
            }
            buf.truncate(len as usize);
            return Ok(Some(buf));
        }
    }

    /// Sends one Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_ll is valid; fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` is readable for its length, `addr` valid.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
