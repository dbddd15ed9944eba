//! vmm-core: mercury's embeddable VMM library.
//!
//! A validated [`VmConfig`] (plain serde data) goes in, a running [`Vm`]
//! handle comes out:
//!
//! ```no_run
//! use vmm_core::{Vm, VmConfig};
//! let mut config = VmConfig::new("/path/to/vmlinux");
//! config.initrd = Some("/path/to/initramfs.cpio".into());
//! let mut vm = Vm::new(config)?;
//! vm.start()?;
//! let exit = vm.wait();
//! println!("guest ended: {exit}; boot timer: {:?}", vm.boot_time());
//! # Ok::<(), vmm_core::Error>(())
//! ```
//!
//! Threads: one per vCPU running `KVM_RUN` and dispatching PIO/MMIO exits to
//! address-keyed buses, and one VMM thread running the event loop for
//! host-side device I/O. See `examples/boot.rs`.

mod arch;
mod builder;
mod bus;
mod config;
mod device_config;
mod device_manager;
mod lifecycle;
mod memory;
mod resources;
mod vcpu;
mod virtio_devices;
mod vm;
mod vmm_thread;

pub use arch::{ArchError, BootProtocol};
pub use builder::BuildError;
pub use bus::BusError;
pub use config::{
    check_vcpus, ConfigError, SerialSink, VmConfig, DEFAULT_CMDLINE, MAX_VCPUS, MIN_MEMORY_MIB,
};
pub use device_config::{
    format_mac, mac_of, parse_mac, vsock_port_path, DiskConfig, NetConfig, VsockConfig,
    MAX_GUEST_CID, MAX_TAP_NAME_LEN, MIN_GUEST_CID,
};
pub use device_manager::DeviceError;
pub use lifecycle::{FirstRun, VmExit};
pub use memory::MemoryError;
pub use resources::ResourceError;
pub use vm::{run_to_exit, StopHandle, Vm, VmError, VmState};

/// Any error of this crate's public API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the VM failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A lifecycle operation failed.
    #[error(transparent)]
    Vm(#[from] VmError),
}
