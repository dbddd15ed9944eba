//! Command-line interface: `mercury run`, and the `mercury cluster`
//! subcommands (in [`crate::cluster::command`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use vmm_core::{SerialSink, Vm, VmConfig, VmExit};

use crate::signals::StopSignals;
use crate::terminal::RawTerminal;

/// Exit code when the guest rebooted or powered off.
const EXIT_OK: u8 = 0;
/// Exit code for bad input or a VMM failure before the guest ran; the
/// cluster commands use it for an invalid spec or a failed operation.
pub(crate) const EXIT_ERROR: u8 = 1;
/// Exit code when the guest crashed (triple fault, KVM internal error,
/// kernel panic).
const EXIT_GUEST_FAILED: u8 = 3;
/// Exit code when the host stopped the VM.
const EXIT_STOPPED: u8 = 4;

/// mercury: Kubernetes nodes in KVM microVMs.
#[derive(Debug, Parser)]
#[command(name = "mercury", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Boot one microVM and wait until the guest reboots or powers off.
    ///
    /// Exit status: 0 guest rebooted or powered off; 1 bad input or VMM
    /// error; 3 guest crashed (triple fault, KVM internal error, kernel
    /// panic); 4 stopped.
    ///
    /// Signals: SIGINT, SIGTERM and SIGHUP stop the VM (exit 4); SIGPWR
    /// presses the guest's ACPI power button and mercury keeps running
    /// until the guest powers off (exit 0).
    Run(RunArgs),
    /// Clusters of nodes on this host (in progress: `plan` only).
    Cluster {
        #[command(subcommand)]
        command: crate::cluster::command::ClusterCommand,
    },
}

#[derive(Debug, Default, Args)]
pub(crate) struct RunArgs {
    /// Node configuration file (TOML, fields as the flags: vcpus,
    /// memory_mib, kernel, initrd, cmdline, serial, [[disk]], [[net]],
    /// [vsock], rng). Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Kernel image: ELF vmlinux (PVH when it has the PVH note) or bzImage.
    #[arg(long, value_name = "FILE", required_unless_present = "config")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 reboot=k panic=1 quiet"].
    #[arg(long)]
    cmdline: Option<String>,
    /// Number of vCPUs, 1..=32 [default: 1].
    #[arg(long)]
    vcpus: Option<i64>,
    /// Guest memory in MiB [default: 128].
    #[arg(long, value_name = "MIB")]
    memory: Option<u64>,
    /// Serial console output: stdout, none, or a file path [default: stdout].
    #[arg(long, value_name = "stdout|none|FILE")]
    serial: Option<String>,
    /// A virtio-blk disk on a raw image file (repeatable; the first is the
    /// guest's /dev/vda). Replaces the config file's disks.
    #[arg(long = "disk", value_name = "PATH[,ro][,id=ID]")]
    disks: Vec<String>,
    /// A virtio-net interface on a TAP device, created if absent
    /// (repeatable; the first is eth0). Replaces the config file's nets.
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]")]
    nets: Vec<String>,
    /// A virtio-vsock device; the host side listens on the Unix socket PATH.
    #[arg(long, value_name = "cid=N,uds=PATH")]
    vsock: Option<String>,
    /// A virtio-rng entropy device.
    #[arg(long)]
    rng: bool,
}

/// A problem with the user's input, reported before anything is built.
#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error("cannot parse config file {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] vmm_core::ConfigError),
    #[error(transparent)]
    DeviceArg(#[from] crate::device_args::DeviceArgError),
}

fn load_config(args: RunArgs) -> Result<VmConfig, InputError> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| InputError::ConfigRead {
                path: path.clone(),
                source,
            })?;
            toml::from_str(&text).map_err(|source| InputError::ConfigParse {
                path: path.clone(),
                source,
            })?
        }
        // clap guarantees --kernel without --config.
        None => VmConfig::new(args.kernel.clone().unwrap_or_default()),
    };
    if let Some(kernel) = args.kernel {
        config.kernel = kernel;
    }
    if let Some(initrd) = args.initrd {
        config.initrd = Some(initrd);
    }
    if let Some(cmdline) = args.cmdline {
        config.cmdline = cmdline;
    }
    if let Some(vcpus) = args.vcpus {
        config.vcpus = vmm_core::check_vcpus(vcpus)?;
    }
    if let Some(memory) = args.memory {
        config.memory_mib = memory;
    }
    if let Some(serial) = args.serial {
        config.serial = SerialSink::from(serial);
    }
    if !args.disks.is_empty() {
        config.disks = args
            .disks
            .iter()
            .map(|d| crate::device_args::parse_disk(d))
            .collect::<Result<_, _>>()?;
    }
    if !args.nets.is_empty() {
        config.nets = args
            .nets
            .iter()
            .map(|n| crate::device_args::parse_net(n))
            .collect::<Result<_, _>>()?;
    }
    if let Some(vsock) = &args.vsock {
        config.vsock = Some(crate::device_args::parse_vsock(vsock)?);
    }
    if args.rng {
        config.rng = true;
    }
    Ok(config)
}

