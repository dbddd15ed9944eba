//! `mercury`: run a Kubernetes node (or any Linux guest) in a KVM microVM.

mod cli;
mod signals;
mod terminal;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    vmm_core::mark_process_start();
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("MERCURY_LOG", "info"))
        .format_timestamp_micros()
        .init();
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Run(args) => cli::run(args),
    }
}
