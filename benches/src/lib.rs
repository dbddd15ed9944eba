//! mercury's benchmarks: the boot-time harness (`boot-harness` binary) and
//! the pieces it is made of, unit tested here; criterion benches of hot paths
//! live in `benches/`.
//!
//! The harness runs `mercury run` (and optionally a Firecracker-compatible
//! VMM) as a child process, reads the timing line mercury logs at exit, times
//! the process from the outside, and measures the VMM's memory overhead from
//! `/proc/<pid>/smaps`. See docs/BENCHMARKS.md for the method and numbers.

pub mod exit_line;
pub mod firecracker;
pub mod harness;
pub mod process;
pub mod report;
pub mod smaps;
pub mod stats;
