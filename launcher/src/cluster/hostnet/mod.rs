//! Host networking for clusters: the bridge a cluster's nodes share and
//! one TAP per microVM NIC on it, made and removed through rtnetlink (and
//! `/dev/net/tun` for the TAPs themselves, which netlink cannot create).
//! No `ip` is run.
//!
//! A [`HostNet`] works in the network namespace of the thread that opened
//! it: its netlink socket is bound there, and TAPs are created in the
//! calling thread's namespace, so it is not `Send`. Every call measures the kernel's
//! state first, so each is safe to repeat: [`HostNet::ensure_bridge`]
//! reuses a bridge and an address that are already there and says so in
//! its [`BridgeOutcome`] (for `down` to leave them alone),
//! [`HostNet::delete_link`] and [`HostNet::remove_address`] report whether
//! there was anything to remove.
//!
//! The netlink messages come from the rust-netlink project's
//! `netlink-packet-route`, sent over `netlink-sys`'s blocking socket: the
//! same layers `rtnetlink` builds on, without the async runtime it would
//! bring into a synchronous launcher.

mod error;
mod messages;
mod netlink;
mod tap;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::marker::PhantomData;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkHeader, LinkInfo as KernelLinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use self::error::{check_name, errno_is, failed};
pub use self::error::{HostNetError, Operation};
use self::messages::{address_message, controller, if_name, ipv4_address, link_kind};
use self::netlink::Connection;
use self::tap::TapFailure;

/// The result of a host networking call.
pub type Result<T, E = HostNetError> = std::result::Result<T, E>;

/// An interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The interface's name.
    pub name: String,
    /// Its index in the namespace.
    pub index: u32,
    /// What kind of device it is.
    pub kind: LinkKind,
    /// Administratively up (`IFF_UP`); a TAP nobody has open is up but
    /// has no carrier.
    pub up: bool,
    /// The name of the bridge (or other master) it is a port of.
    pub master: Option<String>,
    /// Its IPv4 addresses with their prefix lengths, in kernel order.
    pub addresses: Vec<Ipv4Net>,
}

/// A link's kind (the kernel's `IFLA_INFO_KIND`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// A TUN or TAP device.
    Tun(TunInfo),
    /// Any other kind, by the kernel's name for it (`veth`, `dummy`, ...);
    /// empty for devices without one (physical NICs, loopback).
    Other(String),
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkKind::Bridge => f.write_str("bridge"),
            LinkKind::Tun(TunInfo { tap: true, .. }) => f.write_str("TAP"),
            LinkKind::Tun(_) => f.write_str("TUN"),
            LinkKind::Other(kind) if kind.is_empty() => {
                f.write_str("physical or loopback (kindless)")
            }
            LinkKind::Other(kind) => f.write_str(kind),
        }
    }
}

/// What the kernel says about a TUN/TAP device (`IFLA_TUN_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunInfo {
    /// A TAP (Ethernet frames), not a TUN (IP packets).
    pub tap: bool,
    /// It outlives the descriptors attached to it.
    pub persistent: bool,
    /// Frames carry a virtio-net header (as last set by whoever attached).
    pub vnet_hdr: bool,
    /// It takes several queues (mercury's TAPs take one).
    pub multi_queue: bool,
}

/// What [`HostNet::ensure_bridge`] had to do: `down` removes only what `up`
/// created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeOutcome {
    /// The bridge did not exist and was created.
    pub created_bridge: bool,
    /// The address was not on the bridge and was added.
    pub added_address: bool,
}

/// A netlink connection to the network namespace of the thread that
/// opened it.
pub struct HostNet {
    connection: Connection,
    /// TAPs are created in the calling thread's namespace, so a `HostNet`
    /// stays on the thread (and namespace) it was opened in.
    _same_thread: PhantomData<*const ()>,
}

impl HostNet {
    /// Opens a netlink connection in the calling thread's network
    /// namespace.
    pub fn open() -> Result<HostNet> {
        let connection = Connection::open().map_err(|source| HostNetError::Open { source })?;
        Ok(HostNet {
            connection,
            _same_thread: PhantomData,
        })
    }

