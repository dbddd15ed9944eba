//! virtio-vsock (virtio 1.2, 5.10) with the host side on Unix sockets,
//! in the convention Firecracker users know.
//!
//! The VMM listens on a Unix socket `PATH` ([`VsockConfig::uds_path`]):
//!
//! - **Host → guest.** A host program connects to `PATH` and writes
//!   `CONNECT <port>\n`. The device sends the guest a REQUEST for guest
//!   port `<port>`; on the guest's RESPONSE it writes `OK <host_port>\n` on
//!   the stream (`host_port` is the device's local port for the
//!   connection, allocated from 2^30 upward), and bytes then flow both
//!   ways. If the guest refuses (RST), the stream is closed without an OK.
//!   A line that is not `CONNECT <decimal u32>` within 32 bytes closes the
//!   stream; so does staying silent while 16 newer streams arrive.
//! - **Guest → host.** A guest connection to host (CID 2) port `P`
//!   connects to the Unix socket `PATH_P` (e.g. `/run/vm.sock_52`). If
//!   nothing listens there (or its backlog is full) the guest gets RST.
//!
//! Stream sockets only (`VIRTIO_VSOCK_TYPE_STREAM`); other types and
//! unknown operations get RST, as do packets for connections that do not
//! exist. Flow control is the spec's credit scheme both ways: the device
//! advertises 256 KiB per connection and resets a guest that sends more;
//! it reads from a host stream only as much as the guest's credit allows
//! (at most 64 KiB ahead), and stops watching the stream until a
//! CREDIT_UPDATE (or any packet carrying a larger `fwd_cnt`) makes room.
//! SHUTDOWN from the guest half-closes the Unix stream (SEND: write side
//! after the buffered data; RCV: read side); EOF on the stream becomes
//! SHUTDOWN SEND to the guest; when neither direction can carry data any
//! more the device sends RST and closes the stream.
//!
//! RX: packets go out only into RX buffers the guest provided; the rest
//! wait (bounded: per-connection buffers within credit, at most 2048
//! RSTs) for the next RX notification. The event queue is taken but
//! never used: the only event, TRANSPORT_RESET, matters after a snapshot
//! restore, which mercury does not do, and cannot be sent on reset (the
//! queues are gone).
//!
//! Files: [`packet`] (header, parsing — the fuzz entry point), `device`
//! (config, features, queues), `muxer` (connections, listener, accepts), `connect` (the CONNECT
//! line),
//! `connection` (state machine and credit), `uds` (binding `PATH`,
//! connecting to `PATH_P`).

mod connect;
mod connection;
mod device;
mod muxer;
pub mod packet;
#[cfg(test)]
mod test_harness;
#[cfg(test)]
mod tests;
mod uds;

use std::path::PathBuf;

pub use connect::{parse_connect_line, ConnectLineError};
pub use device::{
    check_guest_cid, Vsock, EVENT_QUEUE, MAX_GUEST_CID, MIN_GUEST_CID, QUEUE_SIZE, RX_QUEUE,
    TX_QUEUE,
};

/// What the VMM configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context id: 3 ..= u32::MAX - 1 (0-2 and u32::MAX are
    /// reserved).
    pub guest_cid: u64,
    /// `PATH`: the Unix socket host programs connect to; guest connections
    /// to host port P go to `PATH_P`.
    pub uds_path: PathBuf,
}

/// Why the device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// Binding the socket failed.
    #[error("cannot listen on vsock socket {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something already listens on the path.
    #[error("vsock socket {} is in use by a listening process", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path's directory does not exist.
    #[error("the directory of vsock socket {} does not exist", path.display())]
    NoDirectory {
        /// The socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket (it is not replaced).
    #[error("vsock socket path {} exists and is not a socket", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// The guest CID is reserved.
    #[error("guest CID {0} is reserved (valid: 3 to 4294967294)")]
    ReservedCid(u64),
}
