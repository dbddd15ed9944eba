//! The device end to end, through [`super::test_harness`]: host peers on
//! real Unix sockets, the guest on mock queues.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use vmm_sys_util::epoll::EventSet;

use super::packet::{op, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::test_harness::*;
use super::*;
use crate::virtio::{FdChange, FdWatch, VirtioDevice};

/// Host connects with CONNECT 52: REQUEST, RESPONSE, OK; returns the
/// stream and the device's local port.
fn host_initiated(h: &mut Harness) -> (UnixStream, u32) {
    let host = h.host_connect(52);
    h.give_rx(8);
    let pkts = h.recv_until("the REQUEST", |p| p.header.op == op::REQUEST);
    let req = pkts
        .iter()
        .find(|p| p.header.op == op::REQUEST)
        .unwrap()
        .header;
    assert_eq!(req.dst_port, 52);
    assert!(req.src_port >= 1 << 30);
    let resp = h.header(op::RESPONSE, 52, req.src_port);
    h.send(resp, b"");
    (host, req.src_port)
}

#[test]
fn host_to_guest_connect_ok_data_both_ways_and_shutdown() {
    let mut h = Harness::new();
    let (mut host, port) = host_initiated(&mut h);
    let mut host_r = host.try_clone().unwrap();
    assert_eq!(read_line(&mut host_r), format!("OK {port}"));

    // Host → guest.
    host.write_all(b"ping").unwrap();
    let pkts = h.recv_until("host data", |p| p.header.op == op::RW);
    assert_eq!(data_of(&pkts), b"ping");
    assert_eq!(
        (pkts[0].header.src_port, pkts[0].header.dst_port),
        (port, 52)
    );

    // Guest → host.
    h.send(h.header(op::RW, 52, port), b"pong");
    let mut buf = [0u8; 4];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");

    // Guest half-closes its sending side: the host reads EOF, and can
    // still send.
    let mut shut = h.header(op::SHUTDOWN, 52, port);
    shut.flags = SHUTDOWN_SEND;
    h.send(shut, b"");
    assert_eq!(host.read(&mut buf).unwrap(), 0);
    host.write_all(b"more").unwrap();
    let pkts = h.recv_until("data after half-close", |p| p.header.op == op::RW);
    assert_eq!(data_of(&pkts), b"more");

    // The host closes: SHUTDOWN SEND, then RST as nothing can flow.
    drop(host);
    drop(host_r);
    let pkts = h.recv_until("the RST", |p| p.header.op == op::RST);
    let ops: Vec<u16> = pkts.iter().map(|p| p.header.op).collect();
    assert_eq!(ops, [op::SHUTDOWN, op::RST]);
    assert_eq!(pkts[0].header.flags, SHUTDOWN_SEND);
    // The connection is gone: more data gets an RST.
    h.send(h.header(op::RW, 52, port), b"late");
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].header.op, op::RST);
}

#[test]
fn guest_refusing_a_host_connection_closes_the_stream() {
    let mut h = Harness::new();
    let mut host = h.host_connect(99);
    h.give_rx(4);
    let pkts = h.recv_until("the REQUEST", |p| p.header.op == op::REQUEST);
    let req = pkts[0].header;
    h.send(h.header(op::RST, 99, req.src_port), b"");
    h.pump(0);
    let mut buf = [0u8; 8];
    assert_eq!(host.read(&mut buf).unwrap(), 0, "no OK after an RST");
}

#[test]
fn guest_closing_fully_gets_an_rst_and_the_host_eof() {
    let mut h = Harness::new();
    let (mut host, port) = host_initiated(&mut h);
    assert_eq!(read_line(&mut host), format!("OK {port}"));
    let mut shut = h.header(op::SHUTDOWN, 52, port);
    shut.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    h.send(shut, b"");
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].header.op, op::RST);
    assert_eq!(host.read(&mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn guest_to_host_connect_reaches_a_real_listener() {
    let mut h = Harness::new();
    let mut path = h.path.clone().into_os_string();
    path.push("_5000");
    let listener = UnixListener::bind(&path).unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
    });
    h.give_rx(8);
    h.send(h.header(op::REQUEST, 1234, 5000), b"");
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].header.op, op::RESPONSE);
    assert_eq!(
        (pkts[0].header.src_port, pkts[0].header.dst_port),
        (5000, 1234)
    );

    h.send(h.header(op::RW, 1234, 5000), b"echo me");
    let mut got = Vec::new();
    h.pump_until("the echo", |h| {
        got.extend(data_of(&h.recv()));
        got.len() >= 7
    });
    assert_eq!(got, b"echo me");

    // A clean close: SHUTDOWN both ways → RST; the echo thread sees EOF.
    let mut shut = h.header(op::SHUTDOWN, 1234, 5000);
    shut.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    h.send(shut, b"");
    let pkts = h.recv();
    assert_eq!(pkts.last().map(|p| p.header.op), Some(op::RST));
    h.pump(0);
    echo.join().unwrap();
}