    /// The interface `name`, or `None` when there is none.
    pub fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        check_name(name)?;
        let lookup = || Operation::LookUp {
            link: name.to_string(),
        };
        let Some(message) = self.get_link(name).map_err(failed(lookup()))? else {
            return Ok(None);
        };
        let index = message.header.index;
        let master = match controller(&message) {
            Some(master) => self
                .get_link_by_index(master)
                .map_err(failed(lookup()))?
                .as_ref()
                .and_then(if_name),
            None => None,
        };
        let addresses = self.ipv4_addresses(index).map_err(failed(lookup()))?;
        Ok(Some(LinkInfo {
            name: if_name(&message).unwrap_or_else(|| name.to_string()),
            index,
            kind: link_kind(&message),
            up: message.header.flags.contains(LinkFlags::Up),
            master,
            addresses,
        }))
    }

    /// Makes sure the bridge `name` exists with the address `addr` and is
    /// up: creates it if missing, adds the address if missing. An existing
    /// interface of that name that is not a bridge is an error. When a step
    /// after creating the bridge fails, the bridge is deleted again.
    pub fn ensure_bridge(&self, name: &str, addr: Ipv4Net) -> Result<BridgeOutcome> {
        check_name(name)?;
        let (bridge, created_bridge) = match self.link(name)? {
            Some(link) => (link, false),
            None => match self.create_bridge(name) {
                Ok(()) => (self.expect_link(name)?, true),
                // Someone made it since we looked: use it as found.
                Err(HostNetError::Failed { source, .. }) if errno_is(&source, libc::EEXIST) => {
                    (self.expect_link(name)?, false)
                }
                Err(e) => return Err(e),
            },
        };
        if bridge.kind != LinkKind::Bridge {
            return Err(HostNetError::NotABridge {
                link: name.to_string(),
                kind: bridge.kind,
            });
        }
        let finish = || -> Result<bool> {
            let added_address =
                !bridge.addresses.contains(&addr) && self.add_address(name, bridge.index, addr)?;
            if !bridge.up {
                self.set_up(name, bridge.index)?;
            }
            Ok(added_address)
        };
        match finish() {
            Ok(added_address) => Ok(BridgeOutcome {
                created_bridge,
                added_address,
            }),
            Err(e) => {
                if created_bridge {
                    // Best effort: the error that matters is `e`.
                    let _ = self.delete_index(bridge.index);
                }
                Err(e)
            }
        }
    }

    /// Creates the persistent TAP `name` (the flags the VMM's virtio-net
    /// device opens it with), makes it a port of the existing bridge
    /// `bridge` and sets it up. A name already in use by any interface is
    /// [`HostNetError::NameInUse`]; on a failure after the TAP was created
    /// it is removed again.
    pub fn create_tap(&self, name: &str, bridge: &str) -> Result<()> {
        check_name(name)?;
        let bridge_index = self.bridge_index(name, bridge)?;
        self.create_tap_on(name, bridge, bridge_index)
    }

    /// Makes the existing interface `name` a port of the bridge `bridge`
    /// and sets it up, for repairing a TAP in place (a TAP leaves a bridge
    /// that is deleted, and stays off it when the bridge is made again)
    /// without deleting it under a running VM. Doing it again is harmless.
    pub fn attach_to_bridge(&self, name: &str, bridge: &str) -> Result<()> {
        check_name(name)?;
        let bridge_index = self.bridge_index(name, bridge)?;
        let attach = Operation::AttachTap {
            tap: name.to_string(),
            bridge: bridge.to_string(),
        };
        let link = self.get_link(name).map_err(failed(attach.clone()))?;
        let index =
            link.map(|message| message.header.index)
                .ok_or_else(|| HostNetError::Failed {
                    operation: attach.clone(),
                    source: io::Error::from_raw_os_error(libc::ENODEV),
                })?;
        self.set_link(index, Some(bridge_index))
            .map_err(failed(attach))
    }

    /// The index of `bridge`, which must exist and be a bridge, for
    /// putting `port` on it.
    fn bridge_index(&self, port: &str, bridge: &str) -> Result<u32> {
        check_name(bridge)?;
        let link = self.link(bridge)?.ok_or_else(|| HostNetError::NoBridge {
            tap: port.to_string(),
            bridge: bridge.to_string(),
        })?;
        if link.kind != LinkKind::Bridge {
            return Err(HostNetError::NotABridge {
                link: bridge.to_string(),
                kind: link.kind,
            });
        }
        Ok(link.index)
    }

    /// [`Self::create_tap`] once the bridge is known by index.
    fn create_tap_on(&self, name: &str, bridge: &str, bridge_index: u32) -> Result<()> {
        let create = || Operation::CreateTap {
            tap: name.to_string(),
        };
        tap::create_persistent(name).map_err(|failure| match failure {
            TapFailure::NoDriver(source) => HostNetError::NoKernelSupport {
                operation: create(),
                missing: "TUN/TAP driver (/dev/net/tun; CONFIG_TUN, `modprobe tun`)",
                source,
            },
            TapFailure::Os(source) if errno_is(&source, libc::EBUSY) => HostNetError::NameInUse {
                tap: name.to_string(),
            },
            TapFailure::Os(source) => failed(create())(source),
        })?;
        let attached = self.get_link(name).and_then(|found| {
            let index = found
                .map(|message| message.header.index)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
            self.set_link(index, Some(bridge_index))
        });
        attached.map_err(|source| {
            // Best effort: the error that matters is the attach's.
            let _ = self.delete_link(name);
            failed(Operation::AttachTap {
                tap: name.to_string(),
                bridge: bridge.to_string(),
            })(source)
        })
    }

    /// Deletes the interface `name` (of any kind); `false` when there was
    /// none, so deleting twice is not an error.
    pub fn delete_link(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let delete = || Operation::DeleteLink {
            link: name.to_string(),
        };
        // By index, once the name is confirmed: the kernel also matches
        // alternative names, and only `name` itself may go.
        let found = self.get_link(name).map_err(failed(delete()))?;
        match found {
            Some(message) if if_name(&message).as_deref() == Some(name) => self
                .delete_index(message.header.index)
                .map_err(failed(delete())),
            _ => Ok(false),
        }
    }

    /// Removes the address `addr` (address and prefix length) from the
    /// interface `name`; `false` when it was not there (or there is no such
    /// interface).
    pub fn remove_address(&self, name: &str, addr: Ipv4Net) -> Result<bool> {
        check_name(name)?;
        let remove = || Operation::RemoveAddress {
            link: name.to_string(),
            addr,
        };
        let Some(link) = self.get_link(name).map_err(failed(remove()))? else {
            return Ok(false);
        };
        let message = address_message(link.header.index, addr);
        match self
            .connection
            .request(RouteNetlinkMessage::DelAddress(message), 0)
        {
            Ok(_) => Ok(true),
            Err(e) if errno_is(&e, libc::EADDRNOTAVAIL) || errno_is(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(failed(remove())(e)),
        }
    }

    /// [`Self::link`] for a link that must be there (just created or just
    /// reported to exist).
    fn expect_link(&self, name: &str) -> Result<LinkInfo> {
        self.link(name)?.ok_or_else(|| HostNetError::Failed {
            operation: Operation::LookUp {
                link: name.to_string(),
            },
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })
    }

    fn create_bridge(&self, name: &str) -> Result<()> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![KernelLinkInfo::Kind(InfoKind::Bridge)]),
        ];
        self.connection
            .request(
                RouteNetlinkMessage::NewLink(message),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
            .map_err(|source| {
                let operation = Operation::CreateBridge {
                    bridge: name.to_string(),
                };
                // The kernel's answer to a link kind it has no driver for.
                if errno_is(&source, libc::EOPNOTSUPP) {
                    HostNetError::NoKernelSupport {
                        operation,
                        missing: "bridge driver (CONFIG_BRIDGE, `modprobe bridge`)",
                        source,
                    }
                } else {
                    failed(operation)(source)
                }
            })
    }

    /// Adds `addr`; `false` if the kernel says it is already there.
    fn add_address(&self, name: &str, index: u32, addr: Ipv4Net) -> Result<bool> {
        let mut message = address_message(index, addr);
        if addr.prefix_len() < 31 {
            message
                .attributes
                .push(AddressAttribute::Broadcast(addr.broadcast()));
        }
        match self.connection.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(true),
            Err(e) if errno_is(&e, libc::EEXIST) => Ok(false),
            Err(e) => Err(failed(Operation::AddAddress {
                link: name.to_string(),
                addr,
            })(e)),
        }
    }

    fn set_up(&self, name: &str, index: u32) -> Result<()> {
        self.set_link(index, None).map_err(failed(Operation::SetUp {
            link: name.to_string(),
        }))
    }

    /// Sets link `index` up, first making it a port of `master` if given
    /// (one request: the kernel applies the master before the flags).
    fn set_link(&self, index: u32, master: Option<u32>) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header = LinkHeader {
            index,
            flags: LinkFlags::Up,
            change_mask: LinkFlags::Up,
            ..LinkHeader::default()
        };
        message.attributes = master.map(LinkAttribute::Controller).into_iter().collect();
        self.connection
            .request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// Deletes link `index`; `false` if it was gone.
    fn delete_index(&self, index: u32) -> io::Result<bool> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        match self
            .connection
            .request(RouteNetlinkMessage::DelLink(message), 0)
        {
            Ok(_) => Ok(true),
            Err(e) if errno_is(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn get_link(&self, name: &str) -> io::Result<Option<LinkMessage>> {
        let mut message = LinkMessage::default();
        message.attributes = vec![LinkAttribute::IfName(name.to_string())];
        self.get_one_link(message)
    }

    fn get_link_by_index(&self, index: u32) -> io::Result<Option<LinkMessage>> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.get_one_link(message)
    }

    fn get_one_link(&self, request: LinkMessage) -> io::Result<Option<LinkMessage>> {
        match self
            .connection
            .request(RouteNetlinkMessage::GetLink(request), 0)
        {
            Ok(replies) => Ok(replies.into_iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })),
            Err(e) if errno_is(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 addresses on link `index`.
    fn ipv4_addresses(&self, index: u32) -> io::Result<Vec<Ipv4Net>> {
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Inet;
        let replies = self
            .connection
            .dump(RouteNetlinkMessage::GetAddress(request))?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(a)
                    if a.header.index == index && a.header.family == AddressFamily::Inet =>
                {
                    ipv4_address(a)
                }
                _ => None,
            })
            .collect())
    }
}
