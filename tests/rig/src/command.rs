//! Running host tools (apt-get, dpkg, cargo, guest-images/build) with their
//! output captured, so a failure carries what the tool said.

use std::process::{Command, Output};

/// A host command that could not start or exited non-zero.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {detail}")]
pub struct CommandError {
    pub command: String,
    pub detail: String,
}

/// Runs `command` to completion and returns its output if it succeeded.
pub fn run(command: &mut Command) -> Result<Output, CommandError> {
    let rendered = render(command);
    let output = command.output().map_err(|e| CommandError {
        command: rendered.clone(),
        detail: e.to_string(),
    })?;
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
    }
}
