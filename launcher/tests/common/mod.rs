//! Helpers shared by the `mercury` binary's end-to-end tests.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

use mercury_tests::{output_within, CHILD_TIMEOUT};

/// Runs `mercury ARGS`; a run that does not end within [`CHILD_TIMEOUT`] is
/// killed and fails the test with what it printed (the guest console, when
/// it goes to stdout).
pub fn mercury(args: &[&str]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_mercury")).args(args),
        CHILD_TIMEOUT,
    )
}

/// A child's stdout or stderr as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
