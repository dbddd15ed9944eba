//! Running a VMM process once and timing it from the outside: wall time from
//! spawn to exit, and the CPU time the kernel accounted to it (`wait4`).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::Exited(code) => write!(f, "exit code {code}"),
            Termination::Signaled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// One finished process.
#[derive(Clone, Debug)]
pub struct ProcessRun {
    /// Spawn → exit (reaped), as seen by the harness.
    pub wall: Duration,
    /// User + system CPU time of the process and its threads.
    pub cpu: Duration,
    /// How it ended.
    pub termination: Termination,
    /// True when it outlived the timeout and was killed.
    pub timed_out: bool,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

/// Runs `command` to completion with stdin closed and stdout/stderr captured,
/// killing it after `timeout`.
pub fn run_timed(command: &mut Command, timeout: Duration) -> io::Result<ProcessRun> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command.spawn()?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let timed_out = !wait_for_exit(&child, start + timeout)?;
    if timed_out {
        // Not reaped yet, so the pid is still this child's.
        child.kill()?;
    }
    let (termination, cpu) = reap(&child)?;
    let wall = start.elapsed();
    Ok(ProcessRun {
        wall,
        cpu,
        termination,
        timed_out,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

/// Reads a pipe to its end on a thread, so that a chatty child never blocks.
pub fn collect<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<String>> {
    let mut pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }))
}

/// The text a [`collect`] thread read.
pub fn join(handle: Option<JoinHandle<String>>) -> String {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Waits until the child has exited (without reaping it) or `deadline` has
/// passed; true if it exited.
///
/// A pidfd wakes us the moment it exits, so the wall time has no polling
/// granularity; kernels without `pidfd_open` (< 5.3) fall back to polling
/// every 500 µs.
fn wait_for_exit(child: &Child, deadline: Instant) -> io::Result<bool> {
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return poll_for_exit(pid, deadline);
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pollfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, and we pass a count of 1.
        let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        match ready {
            1.. => return Ok(true),
            0 if Instant::now() >= deadline => return Ok(false),
            0 => continue,
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

fn poll_for_exit(pid: libc::pid_t, deadline: Instant) -> io::Result<bool> {
    while Instant::now() < deadline {
        // SAFETY: an all-zero siginfo_t is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the
        // child unreaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: waitid filled `info` (si_pid stays 0 when nothing exited).
        if unsafe { info.si_pid() } != 0 {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(false)
}

/// Reaps the child with `wait4`, returning how it ended and its CPU time.
/// (`Child::wait` gives no resource usage.)
fn reap(child: &Child) -> io::Result<(Termination, Duration)> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid and writable; `pid` is our
        // unreaped child.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    let termination = if libc::WIFEXITED(status) {
        Termination::Exited(libc::WEXITSTATUS(status))
    } else {
        Termination::Signaled(libc::WTERMSIG(status))
    };
    let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
    Ok((termination, cpu))
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_exit_code() {
        let run = run_timed(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(run.termination, Termination::Exited(3));
        assert_eq!(run.stdout, "out\n");
        assert_eq!(run.stderr, "err\n");
        assert!(!run.timed_out);
    }

    #[test]
    fn kills_at_the_timeout() {
        let run = run_timed(Command::new("sleep").arg("30"), Duration::from_millis(100)).unwrap();
        assert!(run.timed_out);
        assert_eq!(run.termination, Termination::Signaled(libc::SIGKILL));
        assert!(run.wall < Duration::from_secs(20));
    }

    #[test]
    fn counts_cpu_time() {
        let run = run_timed(
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(run.termination, Termination::Exited(0));
        assert!(run.cpu > Duration::ZERO);
    }
}
