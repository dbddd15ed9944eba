//! The handshake of a host-initiated stream: `CONNECT <port>\n`, read
//! without consuming anything after the newline, at most
//! [`MAX_CONNECT_LINE`] bytes.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;

/// Longest CONNECT line, newline included (`CONNECT 4294967295\n` is 19).
pub const MAX_CONNECT_LINE: usize = 32;

/// Why a CONNECT line was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectLineError {
    /// Not `CONNECT <decimal u32>`.
    #[error("not \"CONNECT <port>\": {0:?}")]
    Malformed(String),
    /// No newline within [`MAX_CONNECT_LINE`] bytes.
    #[error("no newline in the first {MAX_CONNECT_LINE} bytes")]
    TooLong,
}

/// Parses `CONNECT <port>` (without its newline).
pub fn parse_connect_line(line: &[u8]) -> Result<u32, ConnectLineError> {
    let malformed = || ConnectLineError::Malformed(String::from_utf8_lossy(line).into_owned());
    let digits = line.strip_prefix(b"CONNECT ").ok_or_else(malformed)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)
}

pub(crate) struct PendingAccept {
    pub(crate) stream: UnixStream,
    pub(crate) line: Vec<u8>,
}

pub(crate) enum LineRead {
    Incomplete,
    Port(u32),
    Failed(String),
}

impl PendingAccept {
    /// Reads byte by byte up to the newline, so nothing after it (the
    /// first data) is consumed before the connection has credit.
    pub(crate) fn read_line(&mut self) -> LineRead {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return LineRead::Failed("closed before CONNECT".into()),
                Ok(_) if byte[0] == b'\n' => {
                    return match parse_connect_line(&self.line) {
                        Ok(port) => LineRead::Port(port),
                        Err(e) => LineRead::Failed(e.to_string()),
                    }
                }
                Ok(_) => {
                    self.line.push(byte[0]);
                    if self.line.len() >= MAX_CONNECT_LINE {
                        return LineRead::Failed(ConnectLineError::TooLong.to_string());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return LineRead::Incomplete,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return LineRead::Failed(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_connect_lines_parse() {
        assert_eq!(parse_connect_line(b"CONNECT 52"), Ok(52));
        assert_eq!(parse_connect_line(b"CONNECT 0"), Ok(0));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295"), Ok(u32::MAX));
    }

    #[test]
    fn bad_connect_lines_are_refused() {
        for line in [
            &b""[..],
            b"CONNECT",
            b"CONNECT ",
            b"connect 52",
            b"CONNECT  52",
            b"CONNECT 52 ",
            b"CONNECT +52",
            b"CONNECT -1",
            b"CONNECT 4294967296",
            b"CONNECT 52\r",
            b"CONNECT 5x",
            b"CONNECT \xff",
        ] {
            assert!(
                matches!(
                    parse_connect_line(line),
                    Err(ConnectLineError::Malformed(_))
                ),
                "{line:?} was accepted"
            );
        }
    }

    fn pending_with(bytes: &[u8]) -> (PendingAccept, UnixStream) {
        use std::io::Write;
        let (dev, mut host) = UnixStream::pair().unwrap();
        dev.set_nonblocking(true).unwrap();
        host.write_all(bytes).unwrap();
        (
            PendingAccept {
                stream: dev,
                line: Vec::new(),
            },
            host,
        )
    }

    #[test]
    fn a_connect_line_is_read_without_consuming_the_data_after_it() {
        let (mut p, _host) = pending_with(b"CONNECT 1234\nhello");
        assert!(matches!(p.read_line(), LineRead::Port(1234)));
        let mut rest = [0u8; 5];
        p.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"hello");
    }

    #[test]
    fn a_connect_line_may_arrive_in_pieces() {
        use std::io::Write;
        let (mut p, mut host) = pending_with(b"CONN");
        assert!(matches!(p.read_line(), LineRead::Incomplete));
        host.write_all(b"ECT 7\n").unwrap();
        assert!(matches!(p.read_line(), LineRead::Port(7)));
    }

    #[test]
    fn a_too_long_or_closed_connect_line_fails() {
        let (mut p, _host) = pending_with(&[b'C'; 100]);
        match p.read_line() {
            LineRead::Failed(why) => assert!(why.contains("no newline"), "{why}"),
            _ => panic!("a 100-byte line was not refused"),
        }
        assert_eq!(p.line.len(), MAX_CONNECT_LINE);
        let (mut p, host) = pending_with(b"CONNECT 1");
        drop(host);
        assert!(matches!(p.read_line(), LineRead::Failed(_)));
        let (mut p, _host) = pending_with(b"HELLO\n");
        assert!(matches!(p.read_line(), LineRead::Failed(_)));
    }
}
