//! What a host networking call was doing when it failed, and why it failed.

use std::fmt;
use std::io;

use ipnet::Ipv4Net;

use super::{LinkKind, Result};

/// What was being done when a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Adding an IPv4 address to an interface.
    AddAddress {
        /// The interface.
        link: String,
        /// The address and prefix length.
        addr: Ipv4Net,
    },
    /// Making a new TAP a port of a bridge and setting it up.
    AttachTap {
        /// The TAP.
        tap: String,
        /// The bridge.
        bridge: String,
    },
    /// Creating a bridge.
    CreateBridge {
        /// The bridge.
        bridge: String,
    },
    /// Creating a persistent TAP.
    CreateTap {
        /// The TAP.
        tap: String,
    },
    /// Deleting an interface.
    DeleteLink {
        /// The interface.
        link: String,
    },
    /// Reading an interface's state.
    LookUp {
        /// The interface.
        link: String,
    },
    /// Removing an IPv4 address from an interface.
    RemoveAddress {
        /// The interface.
        link: String,
        /// The address and prefix length.
        addr: Ipv4Net,
    },
    /// Setting an interface up.
    SetUp {
        /// The interface.
        link: String,
    },
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::AddAddress { link, addr } => write!(f, "add address {addr} to {link}"),
            Operation::AttachTap { tap, bridge } => {
                write!(f, "attach TAP {tap} to bridge {bridge}")
            }
            Operation::CreateBridge { bridge } => write!(f, "create bridge {bridge}"),
            Operation::CreateTap { tap } => write!(f, "create TAP {tap}"),
            Operation::DeleteLink { link } => write!(f, "delete interface {link}"),
            Operation::LookUp { link } => write!(f, "look up interface {link}"),
            Operation::RemoveAddress { link, addr } => {
                write!(f, "remove address {addr} from {link}")
            }
            Operation::SetUp { link } => write!(f, "set {link} up"),
        }
    }
}

/// Why a host networking call failed. Each message names the interface
/// and the operation.
#[derive(Debug, thiserror::Error)]
pub enum HostNetError {
    /// The kernel refused an operation (or answered in a way that could
    /// not be read).
    #[error("cannot {operation}: {source}")]
    Failed {
        /// What was being done.
        operation: Operation,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// A name that cannot name an interface.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`HostNet::create_tap`](super::HostNet::create_tap) found an
    /// interface of that name (of any kind).
    #[error("cannot create TAP {tap}: the name is in use by an existing interface")]
    NameInUse {
        /// The TAP's name.
        tap: String,
    },
    /// [`HostNet::create_tap`](super::HostNet::create_tap) or
    /// [`HostNet::attach_to_bridge`](super::HostNet::attach_to_bridge) was given a
    /// bridge that does not exist.
    #[error("cannot attach TAP {tap} to bridge {bridge}: there is no interface named {bridge}")]
    NoBridge {
        /// The TAP's name.
        tap: String,
        /// The missing bridge's name.
        bridge: String,
    },
    /// The kernel lacks a driver the operation needs.
    #[error("cannot {operation}: this kernel has no {missing}: {source}")]
    NoKernelSupport {
        /// What was being done.
        operation: Operation,
        /// The driver, and how to get it.
        missing: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// An interface that should be a bridge is something else.
    #[error("cannot use {link} as a bridge: it exists and is a {kind} interface, not a bridge")]
    NotABridge {
        /// The interface's name.
        link: String,
        /// What it is.
        kind: LinkKind,
    },
    /// The kernel said `EPERM`/`EACCES`.
    #[error(
        "cannot {operation}: not permitted (host networking needs CAP_NET_ADMIN in this \
         network namespace: run mercury as root)"
    )]
    NotPermitted {
        /// What was being done.
        operation: Operation,
    },
    /// No netlink socket could be opened.
    #[error("cannot open a netlink socket: {source}")]
    Open {
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Maps the kernel's error for `operation`, telling a missing capability
/// apart.
pub(super) fn failed(operation: Operation) -> impl FnOnce(io::Error) -> HostNetError {
    move |source| match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => HostNetError::NotPermitted { operation },
        _ => HostNetError::Failed { operation, source },
    }
}

pub(super) fn errno_is(error: &io::Error, errno: i32) -> bool {
    error.raw_os_error() == Some(errno)
}

/// Checks `name` by the rule the VMM applies to TAP names (the kernel's
/// `dev_valid_name`, printable ASCII only), so a bad name is reported as
/// such and never reaches the kernel.
pub(super) fn check_name(name: &str) -> Result<()> {
    devices::virtio::net::check_tap_name(name).map_err(|e| HostNetError::InvalidName {
        name: name.to_string(),
        reason: match e {
            devices::virtio::net::NetError::TapName { reason, .. } => reason,
            _ => "not a valid interface name",
        },
    })
}
