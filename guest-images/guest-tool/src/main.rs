//! `guest-tool`: both ends of mercury's vsock and TCP tests, as one
//! static binary for busybox images (the guest's initramfs and the rig's
//! L1).
//!
//! ```text
//! guest-tool connect CID PORT MESSAGE     guest: AF_VSOCK connect, send, print the reply
//! guest-tool listen PORT                  guest: accept one AF_VSOCK connection, echo it
//! guest-tool uds-connect PATH PORT MESSAGE  host: "CONNECT PORT\n" on the VMM's socket,
//!                                          expect "OK ...", send, print the reply
//! guest-tool uds-echo PATH                host: listen on PATH (the VMM connects here for
//!                                          guest connections to a host port), echo one
//! guest-tool tcp-send ADDR:PORT BYTES     send BYTES of a fixed pseudo-random stream,
//!                                          print `SENT <bytes> fnv=<hash>`
//! guest-tool tcp-recv PORT                accept one TCP connection, read to EOF,
//!                                          print `RECEIVED <bytes> fnv=<hash>`
//! guest-tool randread DEVICE COUNT        COUNT 4 KiB O_DIRECT reads at random
//!                                          aligned offsets, print `RANDREAD ... iops=`
//! ```
//! (busybox `nc` drops data at end of input, so it cannot move 16 MiB.)
//! A reply is read until the peer closes or 64 KiB arrived; it is printed
//! as `REPLY <bytes>`. Errors print `ERROR <what>` and exit 1.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

const REPLY_LIMIT: usize = 64 << 10;
const TIMEOUT: Duration = Duration::from_secs(30);

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: all-zero is a valid sockaddr_vm.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

/// A connected or accepted vsock stream as a `UnixStream` look-alike:
/// std's stream types only need a stream fd for read/write.
fn stream_from(fd: OwnedFd) -> UnixStream {
    UnixStream::from(fd)
}

fn vsock_connect(cid: u32, port: u32) -> io::Result<UnixStream> {
    let fd = vsock_socket()?;
    let addr = vsock_addr(cid, port);
    // SAFETY: `addr` is a valid sockaddr_vm of the size given.
    let rc = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream_from(fd))
}

fn vsock_accept(port: u32) -> io::Result<UnixStream> {
    let fd = vsock_socket()?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let addr = vsock_addr(libc::VMADDR_CID_ANY, port);
    // SAFETY: valid sockaddr_vm; listen/accept on our own fd.
    unsafe {
        if libc::bind(raw, (&addr as *const libc::sockaddr_vm).cast(), std::mem::size_of::<libc::sockaddr_vm>() as u32) != 0
            || libc::listen(raw, 1) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let conn = libc::accept(raw, std::ptr::null_mut(), std::ptr::null_mut());
        if conn < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream_from(OwnedFd::from_raw_fd(conn)))
    }
}

/// Sends `message`, half-closes, reads the reply until EOF.
fn exchange(mut stream: UnixStream, message: &[u8]) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(message)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    stream.take(REPLY_LIMIT as u64).read_to_end(&mut reply)?;
    Ok(reply)
}

/// Echoes what arrives until EOF, then half-closes and waits for the peer
/// to close: a vsock write is only queued in the guest kernel when
/// `write` returns, and a guest that powers off right after could lose it.
/// The peer's close (an RST, after everything before it) says it arrived.
fn echo(mut stream: UnixStream) -> io::Result<usize> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n])?;
        total += n;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    // EOF or a reset both mean the peer is done.
    let _ = stream.read(&mut buf);
    Ok(total)
}

fn uds_connect(path: &str, port: u32, message: &[u8]) -> io::Result<Vec<u8>> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    (&stream).write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("OK ") {
        return Err(io::Error::other(format!("handshake answered {line:?}")));
    }
    println!("CONNECTED {}", line.trim_end());
    // Bytes after the OK line may already be buffered in `reader`.
    let mut stream = stream;
    stream.write_all(message)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    reader.take(REPLY_LIMIT as u64).read_to_end(&mut reply)?;
    Ok(reply)
}

