//! One rtnetlink socket and the request/reply exchange over it: send a
//! request, collect the kernel's answers to that request (matched by
//! sequence number) until its acknowledgement or the end of a dump, and
//! turn a negative acknowledgement into the errno it carries.
//!
//! The messages are built and parsed by `netlink-packet-route`; the socket
//! is `netlink-sys`'s plain blocking one. Nothing here knows about bridges
//! or TAPs: the requests themselves are built in `super`.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Largest datagram read at once. The kernel sizes dump datagrams to the
/// reader's buffer up to 32 KiB; a single link's answer is a few KiB.
const RECV_BUFFER: usize = 64 * 1024;

/// How often a dump the kernel marks as interrupted (the table changed
/// while it was being read) is started again before giving up.
const DUMP_ATTEMPTS: usize = 3;

/// How long to wait for the kernel's next reply before giving up, so a
/// lost reply (the socket's buffer overran) is an error, not a hang.
const REPLY_TIMEOUT_SECS: u16 = 30;

/// The 16-byte `nlmsghdr`.
const HEADER_LEN: usize = 16;

/// An rtnetlink socket bound in the network namespace of the thread that
/// opened it (a netlink socket keeps the namespace it was created in).
pub(super) struct Connection {
    socket: Socket,
    sequence: Cell<u32>,
}

fn invalid(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

impl Connection {
    pub(super) fn open() -> io::Result<Connection> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        // Negative acknowledgements carry the request's header only, not
        // the whole request back.
        socket.set_cap_ack(true)?;
        let timeout = libc::timeval {
            tv_sec: REPLY_TIMEOUT_SECS.into(),
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO reads one `timeval`, which `timeout` is and
        // which outlives the call.
        let ret = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Connection {
            socket,
            sequence: Cell::new(0),
        })
    }

    /// Sends `message` with `NLM_F_REQUEST | NLM_F_ACK | flags` and returns
    /// the messages the kernel answered with before acknowledging it.
    pub(super) fn request(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(message, NLM_F_ACK | flags)
            .map(|(replies, _)| replies)
    }

    /// Sends `message` as a dump request and returns every message of the
    /// dump, restarting it when the kernel says it was interrupted.
    pub(super) fn dump(
        &self,
        message: RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_ATTEMPTS {
            let (replies, interrupted) = self.exchange(message.clone(), NLM_F_DUMP)?;
            if !interrupted {
                return Ok(replies);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("the kernel interrupted the dump {DUMP_ATTEMPTS} times"),
        ))
    }

    fn next_sequence(&self) -> u32 {
        let sequence = self.sequence.get().wrapping_add(1);
        self.sequence.set(sequence);
        sequence
    }

    /// One request and its answers; also whether any answer was flagged
    /// `NLM_F_DUMP_INTR`.
    fn exchange(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
        let sequence = self.next_sequence();
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        let mut interrupted = false;
        let mut datagram = Vec::with_capacity(RECV_BUFFER);
        loop {
            datagram.clear();
            let len = self
                .socket
                .recv(&mut datagram, libc::MSG_TRUNC)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::WouldBlock => io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no reply from the kernel in {REPLY_TIMEOUT_SECS} s"),
                    ),
                    _ => e,
                })?;
            if len > datagram.len() {
                return Err(invalid(format!(
                    "a netlink reply of {len} bytes does not fit in {RECV_BUFFER}"
                )));
            }
            let mut rest = &datagram[..];
            while rest.len() >= HEADER_LEN {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| invalid(format!("cannot parse a netlink reply: {e}")))?;
                let reply_len = reply.header.length as usize;
                if reply_len < HEADER_LEN {
                    return Err(invalid(format!(
                        "a netlink reply claims a length of {reply_len} bytes"
                    )));
                }
                // Messages in a datagram start on 4-byte boundaries.
                rest = rest.get(reply_len.next_multiple_of(4)..).unwrap_or(&[]);
                if reply.header.sequence_number != sequence {
                    // The tail of an earlier request that failed midway.
                    continue;
                }
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok((replies, interrupted)),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(done) if dump => {
                        return match done.code {
                            0 => Ok((replies, interrupted)),
                            code => Err(io::Error::from_raw_os_error(-code)),
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}
