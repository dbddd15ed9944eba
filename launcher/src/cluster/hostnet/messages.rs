//! Building rtnetlink requests and reading the kernel's link and address
//! messages into [`LinkInfo`](super::LinkInfo) terms.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use netlink_packet_core::Nla;
use netlink_packet_route::address::{
    AddressAttribute, AddressHeader, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoTun, LinkAttribute, LinkInfo as KernelLinkInfo, LinkMessage,
};
use netlink_packet_route::AddressFamily;

use super::{LinkKind, TunInfo};

/// An address request for `addr` on link `index`, as `ip address` sends
/// one (`IFA_LOCAL` and `IFA_ADDRESS` both the address).
pub(super) fn address_message(index: u32, addr: Ipv4Net) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header = AddressHeader {
        family: AddressFamily::Inet,
        prefix_len: addr.prefix_len(),
        scope: AddressScope::Universe,
        index,
        ..AddressHeader::default()
    };
    message.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(addr.addr())),
        AddressAttribute::Address(IpAddr::V4(addr.addr())),
    ];
    message
}

/// The interface's own address (`IFA_LOCAL`; `IFA_ADDRESS` is the peer's
/// on point-to-point links) with its prefix length.
pub(super) fn ipv4_address(message: &AddressMessage) -> Option<Ipv4Net> {
    let v4 = |attribute: &AddressAttribute| match attribute {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some((0, *ip)),
        AddressAttribute::Address(IpAddr::V4(ip)) => Some((1, *ip)),
        _ => None,
    };
    let ip: Ipv4Addr = message.attributes.iter().filter_map(v4).min()?.1;
    Ipv4Net::new(ip, message.header.prefix_len).ok()
}

pub(super) fn if_name(message: &LinkMessage) -> Option<String> {
    message.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

pub(super) fn controller(message: &LinkMessage) -> Option<u32> {
    message.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

pub(super) fn link_kind(message: &LinkMessage) -> LinkKind {
    let infos = message.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    });
    let Some(infos) = infos else {
        return LinkKind::Other(String::new());
    };
    let kind = infos.iter().find_map(|info| match info {
        KernelLinkInfo::Kind(kind) => Some(kind),
        _ => None,
    });
    match kind {
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(InfoKind::Tun) => LinkKind::Tun(tun_info(infos)),
        Some(other) => LinkKind::Other(other.to_string()),
        None => LinkKind::Other(String::new()),
    }
}

/// `IFLA_TUN_*` attribute types (linux/if_link.h), each a `u8` flag.
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_VNET_HDR: u16 = 5;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_MULTI_QUEUE: u16 = 7;

/// The TUN/TAP details of a `tun` link's `IFLA_INFO_DATA`, which
/// `netlink-packet-route` hands over unparsed.
fn tun_info(infos: &[KernelLinkInfo]) -> TunInfo {
    let mut info = TunInfo::default();
    let data = infos.iter().find_map(|i| match i {
        KernelLinkInfo::Data(InfoData::Tun(data)) => Some(data),
        _ => None,
    });
    for attribute in data.into_iter().flatten() {
        let InfoTun::Other(nla) = attribute else {
            continue;
        };
        let mut value = vec![0; nla.value_len()];
        nla.emit_value(&mut value);
        let Some(&byte) = value.first() else {
            continue;
        };
        match nla.kind() {
            IFLA_TUN_TYPE => info.tap = i32::from(byte) == libc::IFF_TAP,
            IFLA_TUN_VNET_HDR => info.vnet_hdr = byte != 0,
            IFLA_TUN_PERSIST => info.persistent = byte != 0,
            IFLA_TUN_MULTI_QUEUE => info.multi_queue = byte != 0,
            _ => {}
        }
    }
    info
}
