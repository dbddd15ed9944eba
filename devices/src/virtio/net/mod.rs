//! virtio-net (virtio 1.2, 5.1) with a host TAP backend.
//!
//! One receive queue (0) and one transmit queue (1). Frames cross the TAP
//! with their 12-byte `virtio_net_hdr_v1` (`IFF_VNET_HDR`,
//! `TUNSETVNETHDRSZ`), so checksum and segmentation offloads pass between
//! guest and host kernel untouched.
//!
//! - `tap`: opening (or creating) the TAP, offload probing.
//! - `device`: configuration space, features, the [`VirtioDevice`] glue
//!   and which TAP events are watched.
//! - `rx`: TAP → guest, with mergeable buffers and a pending frame while
//!   the guest has no buffers.
//! - `tx`: guest → TAP through a bounce buffer, with a pending chain
//!   while the TAP is full.
//!
//! [`VirtioDevice`]: super::VirtioDevice

mod device;
mod rx;
mod tap;
mod tx;

#[cfg(test)]
mod rx_tests;
#[cfg(test)]
mod tap_tests;
#[cfg(test)]
mod test_utils;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transport_tests;
#[cfg(test)]
mod tx_tests;

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

pub use device::{Net, NetStats};
pub use tap::check_tap_name;

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;

/// Length of `virtio_net_hdr_v1` (with `num_buffers`), the header in front
/// of every frame, in the queues and on the TAP.
pub const VNET_HDR_LEN: usize = 12;
const _: () =
    assert!(std::mem::size_of::<virtio_bindings::virtio_net::virtio_net_hdr_v1>() == VNET_HDR_LEN);

/// Ethernet header length.
const ETH_HLEN: usize = 14;
/// Largest frame (without the virtio header) either way: the largest IP
/// packet (64 KiB − 1, a full TSO/GSO packet) behind an Ethernet header with
/// one VLAN tag. Larger guest frames are dropped.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize + ETH_HLEN + 4;

/// Most frames moved per queue per wake-up, so a busy TAP or a busy guest
/// cannot keep the VMM thread from its other devices.
pub const FRAMES_PER_WAKE: usize = 64;

/// What the VMM asks for: one NIC on one host TAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Name of the host TAP, opened if it exists, created if not.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: [u8; 6],
}

/// Why a network device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A MAC address string is not a usable unicast address.
    #[error("invalid MAC address {mac:?}: {reason}")]
    InvalidMac {
        /// The string given.
        mac: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another file descriptor (another process, or another device) is
    /// attached to the single-queue TAP.
    #[error("TAP {tap} is busy: another file descriptor is attached to it (a single-queue TAP takes one)")]
    TapBusy {
        /// The TAP's name.
        tap: String,
    },
    /// An ioctl setting up the opened TAP failed.
    #[error("TAP {tap}: {what}: {source}")]
    TapConfigure {
        /// The TAP's name.
        tap: String,
        /// Which step failed.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The kernel refused to open or create the TAP.
    #[error("cannot open or create TAP {tap}: {source}")]
    TapCreate {
        /// The TAP's name.
        tap: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The name cannot name a network interface.
    #[error("invalid TAP name {tap:?}: {reason}")]
    TapName {
        /// The name given.
        tap: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An interface of that name exists and is not a single-queue TAP.
    #[error("{tap} exists and is not a single-queue TAP device")]
    TapNotATap {
        /// The interface's name.
        tap: String,
    },
    /// Creating or attaching the TAP needs `CAP_NET_ADMIN` (or ownership of
    /// a persistent TAP).
    #[error("not permitted to open or create TAP {tap} (needs CAP_NET_ADMIN or the TAP's owner)")]
    TapNotPermitted {
        /// The TAP's name.
        tap: String,
    },
    /// `/dev/net/tun` cannot be opened.
    #[error("cannot open /dev/net/tun for TAP {tap}: {source}")]
    TunOpen {
        /// The TAP's name.
        tap: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The host side of the NIC: a TAP in the VMM, a fake in unit tests and the
/// fuzzer ([`Net::with_backend`]). Every
/// call is non-blocking (`WouldBlock` when there is nothing to read or no
/// room to write); one call moves one whole frame, virtio header first.
pub trait Backend: Send {
    /// Reads one frame into `buf`; returns its length.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame gathered from `bufs`; returns the bytes taken.
    fn write_frame(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Tells the host which offloads (`TUN_F_*`) the guest accepts on
    /// receive.
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
    /// The descriptor the VMM thread watches for readiness.
    fn raw_fd(&self) -> RawFd;
}

/// A MAC address for the NIC called `name` (say, `cluster/node/eth0`):
/// the same name always gives the same address, locally administered and
/// unicast (first byte `0x02`), the other five bytes from a 64-bit FNV-1a
/// hash of the name (a fixed algorithm, stable across Rust releases, unlike
/// `std`'s `DefaultHasher`).
pub fn mac_from_name(name: &str) -> [u8; 6] {
    let h = crate::fnv1a64(name.bytes()).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

/// Parses `"52:54:00:12:34:56"`: six two-digit hex bytes separated by
/// colons. Multicast (and broadcast) and all-zero addresses are refused:
/// neither can be a NIC's own address.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetError> {
    let invalid = |reason| NetError::InvalidMac {
        mac: s.to_string(),
        reason,
    };
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .ok_or_else(|| invalid("expected six bytes separated by ':'"))?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("each byte must be two hex digits"));
        }
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| invalid("each byte must be two hex digits"))?;
    }
    if parts.next().is_some() {
        return Err(invalid("expected six bytes separated by ':'"));
    }
    if mac[0] & 1 != 0 {
        return Err(invalid(
            "multicast address (lowest bit of the first byte set)",
        ));
    }
    if mac == [0; 6] {
        return Err(invalid("all-zero address"));
    }
    Ok(mac)
}
