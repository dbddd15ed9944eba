//! The connections of one active device, keyed by (local port, peer
//! port); host streams that connected to `PATH` and have not yet said
//! `CONNECT <port>`; and the packets waiting for the guest's RX buffers.
//!
//! Everything a host peer or the guest controls is bounded: pending
//! accepts ([`MAX_PENDING_ACCEPTS`], the oldest dropped when a new one
//! arrives), host connections the guest has not answered (as many; more
//! CONNECTs are refused), the CONNECT line (in `connect`), connections
//! ([`MAX_CONNECTIONS`]), RSTs waiting for RX buffers
//! ([`MAX_CONTROL_PACKETS`]).
//!
//! Closed streams are kept open until the next call into the muxer: the
//! event loop removes their watch after the current call returns, and an
//! fd closed before that could be reused and confuse it.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use log::{debug, warn};
use vmm_sys_util::epoll::EventSet;

use super::connect::{LineRead, PendingAccept};
use super::connection::{Connection, Outcome, State};
use super::packet::{op, Header, Packet, HOST_CID, TYPE_STREAM};
use super::uds::connect_nonblocking;
use crate::legacy::LogLimiter;
use crate::virtio::FdWatch;

/// Host streams accepted on `PATH` that have not sent their CONNECT line;
/// a new one beyond this drops the oldest.
pub const MAX_PENDING_ACCEPTS: usize = 16;
/// Most open connections; more are refused (RST / closed stream).
pub const MAX_CONNECTIONS: usize = 1024;
/// Most RSTs waiting for RX buffers; more are dropped (and logged).
pub const MAX_CONTROL_PACKETS: usize = 2048;
/// The first local port given to host-initiated connections.
pub const FIRST_HOST_PORT: u32 = 1 << 30;

type Key = (u32, u32);

/// The connections of an active device.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    conns: HashMap<Key, Connection>,
    by_fd: HashMap<RawFd, Key>,
    pending: VecDeque<PendingAccept>,
    /// RSTs for connections that are gone (or never were).
    control: VecDeque<Header>,
    /// Connections that may have packets for the guest, round-robin.
    rx_order: VecDeque<Key>,
    next_host_port: u32,
    closed: Vec<UnixStream>,
    max_connections: usize,
    /// Guest- or host-triggered limit hits, logged at powers of two.
    limit_hits: LogLimiter,
}

