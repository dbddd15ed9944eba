//! Creating a persistent TAP through `/dev/net/tun` (netlink cannot create
//! tun/tap devices).
//!
//! The flags are the ones the VMM's virtio-net device opens TAPs with
//! (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, single queue), so the device
//! attaches to the TAP made here: on a re-attach the kernel requires the
//! same type (TAP) and the same multi-queue setting, and takes `NO_PI` and
//! `VNET_HDR` from the opener. The owner and group are left unset, so
//! attaching needs `CAP_NET_ADMIN`, which mercury has. `IFF_TUN_EXCL` makes
//! the kernel refuse (`EBUSY`) when any interface of that name exists,
//! checked under the same lock that creates it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// The flags a mercury TAP is created with (see the module comment).
pub(super) const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// `struct ifreq` naming `name` (already checked: shorter than IFNAMSIZ).
pub(super) fn ifreq(name: &str, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: `ifreq` is plain data (a byte array and a union of integers,
    // arrays and a pointer that is never dereferenced); all zeroes is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    // `ifru_flags` is a C short; IFF_TUN_EXCL is its top bit.
    ifr.ifr_ifru.ifru_flags = flags as u16 as libc::c_short;
    ifr
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Creates the persistent TAP `name` in the calling thread's network
/// namespace and closes the descriptor that made it, so the TAP is free
/// for the VMM to attach to. `EBUSY`: the name is taken.
///
/// The work happens on a helper thread with a file descriptor table of its
/// own (`unshare(CLONE_FILES)`; it shares the caller's namespaces). A
/// single-queue TAP takes one attached descriptor, and a descriptor in the
/// process's shared table is copied into every child another thread forks
/// in the meantime and stays open there until the child execs; the VMM
/// opening the TAP just after `create_tap` returned would then find it
/// busy. A private table is copied by no one.
pub(super) fn create_persistent(name: &str) -> Result<(), TapFailure> {
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("mercury-tap".to_string())
            .spawn_scoped(scope, || {
                // SAFETY: unshare takes only flags and changes only the
                // calling (helper) thread's descriptor table.
                check(unsafe { libc::unshare(libc::CLONE_FILES) }).map_err(TapFailure::Os)?;
                create_here(name)
            })
            .map_err(TapFailure::Os)?;
        helper.join().unwrap_or_else(|_| {
            Err(TapFailure::Os(io::Error::other(
                "the TAP creation thread panicked",
            )))
        })
    })
}

/// Why a TAP could not be made.
pub(super) enum TapFailure {
    /// `/dev/net/tun` is missing, or no TUN/TAP driver is behind it.
    NoDriver(io::Error),
    /// Any other error (`EBUSY`: the name is taken).
    Os(io::Error),
}

/// TUNSETIFF + TUNSETPERSIST on a new `/dev/net/tun` descriptor (which
/// creates its interface in the namespace of the task that opened it).
fn create_here(name: &str) -> Result<(), TapFailure> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => TapFailure::NoDriver(e),
            _ => TapFailure::Os(e),
        })?;
    let mut ifr = ifreq(name, TAP_FLAGS | libc::IFF_TUN_EXCL);
    // SAFETY: TUNSETIFF reads and writes back one `ifreq`, which `ifr` is
    // and which outlives the call.
    check(unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) })
        .map_err(TapFailure::Os)?;
    // Until this succeeds the interface lives only as long as `file`:
    // returning early closes it, and the kernel removes the TAP.
    // SAFETY: TUNSETPERSIST takes an integer by value; no memory is passed.
    check(unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) })
        .map_err(TapFailure::Os)
}
