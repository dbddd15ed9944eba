//! Unix-socket plumbing: binding `PATH` (replacing a stale socket file,
//! refusing one in use) and connecting to `PATH_P` without blocking.

use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::VsockError;

/// Binds `path`, replacing a stale socket file nobody listens on.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, VsockError> {
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => Path::new("/"),
    };
    if !dir.is_dir() {
        return Err(VsockError::NoDirectory {
            path: path.to_path_buf(),
        });
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(VsockError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(VsockError::InUse {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|source| VsockError::Bind {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(VsockError::Bind {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| VsockError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| VsockError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(listener)
}

/// Connects to a Unix socket without blocking: a listener whose backlog is
/// full fails with `EAGAIN` instead of stalling the VMM thread.
pub(crate) fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data, valid when zeroed.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::from(ErrorKind::InvalidInput));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: a plain syscall; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is an initialised sockaddr_un that lives across the
    // call and `len` does not exceed its size; `fd` is a valid socket.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

/// Writes to a stream; a peer that has gone away is an `EPIPE` error,
/// never a SIGPIPE, whatever the process's signal disposition.
pub(crate) fn send(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes during the
    // call, and the fd is the open socket `stream` owns.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_nonblocking_refuses_missing_and_overlong_paths() {
        let err = connect_nonblocking(Path::new("/nonexistent-mercury-vsock/x")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let long = "/tmp/".to_string() + &"x".repeat(200);
        let err = connect_nonblocking(Path::new(&long)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn send_to_a_closed_peer_is_epipe() {
        let (a, b) = UnixStream::pair().unwrap();
        assert_eq!(send(&a, b"hi").unwrap(), 2);
        drop(b);
        assert_eq!(
            send(&a, b"hi").unwrap_err().raw_os_error(),
            Some(libc::EPIPE)
        );
    }
}