impl Muxer {
    /// No connections; guest-initiated ones go to `<uds_path>_<port>`.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Self {
        Muxer {
            guest_cid,
            uds_path,
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            pending: VecDeque::new(),
            control: VecDeque::new(),
            rx_order: VecDeque::new(),
            next_host_port: FIRST_HOST_PORT,
            closed: Vec::new(),
            max_connections: MAX_CONNECTIONS,
            limit_hits: LogLimiter::default(),
        }
    }

    /// Closes the streams closed during the previous call, whose watches
    /// are gone by now. Call first on every event.
    pub fn release_closed(&mut self) {
        self.closed.clear();
    }

    #[cfg(test)]
    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn close_stream(&mut self, stream: UnixStream, watched: bool, fds: &mut FdWatch) {
        if watched {
            fds.remove(stream.as_raw_fd());
        }
        let _ = stream.shutdown(Shutdown::Both);
        self.closed.push(stream);
    }

    fn push_control(&mut self, header: Header) {
        if self.control.len() >= MAX_CONTROL_PACKETS {
            if let Some(n) = self.limit_hits.hit() {
                warn!(
                    "virtio-vsock: RX backlog full, dropping an RST for port {} ({n} limit hits)",
                    header.dst_port
                );
            }
            return;
        }
        self.control.push_back(header);
    }

    /// Accepts host streams waiting on `listener`.
    pub fn accept(&mut self, listener: &UnixListener, fds: &mut FdWatch) {
        // Bounded so that a flood of connects cannot starve the guest.
        for _ in 0..MAX_PENDING_ACCEPTS {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("virtio-vsock: accept on {}: {e}", self.uds_path.display());
                    return;
                }
            };
            if let Err(e) = stream.set_nonblocking(true) {
                warn!("virtio-vsock: accepted stream: {e}");
                continue;
            }
            if self.pending.len() >= MAX_PENDING_ACCEPTS {
                if let Some(old) = self.pending.pop_front() {
                    debug!("virtio-vsock: dropping a host stream that never sent CONNECT");
                    self.close_stream(old.stream, true, fds);
                }
            }
            fds.add(stream.as_raw_fd(), EventSet::IN);
            self.pending.push_back(PendingAccept {
                stream,
                line: Vec::new(),
            });
        }
    }

    /// A watched host stream is ready.
    pub fn host_event(&mut self, fd: RawFd, events: EventSet, fds: &mut FdWatch) {
        if let Some(index) = self.pending.iter().position(|p| p.stream.as_raw_fd() == fd) {
            self.pending_readable(index, fds);
            return;
        }
        let Some(&key) = self.by_fd.get(&fd) else {
            debug!("virtio-vsock: event on unknown fd {fd}");
            return;
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let mut outcome = Outcome::Keep;
        if events.intersects(EventSet::OUT | EventSet::ERROR | EventSet::HANG_UP) {
            outcome = conn.on_writable();
        }
        if outcome == Outcome::Keep
            && events.intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP)
        {
            outcome = conn.on_readable();
        }
        self.after(key, outcome, fds);
    }

    fn pending_readable(&mut self, index: usize, fds: &mut FdWatch) {
        let port = match self.pending[index].read_line() {
            LineRead::Incomplete => return,
            LineRead::Port(port) => port,
            LineRead::Failed(why) => {
                debug!("virtio-vsock: host stream refused: {why}");
                if let Some(p) = self.pending.remove(index) {
                    self.close_stream(p.stream, true, fds);
                }
                return;
            }
        };
        let Some(p) = self.pending.remove(index) else {
            return;
        };
        let unanswered = self
            .conns
            .values()
            .filter(|c| c.state() == State::Requesting)
            .count();
        if unanswered >= MAX_PENDING_ACCEPTS {
            if let Some(n) = self.limit_hits.hit() {
                warn!("virtio-vsock: the guest has not answered {unanswered} connections, refusing CONNECT {port} ({n} limit hits)");
            }
            self.close_stream(p.stream, true, fds);
            return;
        }
        let Some(local_port) = self.allocate_host_port(port) else {
            if let Some(n) = self.limit_hits.hit() {
                warn!(
                    "virtio-vsock: too many connections, refusing CONNECT {port} ({n} limit hits)"
                );
            }
            self.close_stream(p.stream, true, fds);
            return;
        };
        let mut conn = Connection::host_initiated(p.stream, local_port, port, self.guest_cid);
        conn.watched = Some(EventSet::IN);
        self.insert((local_port, port), conn, fds);
    }

    fn allocate_host_port(&mut self, peer_port: u32) -> Option<u32> {
        if self.conns.len() >= self.max_connections {
            return None;
        }
        loop {
            let port = self.next_host_port;
            self.next_host_port = port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            if !self.conns.contains_key(&(port, peer_port)) {
                return Some(port);
            }
        }
    }

    fn insert(&mut self, key: Key, conn: Connection, fds: &mut FdWatch) {
        self.by_fd.insert(conn.stream.as_raw_fd(), key);
        self.conns.insert(key, conn);
        self.after(key, Outcome::Keep, fds);
    }

    /// Brings the watch of `key`'s stream up to date, closes it if it is
    /// done, and schedules its packets for the guest.
    fn after(&mut self, key: Key, outcome: Outcome, fds: &mut FdWatch) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let outcome = match outcome {
            Outcome::Keep if conn.is_finished() => Outcome::Reset,
            other => other,
        };
        if outcome != Outcome::Keep {
            self.remove(key, outcome == Outcome::Reset, fds);
            return;
        }
        let fd = conn.stream.as_raw_fd();
        let wanted = conn.wanted_events();
        match conn.watched {
            None if !wanted.is_empty() => fds.add(fd, wanted),
            Some(_) if wanted.is_empty() => fds.remove(fd),
            Some(old) if old != wanted => fds.modify(fd, wanted),
            _ => {}
        }
        conn.watched = (!wanted.is_empty()).then_some(wanted);
        if conn.has_rx() && !conn.in_rx_order {
            conn.in_rx_order = true;
            self.rx_order.push_back(key);
        }
    }

    fn remove(&mut self, key: Key, rst: bool, fds: &mut FdWatch) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        self.by_fd.remove(&conn.stream.as_raw_fd());
        if rst {
            self.push_control(Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: conn.local_port,
                dst_port: conn.peer_port,
                type_: TYPE_STREAM,
                op: op::RST,
                ..Header::default()
            });
        }
        let watched = conn.watched.is_some();
        self.close_stream(conn.stream, watched, fds);
    }

    /// The guest sent a packet the device does not support; `rst` is the
    /// reply. A connection on those ports is closed with it.
    pub fn refuse(&mut self, rst: Header, fds: &mut FdWatch) {
        let key = (rst.src_port, rst.dst_port);
        if self.conns.contains_key(&key) {
            self.remove(key, true, fds);
        } else {
            self.push_control(rst);
        }
    }

    /// A valid packet from the guest.
    pub fn guest_packet(&mut self, pkt: Packet, fds: &mut FdWatch) {
        let h = pkt.header;
        let key = (h.dst_port, h.src_port);
        if let Some(conn) = self.conns.get_mut(&key) {
            let outcome = if h.op == op::REQUEST && conn.state() == State::Established {
                // The guest reused the ports of a live connection: it has
                // lost track of it.
                Outcome::Reset
            } else {
                conn.on_guest_packet(&pkt)
            };
            self.after(key, outcome, fds);
            return;
        }
        match h.op {
            op::REQUEST => self.connect_to_host(&h, fds),
            op::RST => {}
            _ => self.push_control(h.rst_reply()),
        }
    }

    fn connect_to_host(&mut self, request: &Header, fds: &mut FdWatch) {
        if self.conns.len() >= self.max_connections {
            if let Some(n) = self.limit_hits.hit() {
                warn!(
                    "virtio-vsock: too many connections, refusing port {} ({n} limit hits)",
                    request.dst_port
                );
            }
            self.push_control(request.rst_reply());
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", request.dst_port));
        match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => {
                let conn = Connection::guest_initiated(stream, request, self.guest_cid);
                self.insert((request.dst_port, request.src_port), conn, fds);
            }
            Err(e) => {
                debug!(
                    "virtio-vsock: guest connect to {}: {e}",
                    Path::new(&path).display()
                );
                self.push_control(request.rst_reply());
            }
        }
    }

    /// Whether a packet waits for the guest (connections at the front of
    /// the round-robin with nothing to send are dropped from it first, so
    /// that no RX buffer is taken for nothing).
    pub fn has_rx(&mut self) -> bool {
        while let Some(key) = self.rx_order.front() {
            match self.conns.get_mut(key) {
                Some(conn) if conn.has_rx() => break,
                Some(conn) => conn.in_rx_order = false,
                None => {}
            }
            self.rx_order.pop_front();
        }
        !self.control.is_empty() || !self.rx_order.is_empty()
    }

    /// The next packet for the guest, payload at most `max_payload`.
    pub fn next_rx(&mut self, max_payload: usize, fds: &mut FdWatch) -> Option<Packet> {
        if let Some(header) = self.control.pop_front() {
            return Some(Packet {
                header,
                data: Vec::new(),
            });
        }
        // Each connection gets one try: with a tiny `max_payload` those
        // with only data to send have nothing that fits.
        for _ in 0..self.rx_order.len() {
            let Some(key) = self.rx_order.pop_front() else {
                break;
            };
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.in_rx_order = false;
            let pkt = conn.next_rx(max_payload);
            // Sending may have freed credit (resume reading) or finished
            // the connection; `after` re-queues it if it has more.
            self.after(key, Outcome::Keep, fds);
            if pkt.is_some() {
                return pkt;
            }
        }
        None
    }

    /// Closes everything (device reset); returns the streams, to be kept
    /// open until the watch removals in `fds` are applied.
    pub fn close_all(&mut self, fds: &mut FdWatch) -> Vec<UnixStream> {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove(key, false, fds);
        }
        while let Some(p) = self.pending.pop_front() {
            self.close_stream(p.stream, true, fds);
        }
        self.control.clear();
        self.rx_order.clear();
        std::mem::take(&mut self.closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_for_unknown_connections_get_an_rst_except_rsts() {
        let mut mux = Muxer::new(3, PathBuf::from("/nonexistent-mercury-vsock/v.sock"));
        let mut fds = FdWatch::default();
        let h = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 52,
            type_: TYPE_STREAM,
            op: op::RW,
            ..Header::default()
        };
        mux.guest_packet(
            Packet {
                header: Header { op: op::RST, ..h },
                data: vec![],
            },
            &mut fds,
        );
        assert!(!mux.has_rx());
        mux.guest_packet(
            Packet {
                header: h,
                data: vec![],
            },
            &mut fds,
        );
        // A REQUEST to a port nobody listens on is refused too.
        mux.guest_packet(
            Packet {
                header: Header {
                    op: op::REQUEST,
                    ..h
                },
                data: vec![],
            },
            &mut fds,
        );
        for _ in 0..2 {
            let rst = mux.next_rx(4096, &mut fds).unwrap();
            assert_eq!(
                (rst.header.op, rst.header.src_port, rst.header.dst_port),
                (op::RST, 52, 1000)
            );
        }
        assert!(mux.next_rx(4096, &mut fds).is_none());
        assert_eq!(mux.connections(), 0);
    }

    #[test]
    fn guest_connections_beyond_the_limit_get_an_rst() {
        let dir = std::env::temp_dir().join(format!("mercury-vsock-mux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("v.sock");
        let _listener = UnixListener::bind(dir.join("v.sock_80")).unwrap();
        let mut mux = Muxer::new(3, base);
        mux.max_connections = 2;
        let mut fds = FdWatch::default();
        for src_port in [1, 2, 3] {
            let h = Header {
                src_cid: 3,
                dst_cid: HOST_CID,
                src_port,
                dst_port: 80,
                type_: TYPE_STREAM,
                op: op::REQUEST,
                buf_alloc: 4096,
                ..Header::default()
            };
            mux.guest_packet(
                Packet {
                    header: h,
                    data: vec![],
                },
                &mut fds,
            );
        }
        assert_eq!(mux.connections(), 2);
        let mut replies = Vec::new();
        while let Some(p) = mux.next_rx(4096, &mut fds) {
            replies.push((p.header.op, p.header.dst_port));
        }
        replies.sort();
        assert_eq!(
            replies,
            [(op::RESPONSE, 1), (op::RESPONSE, 2), (op::RST, 3)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rsts_waiting_for_rx_buffers_are_bounded() {
        let mut mux = Muxer::new(3, PathBuf::from("/nonexistent-mercury-vsock/v.sock"));
        let mut fds = FdWatch::default();
        let h = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            type_: TYPE_STREAM,
            op: op::RW,
            ..Header::default()
        };
        for port in 0..(MAX_CONTROL_PACKETS as u32 + 100) {
            mux.guest_packet(
                Packet {
                    header: Header {
                        src_port: port,
                        ..h
                    },
                    data: vec![],
                },
                &mut fds,
            );
        }
        assert_eq!(mux.control.len(), MAX_CONTROL_PACKETS);
    }
}
