//! Puts an interactive terminal in raw mode while the guest owns the console.

use std::os::fd::AsRawFd;

/// Restores the terminal's previous mode when dropped.
pub(crate) struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    /// Whether standard input is a terminal.
    pub(crate) fn stdin_is_terminal() -> bool {
        // SAFETY: isatty only inspects the fd.
        unsafe { libc::isatty(std::io::stdin().as_raw_fd()) == 1 }
    }

    /// Switches stdin to raw mode; None if that is not possible.
    pub(crate) fn enter() -> Option<Self> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is stdin and `saved` is a valid termios to write to.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct we own.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output processing so host-side log lines stay readable.
        raw.c_oflag = saved.c_oflag;
        // SAFETY: fd is stdin and `raw` is a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the mode saved from the same fd.
        unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}
