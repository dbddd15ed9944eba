//! The host TAP: `/dev/net/tun` attached to a named TAP interface with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 12-byte vnet header and a
//! non-blocking descriptor.
//!
//! A TAP that did not exist is created non-persistent: the kernel deletes
//! it when this descriptor (the only one: it is close-on-exec) is closed,
//! so dropping the device leaves nothing behind. A persistent TAP made by
//! someone else (`ip tuntap add`) is attached to and left in place.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use libc::{c_int, c_uint, c_ulong};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

use super::{Backend, NetError, VNET_HDR_LEN};

/// Offloads the guest may receive, as `TUNSETOFFLOAD` takes them.
pub(crate) const TUN_F_CSUM: u32 = libc::TUN_F_CSUM;
pub(crate) const TUN_F_TSO4: u32 = libc::TUN_F_TSO4;
pub(crate) const TUN_F_TSO6: u32 = libc::TUN_F_TSO6;
pub(crate) const TUN_F_UFO: u32 = libc::TUN_F_UFO;

/// An open TAP.
#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
    name: String,
    persistent: bool,
    offloads: u32,
}

/// Checks `name` as the kernel's `dev_valid_name` would (and, stricter,
/// printable ASCII only, so a name is the same in every log and tool), so a
/// bad name is reported as such and not as an ioctl failure. The VMM's
/// configuration validation calls this too, before anything is created.
pub fn check_tap_name(name: &str) -> Result<(), NetError> {
    let bad = |reason| {
        Err(NetError::TapName {
            tap: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() >= libc::IFNAMSIZ {
        return bad("longer than 15 bytes (IFNAMSIZ - 1)");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not interface names");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == b'%' || !b.is_ascii_graphic())
    {
        return bad("contains '/', ':', '%', whitespace or a byte that is not printable ASCII");
    }
    Ok(())
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a byte array and a union of
    // integers, arrays and a pointer that is never dereferenced); all zeroes
    // is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

fn ioctl_result(ret: c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Tap {
    /// Attaches to the TAP `name`, creating it if there is none.
    pub(crate) fn open(name: &str) -> Result<Tap, NetError> {
        check_tap_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|source| NetError::TunOpen {
                tap: name.to_string(),
                source,
            })?;
        let mut ifr = ifreq_for(name);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and writes back one `ifreq`, which `ifr`
        // is and which outlives the call.
        let ret = unsafe { ioctl_with_mut_ref(&file, libc::TUNSETIFF as c_ulong, &mut ifr) };
        if let Err(source) = ioctl_result(ret) {
            let tap = name.to_string();
            return Err(match source.raw_os_error() {
                Some(libc::EBUSY) => NetError::TapBusy { tap },
                Some(libc::EPERM) | Some(libc::EACCES) => NetError::TapNotPermitted { tap },
                Some(libc::EINVAL) => NetError::TapNotATap { tap },
                _ => NetError::TapCreate { tap, source },
            });
        }
        let configure = |what, source| NetError::TapConfigure {
            tap: name.to_string(),
            what,
            source,
        };
        let hdr_len = VNET_HDR_LEN as c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int`, which `hdr_len` is.
        let ret = unsafe { ioctl_with_ref(&file, libc::TUNSETVNETHDRSZ as c_ulong, &hdr_len) };
        ioctl_result(ret).map_err(|e| configure("TUNSETVNETHDRSZ", e))?;
        let mut flags = ifreq_for(name);
        // SAFETY: TUNGETIFF writes one `ifreq`, which `flags` is.
        let ret = unsafe { ioctl_with_mut_ref(&file, libc::TUNGETIFF as c_ulong, &mut flags) };
        ioctl_result(ret).map_err(|e| configure("TUNGETIFF", e))?;
        // SAFETY: TUNGETIFF filled in the flags member of the union.
        let persistent = i32::from(unsafe { flags.ifr_ifru.ifru_flags }) & libc::IFF_PERSIST != 0;
        let mut tap = Tap {
            file,
            name: name.to_string(),
            persistent,
            offloads: 0,
        };
        tap.offloads = tap.probe_offloads();
        tap.set_offload(0)
            .map_err(|e| configure("TUNSETOFFLOAD", e))?;
        Ok(tap)
    }

    /// The offloads this host's TAP driver accepts: checksum and TSO
    /// everywhere; UFO only on kernels that kept accepting `TUN_F_UFO`
    /// (4.14 removed it, later releases took it back). An empty set when
    /// not even checksum offload is accepted.
    fn probe_offloads(&mut self) -> u32 {
        let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        [base | TUN_F_UFO, base, TUN_F_CSUM]
            .into_iter()
            .find(|&flags| self.set_offload(flags).is_ok())
            .unwrap_or(0)
    }

    /// `TUN_F_*` flags the TAP accepted in [`Self::probe_offloads`].
    pub(crate) fn offloads(&self) -> u32 {
        self.offloads
    }

    /// The interface's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether the TAP outlives this descriptor (someone else made it
    /// persistent); if not, closing it deletes the interface.
    pub(crate) fn persistent(&self) -> bool {
        self.persistent
    }
}

impl Backend for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // One writev: the TAP takes one frame per write.
        self.file.write_vectored(bufs)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is
        // passed.
        let ret = unsafe {
            ioctl_with_val(
                &self.file,
                libc::TUNSETOFFLOAD as c_ulong,
                c_ulong::from(flags as c_uint),
            )
        };
        ioctl_result(ret)
    }

    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The index of interface `name` in the calling thread's network
/// namespace, if there is one.
#[cfg(test)]
pub(crate) fn if_index(name: &str) -> Option<u32> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    let cname = std::ffi::CStr::from_bytes_with_nul(&bytes).ok()?;
    // SAFETY: `cname` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    (index != 0).then_some(index)
}
