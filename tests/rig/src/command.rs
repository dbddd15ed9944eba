//! Running host tools (apt-get, dpkg, cargo, guest-images/build) with their
//! output captured, so a failure carries what the tool said.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a host tool may run: generous for a first guest kernel build
/// (4–5 min here, up to 12 min under load), finite so a hung `apt-get` or
/// build fails the run instead of hanging it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A host command that could not start or exited non-zero.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {detail}")]
pub struct CommandError {
    pub command: String,
    pub detail: String,
}

/// Runs `command` to completion (at most [`COMMAND_TIMEOUT`]) and returns
/// its output if it succeeded.
pub fn run(command: &mut Command) -> Result<Output, CommandError> {
    run_within(command, COMMAND_TIMEOUT)
}

/// [`run`] with a time limit: past it, the command's whole process group
/// (a build's compilers too) is killed and the error says so.
pub fn run_within(command: &mut Command, limit: Duration) -> Result<Output, CommandError> {
    let rendered = render(command);
    let spawn_err = |e: std::io::Error| CommandError {
        command: rendered.clone(),
        detail: e.to_string(),
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(spawn_err)?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_err)? {
            break status;
        }
        if Instant::now() >= deadline {
            // The group id is the child's pid (process_group(0)).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Err(CommandError {
                command: rendered,
                detail: format!("still running after {} s: killed", limit.as_secs()),
            });
        }
        thread::sleep(Duration::from_millis(50));
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let detail = format!("{}; last output:\n{}", output.status, tail(&text, 15));
        return Err(CommandError {
            command: rendered,
            detail,
        });
    }
    Ok(output)
}

/// `program arg arg...` for messages.
pub fn render(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_renders() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(
            render(Command::new("apt-get").args(["download", "x"])),
            "apt-get download x"
        );
    }

    #[test]
    fn failure_carries_output() {
        let err = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        assert!(
            err.detail.contains("oops") && err.detail.contains('3'),
            "{err}"
        );
        assert!(run(&mut Command::new("/nonexistent/tool")).is_err());
        let ok = run(Command::new("sh").args(["-c", "echo out; echo err >&2"])).unwrap();
        assert_eq!(
            (&ok.stdout[..], &ok.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }

    #[test]
    fn a_command_past_its_limit_is_killed_with_its_children() {
        let marker = std::env::temp_dir().join(format!("rig-command-{}", std::process::id()));
        let script = format!("(sleep 3; touch {}) & sleep 30", marker.display());
        let err = run_within(
            Command::new("sh").args(["-c", &script]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(err.detail.contains("killed"), "{err}");
        // The background child was killed with the group: it never wrote.
        thread::sleep(Duration::from_secs(4));
        assert!(
            !marker.exists(),
            "a child of the timed-out command survived"
        );
    }
}
