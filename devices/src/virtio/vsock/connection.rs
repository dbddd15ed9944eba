//! One stream connection between a guest port and a host Unix stream: its
//! state machine, its credit accounting both ways and its two bounded
//! buffers.
//!
//! ```text
//!  host-initiated (CONNECT)          guest-initiated (REQUEST)
//!   Requesting ── REQUEST sent ──┐     connect(PATH_P) ok: RESPONSE queued
//!      │ guest RESPONSE          │             │
//!      │ (OK <port> to host)     │             ▼
//!      └──────────────────▶ Established ◀──────┘
//!   guest SHUTDOWN SEND: flush, then shutdown(Write) on the stream
//!   guest SHUTDOWN RCV:  stop reading, shutdown(Read) on the stream
//!   stream EOF:          drain what was read, then SHUTDOWN SEND to guest
//!   finished (no more data either way) or any error: RST, closed
//!   guest RST: closed, no reply
//! ```
//!
//! Credit: the guest may have at most `buf_alloc - (rx_cnt - fwd_cnt)`
//! bytes from us in flight (its `buf_alloc`/`fwd_cnt` from every packet
//! it sends); we read from the stream only what fits, so host→guest data
//! buffered here never exceeds the guest's credit. We advertise
//! [`BUF_ALLOC`]: guest data waiting for a slow stream never exceeds it,
//! and a guest that sends more is reset.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use vmm_sys_util::epoll::EventSet;

use super::packet::{op, Header, Packet, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::uds::send;

/// Bytes of guest data the device buffers per connection while the host
/// stream is slow: the `buf_alloc` it advertises.
pub const BUF_ALLOC: u32 = 256 << 10;
/// Most host→guest bytes read ahead of the guest's RX buffers, per
/// connection (the guest's credit may be smaller).
pub const MAX_READ_AHEAD: usize = 64 << 10;
/// Send a CREDIT_UPDATE once this many bytes were freed since the guest
/// last heard our `fwd_cnt`.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: waiting for the guest's RESPONSE.
    Requesting,
    /// Data may flow, subject to shutdowns.
    Established,
}

/// What the caller must do after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing special.
    Keep,
    /// Close the connection and send the guest an RST.
    Reset,
    /// The guest reset the connection: close it, no reply.
    Closed,
}

/// One connection. Ports are as the device sees them: `local_port` on the
/// host (CID 2), `peer_port` in the guest.
pub struct Connection {
    pub(crate) stream: UnixStream,
    pub(crate) local_port: u32,
    pub(crate) peer_port: u32,
    guest_cid: u64,
    state: State,
    // The guest's receive credit.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    // Our receive credit.
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    /// Read from the stream, not yet sent to the guest.
    to_guest: VecDeque<u8>,
    /// From the guest (after `to_host_prefix` bytes of our own: the OK
    /// line), not yet written to the stream.
    to_host: VecDeque<u8>,
    to_host_prefix: usize,
    send_request: bool,
    send_response: bool,
    send_credit_update: bool,
    /// SHUTDOWN flags the guest sent, accumulated.
    guest_shutdown: u32,
    host_eof: bool,
    shutdown_sent: bool,
    stream_write_shut: bool,
    /// What the muxer registered for `stream` (`None`: not watched).
    pub(crate) watched: Option<EventSet>,
    pub(crate) in_rx_order: bool,
}