#[test]
fn guest_connect_with_nothing_listening_gets_rst() {
    let mut h = Harness::new();
    h.give_rx(4);
    h.send(h.header(op::REQUEST, 1234, 6000), b"");
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].header.op, op::RST);
    assert_eq!(
        (pkts[0].header.src_port, pkts[0].header.dst_port),
        (6000, 1234)
    );
}

#[test]
fn host_data_beyond_the_guest_credit_waits_for_a_credit_update() {
    let mut h = Harness::new();
    h.guest_buf_alloc = 8192;
    let (mut host, port) = host_initiated(&mut h);
    assert_eq!(read_line(&mut host), format!("OK {port}"));
    host.set_nonblocking(true).unwrap();
    // The host writes far more than the guest's 8 KiB of credit.
    let total = 64 << 10;
    let payload: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let mut written = 0;
    let mut received = Vec::new();
    h.give_rx(64);
    h.pump_until("the credit to be used", |h| {
        if written < total {
            match host.write(&payload[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        received.extend(data_of(&h.recv()));
        received.len() >= 8192
    });
    // Quiet: the device stopped reading, although data and RX buffers wait.
    for _ in 0..5 {
        h.pump(20);
    }
    received.extend(data_of(&h.recv()));
    assert_eq!(
        received.len(),
        8192,
        "the device sent beyond the guest credit"
    );

    // Each CREDIT_UPDATE lets another 8 KiB through, never more, until
    // all arrived.
    let mut told = 0usize;
    h.pump_until("all host data", |h| {
        if written < total {
            match host.write(&payload[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        received.extend(data_of(&h.recv()));
        assert!(
            received.len() - told <= 8192,
            "sent beyond the guest credit"
        );
        if received.len() - told == 8192 {
            told = received.len();
            assert_eq!(h.guest_fwd_cnt as usize, told);
            h.send(h.header(op::CREDIT_UPDATE, 52, port), b"");
            h.give_rx(4);
        }
        received.len() == total
    });
    assert_eq!(received, payload);
}

#[test]
fn rx_packets_wait_for_rx_buffers() {
    let mut h = Harness::new();
    // Three refused requests, no RX buffers yet.
    for port in 0..3 {
        h.send(h.header(op::REQUEST, 100 + port, 7000), b"");
    }
    assert!(h.recv().is_empty());
    h.give_rx(2);
    assert_eq!(h.recv().len(), 2);
    h.give_rx(2);
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].header.dst_port, 102);
}

#[test]
fn malformed_tx_packets_are_dropped_or_reset_without_breaking_the_device() {
    let mut h = Harness::new();
    h.give_rx(8);
    // Wrong type: RST. Wrong cid: dropped. Truncated: dropped.
    let mut bad_type = h.header(op::REQUEST, 1, 2);
    bad_type.type_ = 2;
    h.send(bad_type, b"");
    let mut bad_cid = h.header(op::REQUEST, 1, 2);
    bad_cid.src_cid = 9;
    h.send(bad_cid, b"");
    h.tx.add(10, false);
    let mut fds = FdWatch::default();
    h.dev.queue_notified(TX_QUEUE, &mut fds);
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].header.op, op::RST);
    // Every TX chain was returned to the guest.
    assert_eq!(h.tx.take_used().len(), 3);
    assert!(h.irq.broken().is_empty());
}

#[test]
fn a_broken_tx_ring_breaks_the_device() {
    let mut h = Harness::new();
    h.tx.mock.avail().idx().store(1000);
    let mut fds = FdWatch::default();
    h.dev.queue_notified(TX_QUEUE, &mut fds);
    assert_eq!(h.irq.broken().len(), 1, "{:?}", h.irq.broken());
}

#[test]
fn a_broken_rx_ring_breaks_the_device_and_closes_its_connections() {
    let mut h = Harness::new();
    let (mut host, port) = host_initiated(&mut h);
    assert_eq!(read_line(&mut host), format!("OK {port}"));
    host.write_all(b"data").unwrap();
    h.rx.mock.avail().idx().store(1000);
    h.pump_until("the device to break", |h| !h.irq.broken().is_empty());
    assert!(h.irq.broken()[0].contains("RX"), "{:?}", h.irq.broken());
    assert_eq!(host.read(&mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn a_host_that_never_sends_connect_is_dropped_when_newer_ones_arrive() {
    let mut h = Harness::new();
    let mut silent = UnixStream::connect(&h.path).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    h.pump_until("the accept", |h| !h.pump(0));
    let mut others = Vec::new();
    for _ in 0..muxer::MAX_PENDING_ACCEPTS {
        others.push(UnixStream::connect(&h.path).unwrap());
        h.pump(0);
    }
    h.pump_until("the drop", |h| !h.pump(0));
    assert_eq!(silent.read(&mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn connects_the_guest_does_not_answer_are_bounded() {
    let mut h = Harness::new();
    let mut hosts: Vec<UnixStream> = (0..muxer::MAX_PENDING_ACCEPTS as u32)
        .map(|port| h.host_connect(port))
        .collect();
    h.pump_until("the accepts", |h| !h.pump(0));
    let mut refused = h.host_connect(999);
    h.pump_until("the refusal", |h| !h.pump(0));
    assert_eq!(refused.read(&mut [0u8; 1]).unwrap(), 0);
    // The first ones are still waiting for the guest.
    hosts[0].set_nonblocking(true).unwrap();
    let err = hosts[0].read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
}

#[test]
fn a_bad_connect_line_closes_the_stream() {
    let mut h = Harness::new();
    let mut s = UnixStream::connect(&h.path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"CONNECT fifty\n").unwrap();
    h.pump_until("the refusal", |h| !h.pump(0));
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
    assert!(h.recv().is_empty());
}

#[test]
fn reset_closes_connections_and_new_refuses_bad_configs() {
    let mut h = Harness::new();
    let (mut host, port) = host_initiated(&mut h);
    assert_eq!(read_line(&mut host), format!("OK {port}"));
    let mut fds = FdWatch::default();
    h.dev.reset(&mut fds);
    assert!(
        fds.changes.iter().any(|c| matches!(c, FdChange::Remove(_))),
        "the connection's watch was not removed"
    );
    assert_eq!(host.read(&mut [0u8; 1]).unwrap(), 0);

    // PATH is in use while the device lives; a stale file is replaced; a
    // missing directory and reserved cids are refused.
    let cfg = |path: PathBuf, cid| VsockConfig {
        guest_cid: cid,
        uds_path: path,
    };
    let err = Vsock::new(&cfg(h.path.clone(), CID)).err().unwrap();
    assert!(matches!(err, VsockError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("v.sock"));
    let stale = h.path.with_file_name("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let dev = Vsock::new(&cfg(stale.clone(), CID)).unwrap();
    drop(dev);
    assert!(!stale.exists(), "the socket file was left behind");
    // A file that replaced ours since is not ours to remove.
    let dev = Vsock::new(&cfg(stale.clone(), CID)).unwrap();
    // (Renamed over it, so the new file cannot reuse the old inode.)
    let other = stale.with_file_name("other");
    std::fs::write(&other, b"someone else's").unwrap();
    std::fs::rename(&other, &stale).unwrap();
    drop(dev);
    assert!(
        stale.exists(),
        "a file that is not the device's was removed"
    );
    let missing = h.path.with_file_name("no-such-dir").join("v.sock");
    let err = Vsock::new(&cfg(missing, CID)).err().unwrap();
    assert!(matches!(err, VsockError::NoDirectory { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"));
    let file = h.path.with_file_name("regular");
    std::fs::write(&file, b"x").unwrap();
    let err = Vsock::new(&cfg(file.clone(), CID)).err().unwrap();
    assert!(matches!(err, VsockError::NotASocket { .. }), "{err}");
    assert!(file.exists(), "a regular file was replaced");
    for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        let err = Vsock::new(&cfg(h.path.with_file_name("c.sock"), cid))
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with(&format!("guest CID {cid} ")),
            "{err}"
        );
    }
    let mut config = [0u8; 8];
    h.dev.read_config(0, &mut config);
    assert_eq!(u64::from_le_bytes(config), CID);
}

#[test]
fn the_listener_is_watched_from_the_start_and_refuses_before_activation() {
    let dir = TempDir::new();
    let path = dir.0.join("v.sock");
    let mut dev = Vsock::new(&VsockConfig {
        guest_cid: CID,
        uds_path: path.clone(),
    })
    .unwrap();
    let fds = dev.host_fds();
    assert_eq!(fds.len(), 1);
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    dev.host_event(fds[0].0, EventSet::IN, &mut FdWatch::default());
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
}