/// FNV-1a, 64-bit.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The bytes `tcp-send` sends: xorshift64 from a fixed seed.
fn fill_stream(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

fn tcp_send(addr: &str, total: u64) -> io::Result<(u64, u64, Duration)> {
    let mut stream = connect_retrying(addr)?;
    let started = std::time::Instant::now();
    let mut state = 0x6d65_7263_7572_7921u64;
    let mut hash = Fnv::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(buf.len() as u64) as usize;
        fill_stream(&mut state, &mut buf[..n]);
        stream.write_all(&buf[..n])?;
        hash.update(&buf[..n]);
        sent += n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    // Wait for the receiver to close: everything sent was read.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    Ok((sent, hash.0, started.elapsed()))
}

/// `count` random 4 KiB direct reads from `device`: (reads, elapsed).
fn randread(device: &str, count: u32) -> io::Result<(u32, Duration)> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(device)?;
    let blocks = file_size(&file)? / 4096;
    if blocks == 0 {
        return Err(io::Error::other("device smaller than 4 KiB"));
    }
    let layout = std::alloc::Layout::from_size_align(4096, 4096).map_err(io::Error::other)?;
    // SAFETY: a non-zero-sized layout; freed below.
    let ptr = unsafe { std::alloc::alloc(layout) };
    if ptr.is_null() {
        return Err(io::Error::other("out of memory"));
    }
    // SAFETY: `ptr` points to 4096 bytes we own until the dealloc below.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, 4096) };
    let mut state = 0x7261_6e64_7265_6164u64;
    let started = std::time::Instant::now();
    let mut result = Ok(());
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if let Err(e) = file.read_exact_at(buf, (state % blocks) * 4096) {
            result = Err(e);
            break;
        }
    }
    let elapsed = started.elapsed();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
    result.map(|()| (count, elapsed))
}

/// The size of a file or block device.
fn file_size(file: &std::fs::File) -> io::Result<u64> {
    use std::io::Seek;
    let mut file = file;
    file.seek(io::SeekFrom::End(0))
}

/// The receiver may not listen yet: retry for up to 30 s.
fn connect_retrying(addr: &str) -> io::Result<std::net::TcpStream> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match std::net::TcpStream::connect(addr) {
            Ok(stream) => return Ok(stream),
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

fn tcp_recv(port: u16) -> io::Result<(u64, u64)> {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
    println!("LISTENING {port}");
    let (mut stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut hash = Fnv::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok((total, hash.0));
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
}

fn run(args: &[String]) -> io::Result<()> {
    let number = |s: &String| -> io::Result<u32> {
        s.parse().map_err(|_| io::Error::other(format!("not a number: {s}")))
    };
    match args {
        [cmd, cid, port, message] if cmd == "connect" => {
            let reply = exchange(vsock_connect(number(cid)?, number(port)?)?, message.as_bytes())?;
            println!("REPLY {}", String::from_utf8_lossy(&reply));
        }
        [cmd, port] if cmd == "listen" => {
            let n = echo(vsock_accept(number(port)?)?)?;
            println!("ECHOED {n}");
        }
        [cmd, path, port, message] if cmd == "uds-connect" => {
            let reply = uds_connect(path, number(port)?, message.as_bytes())?;
            println!("REPLY {}", String::from_utf8_lossy(&reply));
        }
        [cmd, path] if cmd == "uds-echo" => {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path)?;
            println!("LISTENING {path}");
            let (stream, _) = listener.accept()?;
            let n = echo(stream)?;
            println!("ECHOED {n}");
        }
        [cmd, addr, bytes] if cmd == "tcp-send" => {
            let bytes = bytes
                .parse()
                .map_err(|_| io::Error::other(format!("not a number: {bytes}")))?;
            let (sent, hash, elapsed) = tcp_send(addr, bytes)?;
            let secs = elapsed.as_secs_f64();
            println!(
                "SENT {sent} fnv={hash:016x} secs={secs:.3} mbps={:.1}",
                sent as f64 * 8.0 / secs / 1e6
            );
        }
        [cmd, device, count] if cmd == "randread" => {
            let (reads, elapsed) = randread(device, number(count)?)?;
            let secs = elapsed.as_secs_f64();
            println!(
                "RANDREAD reads={reads} secs={secs:.3} iops={:.0}",
                f64::from(reads) / secs
            );
        }
        [cmd, port] if cmd == "tcp-recv" => {
            let port = u16::try_from(number(port)?).map_err(io::Error::other)?;
            let (received, hash) = tcp_recv(port)?;
            println!("RECEIVED {received} fnv={hash:016x}");
        }
        _ => {
            return Err(io::Error::other(
                "usage: guest-tool tcp-send ADDR:PORT BYTES | tcp-recv PORT | randread DEVICE COUNT | connect CID PORT MSG | listen PORT | uds-connect PATH PORT MSG | uds-echo PATH",
            ))
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        println!("ERROR {e}");
        std::process::exit(1);
    }
}