impl Connection {
    fn new(stream: UnixStream, local_port: u32, peer_port: u32, guest_cid: u64) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            guest_cid,
            state: State::Requesting,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            to_guest: VecDeque::new(),
            to_host: VecDeque::new(),
            to_host_prefix: 0,
            send_request: false,
            send_response: false,
            send_credit_update: false,
            guest_shutdown: 0,
            host_eof: false,
            shutdown_sent: false,
            stream_write_shut: false,
            watched: None,
            in_rx_order: false,
        }
    }

    /// A host peer asked (CONNECT) for guest port `peer_port`: a REQUEST
    /// goes to the guest.
    pub fn host_initiated(stream: UnixStream, local_port: u32, peer_port: u32, cid: u64) -> Self {
        let mut conn = Connection::new(stream, local_port, peer_port, cid);
        conn.send_request = true;
        conn
    }

    /// The guest's `request` was connected to a host listener: a RESPONSE
    /// goes to the guest.
    pub fn guest_initiated(stream: UnixStream, request: &Header, cid: u64) -> Self {
        let mut conn = Connection::new(stream, request.dst_port, request.src_port, cid);
        conn.state = State::Established;
        conn.send_response = true;
        conn.update_peer_credit(request);
        conn
    }

    /// Where the connection is.
    pub fn state(&self) -> State {
        self.state
    }

    fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
    }

    /// Bytes the guest can still take from us.
    fn peer_free(&self) -> usize {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight) as usize
    }

    /// Bytes we may still read from the stream for the guest.
    fn read_budget(&self) -> usize {
        let limit = self.peer_free().min(MAX_READ_AHEAD);
        limit.saturating_sub(self.to_guest.len())
    }

    fn guest_bytes_buffered(&self) -> usize {
        self.to_host.len() - self.to_host_prefix
    }

    /// A packet from the guest for this connection.
    pub fn on_guest_packet(&mut self, pkt: &Packet) -> Outcome {
        let h = &pkt.header;
        self.update_peer_credit(h);
        match (self.state, h.op) {
            (_, op::RST) => return Outcome::Closed,
            (State::Requesting, op::RESPONSE) => {
                self.state = State::Established;
                let line = format!("OK {}\n", self.local_port);
                self.to_host_prefix = line.len();
                self.to_host.extend(line.as_bytes());
                return self.flush();
            }
            (State::Requesting, _) => return Outcome::Reset,
            (State::Established, op::RW) => {
                if self.guest_shutdown & SHUTDOWN_SEND != 0
                    || self.guest_bytes_buffered() + pkt.data.len() > BUF_ALLOC as usize
                {
                    return Outcome::Reset;
                }
                self.to_host.extend(&pkt.data);
                return self.flush();
            }
            (State::Established, op::CREDIT_REQUEST) => self.send_credit_update = true,
            (State::Established, op::SHUTDOWN) => {
                self.guest_shutdown |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                if self.guest_shutdown & SHUTDOWN_RCV != 0 {
                    let _ = self.stream.shutdown(Shutdown::Read);
                    self.to_guest.clear();
                }
                return self.flush();
            }
            // CREDIT_UPDATE (already taken), or a RESPONSE/REQUEST that
            // makes no sense on an open connection.
            (State::Established, op::CREDIT_UPDATE) => {}
            (State::Established, _) => return Outcome::Reset,
        }
        Outcome::Keep
    }

    /// Writes what is buffered for the host; shuts the stream's write side
    /// once the guest will send no more.
    fn flush(&mut self) -> Outcome {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match send(&self.stream, front) {
                Ok(0) => return Outcome::Reset,
                Ok(n) => {
                    self.to_host.drain(..n);
                    let ours = n.min(self.to_host_prefix);
                    self.to_host_prefix -= ours;
                    self.fwd_cnt += (n - ours) as u32;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Outcome::Reset,
            }
        }
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.send_credit_update = true;
        }
        if self.to_host.is_empty()
            && self.guest_shutdown & SHUTDOWN_SEND != 0
            && !self.stream_write_shut
        {
            self.stream_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Outcome::Keep
    }

    /// The stream is readable (or hung up, or failed).
    pub fn on_readable(&mut self) -> Outcome {
        let mut chunk = [0u8; 4096];
        loop {
            let budget = self.read_budget();
            if budget == 0 || !self.wants_read() {
                return Outcome::Keep;
            }
            let n = budget.min(chunk.len());
            match self.stream.read(&mut chunk[..n]) {
                Ok(0) => {
                    self.host_eof = true;
                    return Outcome::Keep;
                }
                Ok(n) => self.to_guest.extend(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Outcome::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Outcome::Reset,
            }
        }
    }

    /// The stream is writable again.
    pub fn on_writable(&mut self) -> Outcome {
        self.flush()
    }

    fn wants_read(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && self.guest_shutdown & SHUTDOWN_RCV == 0
    }

    /// Readiness to watch the stream for: readable while the guest has
    /// credit for more, writable while guest data waits.
    pub fn wanted_events(&self) -> EventSet {
        let mut events = EventSet::empty();
        if self.wants_read() && self.read_budget() > 0 {
            events |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            events |= EventSet::OUT;
        }
        events
    }

    /// No data will flow either way any more: the connection should be
    /// reset (the spec's clean close ends with an RST).
    pub fn is_finished(&self) -> bool {
        let guest_done = self.guest_shutdown & SHUTDOWN_SEND != 0 && self.to_host.is_empty();
        let host_done = self.guest_shutdown & SHUTDOWN_RCV != 0 || self.shutdown_sent;
        self.state == State::Established && guest_done && host_done
    }

    fn sendable_data(&self) -> usize {
        if self.state != State::Established {
            return 0;
        }
        self.to_guest.len().min(self.peer_free())
    }

    fn shutdown_due(&self) -> bool {
        self.host_eof
            && self.to_guest.is_empty()
            && !self.shutdown_sent
            && self.state == State::Established
    }

    /// Whether there is a packet for the guest.
    pub fn has_rx(&self) -> bool {
        self.send_request
            || self.send_response
            || self.send_credit_update
            || self.sendable_data() > 0
            || self.shutdown_due()
    }

    fn header(&mut self, op: u16) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The next packet for the guest, with at most `max_payload` bytes.
    pub fn next_rx(&mut self, max_payload: usize) -> Option<Packet> {
        let control = |this: &mut Self, op| {
            Some(Packet {
                header: this.header(op),
                data: Vec::new(),
            })
        };
        if self.send_request {
            self.send_request = false;
            return control(self, op::REQUEST);
        }
        if self.send_response {
            self.send_response = false;
            return control(self, op::RESPONSE);
        }
        let n = self.sendable_data().min(max_payload);
        if n > 0 {
            let data: Vec<u8> = self.to_guest.drain(..n).collect();
            self.rx_cnt += n as u32;
            self.send_credit_update = false;
            let mut header = self.header(op::RW);
            header.len = n as u32;
            return Some(Packet { header, data });
        }
        if self.shutdown_due() {
            self.shutdown_sent = true;
            let mut pkt = control(self, op::SHUTDOWN)?;
            pkt.header.flags = SHUTDOWN_SEND;
            return Some(pkt);
        }
        if self.send_credit_update {
            self.send_credit_update = false;
            return control(self, op::CREDIT_UPDATE);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const CID: u64 = 3;

    fn guest(op: u16, buf_alloc: u32, fwd_cnt: u32, data: &[u8]) -> Packet {
        Packet {
            header: Header {
                src_cid: CID,
                dst_cid: HOST_CID,
                src_port: 1000,
                dst_port: 52,
                len: data.len() as u32,
                type_: TYPE_STREAM,
                op,
                flags: 0,
                buf_alloc,
                fwd_cnt,
            },
            data: data.to_vec(),
        }
    }

    fn shutdown(flags: u32) -> Packet {
        let mut p = guest(op::SHUTDOWN, 4096, 0, b"");
        p.header.flags = flags;
        p
    }

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn established(buf_alloc: u32) -> (Connection, UnixStream) {
        let (dev, host) = pair();
        let req = guest(op::REQUEST, buf_alloc, 0, b"");
        let mut conn = Connection::guest_initiated(dev, &req.header, CID);
        let resp = conn.next_rx(4096).unwrap();
        assert_eq!(resp.header.op, op::RESPONSE);
        assert_eq!((resp.header.src_port, resp.header.dst_port), (52, 1000));
        (conn, host)
    }

    fn read_all(s: &mut UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    #[test]
    fn host_initiated_requests_then_says_ok_on_response() {
        let (dev, mut host) = pair();
        let mut conn = Connection::host_initiated(dev, 1 << 30, 52, CID);
        assert_eq!(conn.wanted_events(), EventSet::empty());
        let req = conn.next_rx(4096).unwrap();
        assert_eq!(req.header.op, op::REQUEST);
        assert_eq!((req.header.src_port, req.header.dst_port), (1 << 30, 52));
        assert!(!conn.has_rx());
        let mut resp = guest(op::RESPONSE, 4096, 0, b"");
        resp.header.dst_port = 1 << 30;
        resp.header.src_port = 52;
        assert_eq!(conn.on_guest_packet(&resp), Outcome::Keep);
        assert_eq!(conn.state(), State::Established);
        assert_eq!(read_all(&mut host), b"OK 1073741824\n");
        // The OK line is not guest data: no credit was consumed.
        assert_eq!(conn.fwd_cnt.0, 0);
        assert_eq!(conn.wanted_events(), EventSet::IN);
    }

    #[test]
    fn data_before_the_response_resets() {
        let (dev, _host) = pair();
        let mut conn = Connection::host_initiated(dev, 1 << 30, 52, CID);
        assert_eq!(
            conn.on_guest_packet(&guest(op::RW, 4096, 0, b"x")),
            Outcome::Reset
        );
        assert_eq!(
            conn.on_guest_packet(&guest(op::RST, 0, 0, b"")),
            Outcome::Closed
        );
    }

    #[test]
    fn guest_data_is_forwarded_and_counted() {
        let (mut conn, mut host) = established(4096);
        assert_eq!(
            conn.on_guest_packet(&guest(op::RW, 4096, 0, b"hello")),
            Outcome::Keep
        );
        assert_eq!(read_all(&mut host), b"hello");
        assert_eq!(conn.fwd_cnt.0, 5);
        // A credit request is answered with our fwd_cnt.
        conn.on_guest_packet(&guest(op::CREDIT_REQUEST, 4096, 0, b""));
        let upd = conn.next_rx(4096).unwrap();
        assert_eq!(upd.header.op, op::CREDIT_UPDATE);
        assert_eq!((upd.header.buf_alloc, upd.header.fwd_cnt), (BUF_ALLOC, 5));
    }

    #[test]
    fn host_reads_stop_at_the_guest_credit_and_resume_on_update() {
        let (mut conn, mut host) = established(10);
        host.write_all(&[7u8; 100]).unwrap();
        conn.on_readable();
        assert_eq!(conn.to_guest.len(), 10);
        assert_eq!(conn.wanted_events(), EventSet::empty());
        let pkt = conn.next_rx(4).unwrap();
        assert_eq!(pkt.data.len(), 4);
        let pkt = conn.next_rx(4096).unwrap();
        assert_eq!((pkt.header.op, pkt.data.len()), (op::RW, 6));
        assert!(!conn.has_rx(), "sent beyond the guest's credit");
        // The guest consumed 10 bytes: 10 more fit.
        conn.on_guest_packet(&guest(op::CREDIT_UPDATE, 10, 10, b""));
        assert_eq!(conn.wanted_events(), EventSet::IN);
        conn.on_readable();
        assert_eq!(conn.next_rx(4096).unwrap().data.len(), 10);
        // A guest that shrinks its buffer gets nothing until it has room.
        conn.on_guest_packet(&guest(op::CREDIT_UPDATE, 5, 10, b""));
        assert_eq!(conn.peer_free(), 0);
        assert_eq!(conn.wanted_events(), EventSet::empty());
    }

    #[test]
    fn a_guest_overrunning_our_credit_is_reset() {
        let (dev, host) = pair();
        let req = guest(op::REQUEST, 4096, 0, b"");
        let mut conn = Connection::guest_initiated(dev, &req.header, CID);
        // Fill the host's socket buffer so nothing more is written.
        let big = vec![0u8; 64 << 10];
        let mut sent = 0usize;
        while conn.to_host.is_empty() {
            assert_eq!(
                conn.on_guest_packet(&guest(op::RW, 4096, 0, &big)),
                Outcome::Keep
            );
            sent += big.len();
            assert!(sent < 64 << 20, "the stream never filled");
        }
        assert!(conn.wanted_events().contains(EventSet::OUT));
        let mut outcome = Outcome::Keep;
        for _ in 0..=(BUF_ALLOC as usize / big.len()) {
            outcome = conn.on_guest_packet(&guest(op::RW, 4096, 0, &big));
            if outcome != Outcome::Keep {
                break;
            }
        }
        assert_eq!(outcome, Outcome::Reset);
        assert!(conn.guest_bytes_buffered() <= BUF_ALLOC as usize);
        drop(host);
    }

    #[test]
    fn freed_credit_is_announced() {
        let (mut conn, mut host) = established(4096);
        let chunk = vec![1u8; 16 << 10];
        for _ in 0..4 {
            conn.on_guest_packet(&guest(op::RW, 4096, 0, &chunk));
            read_all(&mut host);
        }
        conn.on_writable();
        let upd = conn.next_rx(4096).unwrap();
        assert_eq!(upd.header.op, op::CREDIT_UPDATE);
        assert_eq!(upd.header.fwd_cnt, 64 << 10);
        assert!(!conn.has_rx());
    }

    #[test]
    fn shutdowns_half_close_and_both_finish() {
        let (mut conn, mut host) = established(4096);
        // Guest: no more sending -> the host reads EOF.
        conn.on_guest_packet(&guest(op::RW, 4096, 0, b"bye"));
        conn.on_guest_packet(&shutdown(SHUTDOWN_SEND));
        assert_eq!(read_all(&mut host), b"bye");
        assert!(!conn.is_finished());
        // Data after SHUTDOWN SEND is a protocol error.
        let (mut other, _h) = established(4096);
        other.on_guest_packet(&shutdown(SHUTDOWN_SEND));
        assert_eq!(
            other.on_guest_packet(&guest(op::RW, 4096, 0, b"x")),
            Outcome::Reset
        );
        // The host can still send; its EOF becomes SHUTDOWN SEND.
        host.write_all(b"last").unwrap();
        host.shutdown(Shutdown::Write).unwrap();
        conn.on_readable();
        assert_eq!(conn.next_rx(4096).unwrap().data, b"last");
        let shut = conn.next_rx(4096).unwrap();
        assert_eq!(
            (shut.header.op, shut.header.flags),
            (op::SHUTDOWN, SHUTDOWN_SEND)
        );
        assert!(conn.is_finished());
    }

    #[test]
    fn guest_full_shutdown_finishes_at_once_and_closes_the_stream() {
        let (mut conn, mut host) = established(4096);
        conn.on_guest_packet(&shutdown(SHUTDOWN_RCV | SHUTDOWN_SEND));
        assert!(conn.is_finished());
        assert_eq!(conn.wanted_events(), EventSet::empty());
        assert_eq!(read_all(&mut host), b"");
        // Reading is shut too: the host cannot write any more.
        assert!(host.write_all(b"x").is_err());
    }

    #[test]
    fn a_host_that_went_away_resets_on_write() {
        let (mut conn, host) = established(4096);
        drop(host);
        assert_eq!(
            conn.on_guest_packet(&guest(op::RW, 4096, 0, b"x")),
            Outcome::Reset
        );
    }
}
