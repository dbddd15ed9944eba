//! `mercury`: run a Kubernetes node (or any Linux guest) in a KVM microVM,
//! and plan clusters of them.

mod cli;
mod cluster;
mod device_args;
mod signals;
mod terminal;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

fn main() -> ExitCode {
    // The origin of the boot timer and of the first-KVM_RUN timings: they
    // include mercury's own start-up, as Firecracker's boot timer does.
    let process_start = Instant::now();
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("MERCURY_LOG", "info"))
        .format_timestamp_micros()
        .init();
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Run(args) => cli::run(args, process_start),
        cli::Command::Cluster { command } => cluster::command::run(command),
    }
}