/// `mercury run`; timings count from `process_start`.
pub(crate) fn run(args: RunArgs, process_start: std::time::Instant) -> ExitCode {
    let mut config = match load_config(args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    // Interactive console: feed a terminal's keystrokes to the guest.
    let raw_terminal = if config.serial == SerialSink::Stdout && RawTerminal::stdin_is_terminal() {
        config.serial_stdin = true;
        RawTerminal::enter()
    } else {
        None
    };
    // Before any thread exists, so that every VM thread inherits the mask.
    let signals = match StopSignals::block() {
        Ok(signals) => signals,
        Err(e) => return fail(&e),
    };
    let mut vm = match Vm::with_origin(config, process_start) {
        Ok(vm) => vm,
        Err(e) => return fail(&e),
    };
    if let Err(e) = signals.stop_on_signal(vm.stop_handle()) {
        return fail(&e);
    }
    if let Err(e) = vm.start() {
        return fail(&e);
    }
    let exit = vm.wait();
    drop(raw_terminal);
    report_timings(&vm, &exit);
    match exit {
        VmExit::Reset | VmExit::PowerOff => ExitCode::from(EXIT_OK),
        VmExit::Stopped => ExitCode::from(EXIT_STOPPED),
        VmExit::GuestPanic => {
            eprintln!("mercury: guest failed: guest kernel panicked (reported through pvpanic; the panic message is on its console)");
            ExitCode::from(EXIT_GUEST_FAILED)
        }
        other => {
            eprintln!("mercury: guest failed: {other}");
            ExitCode::from(EXIT_GUEST_FAILED)
        }
    }
}

fn report_timings(vm: &Vm, exit: &VmExit) {
    let us = |d: Option<std::time::Duration>| {
        d.map_or("none".to_string(), |d| d.as_micros().to_string())
    };
    let first = vm.first_run();
    log::info!(
        "exit=\"{exit}\" boot_timer_us={} first_kvm_run_us={} first_kvm_run_cpu_us={}",
        us(vm.boot_time()),
        us(first.map(|f| f.wall)),
        us(first.map(|f| f.cpu)),
    );
}

/// An error with its causes, `: `-separated, each cause once.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror messages often embed their source already.
        if !message.contains(&cause_text) {
            message.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    message
}

/// Prints an error with its causes and returns the error exit code.
pub(crate) fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("mercury: error: {}", error_chain(error));
    ExitCode::from(EXIT_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_config_fields_and_flag_overrides() {
        let dir = std::env::temp_dir().join(format!("mercury-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "kernel = \"/k\"\nvcpus = 2\nmemory_mib = 256\ncmdline = \"console=ttyS0\"\nserial = \"none\"\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            initrd: Some("/i".into()),
            vcpus: Some(4),
            ..RunArgs::default()
        };
        let c = load_config(args).unwrap();
        assert_eq!(c.kernel, PathBuf::from("/k"));
        assert_eq!(c.vcpus, 4);
        assert_eq!(c.memory_mib, 256);
        assert_eq!(c.cmdline, "console=ttyS0");
        assert_eq!(c.serial, SerialSink::None);
        assert_eq!(c.initrd, Some(PathBuf::from("/i")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_toml_field_is_an_error() {
        let e = toml::from_str::<VmConfig>("kernel = \"/k\"\nmemroy = 5\n").unwrap_err();
        assert!(e.to_string().contains("memroy"), "{e}");
    }

    /// The config file and the flag get the same range message.
    #[test]
    fn vcpus_out_of_range_in_toml_is_named_like_the_flag() {
        let e = toml::from_str::<VmConfig>("kernel = \"/k\"\nvcpus = 300\n").unwrap_err();
        assert!(
            e.to_string().contains("vcpus 300 is out of range (1..=32)"),
            "{e}"
        );
        let args = RunArgs {
            kernel: Some("/k".into()),
            vcpus: Some(300),
            ..RunArgs::default()
        };
        assert_eq!(
            load_config(args).unwrap_err().to_string(),
            "vcpus 300 is out of range (1..=32)"
        );
        let e = toml::from_str::<VmConfig>("kernel = \"/k\"\nvcpus = 0\n").unwrap_err();
        assert!(e.to_string().contains("vcpus 0 is out of range"), "{e}");
    }

    #[test]
    fn huge_vcpu_count_named() {
        let args = RunArgs {
            kernel: Some("/k".into()),
            vcpus: Some(1000),
            ..RunArgs::default()
        };
        let e = load_config(args).unwrap_err();
        assert!(e.to_string().contains("1000"));
    }
}
