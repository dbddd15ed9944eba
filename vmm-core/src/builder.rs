//! The boot sequence, top to bottom: validate → KVM → memory → kernel,
//! initrd, command line → VM → vCPUs → interrupt controller → devices →
//! boot structures.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use linux_loader::cmdline::Cmdline;
use log::info;
use vm_memory::{Address, GuestMemoryMmap};

use crate::arch::{self, ArchError, InitrdRegion, KernelImage};
use crate::config::{ConfigError, VmConfig};
use crate::device_manager::{DeviceError, DeviceManager};
use crate::lifecycle::Lifecycle;
use crate::memory::{self, MemoryError};
use crate::resources::ResourceError;
use crate::vcpu::{self, Vcpu};
use crate::virtio_devices::{self, PlannedDevice};

/// Why a VM could not be built. Nothing is left running or half-created
/// when one of these is returned: every resource built so far is dropped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The kernel command line is invalid or too long.
    #[error("kernel command line: {0}")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// The kernel command line cannot be written for the guest (too long).
    #[error(transparent)]
    LoadCmdline(ArchError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A vCPU could not be configured.
    #[error("cannot configure vCPU {index}: {source}")]
    ConfigureVcpu {
        /// vCPU index.
        index: u8,
        /// Why.
        #[source]
        source: ArchError,
    },
    /// KVM could not create a vCPU.
    #[error("cannot create vCPU {index}: {source}")]
    CreateVcpu {
        /// vCPU index.
        index: u8,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM could not create the VM.
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// Devices could not be attached.
    #[error(transparent)]
    Devices(#[from] DeviceError),
    /// The initrd could not be loaded.
    #[error("cannot load initrd {path}: {source}")]
    Initrd {
        /// The path given.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: ArchError,
    },
    /// The kernel could not be loaded.
    #[error("cannot load kernel {path}: {source}")]
    Kernel {
        /// The path given.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: ArchError,
    },
    /// A KVM capability mercury needs is missing.
    #[error("KVM lacks a capability mercury needs: {0}")]
    KvmCapability(&'static str),
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm: {0} (is KVM available, and may this user open /dev/kvm?)")]
    KvmUnavailable(#[source] kvm_ioctls::Error),
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The virtio devices do not fit the machine.
    #[error(transparent)]
    Resources(#[from] ResourceError),
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    SignalHandler(#[source] vmm_sys_util::errno::Error),
    /// VM-wide architecture setup failed.
    #[error("VM setup: {0}")]
    VmSetup(#[source] ArchError),
}

/// Everything `build_microvm` hands to the VM handle.
pub(crate) struct BuiltVm {
    pub(crate) kvm: Kvm,
    pub(crate) vm: VmFd,
    pub(crate) memory: GuestMemoryMmap,
    pub(crate) devices: DeviceManager,
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) kernel: KernelImage,
}

/// Builds a VM ready to start: memory, kernel, devices and vCPUs configured.
pub(crate) fn build_microvm(config: &VmConfig, origin: Instant) -> Result<BuiltVm, BuildError> {
    config.validate()?;
    vcpu::install_kick_handler().map_err(BuildError::SignalHandler)?;
    let kvm = open_kvm()?;

    memory::check_host_can_back(config.memory_mib)?;
    let mem_size = config.memory_mib << 20;
    arch::check_guest_fits(&kvm, mem_size).map_err(BuildError::VmSetup)?;
    let memory = memory::create_guest_memory(&arch::memory_regions(mem_size), config.memory_mib)?;
    // Images first: a bad kernel or initrd fails before any host-visible
    // resource (serial output file, threads) exists.
    let kernel = load_kernel(&memory, &config.kernel)?;
    info!(
        "kernel {}: entered through {} at {:#x}",
        config.kernel.display(),
        kernel.protocol,
        kernel.entry.raw_value()
    );
    let initrd = match &config.initrd {
        Some(path) => Some(load_initrd(&memory, path, &kernel)?),
        None => None,
    };
    // Where the virtio devices go decides what the command line and the
    // ACPI tables announce; both are known before any device exists.
    let virtio = virtio_devices::plan(config)?;
    let cmdline = build_cmdline(&config.cmdline, &virtio)?;
    arch::load_cmdline(&memory, &cmdline).map_err(BuildError::LoadCmdline)?;

    let vm = create_vm(&kvm, &memory)?;
    arch::setup_vm(&vm).map_err(BuildError::VmSetup)?;
    let vcpu_fds = create_vcpus(&kvm, &vm, &memory, &kernel, config.vcpus)?;
    let machine = arch::setup_machine(&vm, &vcpu_fds).map_err(BuildError::VmSetup)?;
    let lifecycle = Arc::new(Lifecycle::new(config.vcpus.into(), vcpu::kick_signal()));
    let mut devices = DeviceManager::attach_legacy_devices(&vm, config, &lifecycle, origin)?;
    devices.attach_virtio_devices(&vm, &memory, config, &virtio)?;
    let slots: Vec<_> = virtio.iter().map(|device| device.slot).collect();
    arch::configure_system(&memory, &kernel, &cmdline, initrd, &machine, &slots)
        .map_err(BuildError::VmSetup)?;

    let pio = Arc::new(devices.pio.clone());
    let mmio = Arc::new(devices.mmio.clone());
    let vcpus = vcpu_fds
        .into_iter()
        .zip(0u8..)
        .map(|(fd, index)| Vcpu {
            index,
            fd,
            pio: pio.clone(),
            mmio: mmio.clone(),
            memory: memory.clone(),
            registration: lifecycle.enlist_vcpu(index.into()),
            lifecycle: lifecycle.clone(),
            origin,
        })
        .collect();

    Ok(BuiltVm {
        kvm,
        vm,
        memory,
        devices,
        vcpus,
        lifecycle,
        kernel,
    })
}

/// Opens /dev/kvm and checks the capabilities the boot path relies on.
fn open_kvm() -> Result<Kvm, BuildError> {
    let kvm = Kvm::new().map_err(BuildError::KvmUnavailable)?;
    let required = [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    ];
    for (cap, name) in required {
        if !kvm.check_extension(cap) {
            return Err(BuildError::KvmCapability(name));
        }
    }
    Ok(kvm)
}

/// Creates the VM and gives it the guest memory.
fn create_vm(kvm: &Kvm, memory: &GuestMemoryMmap) -> Result<VmFd, BuildError> {
    let vm = kvm.create_vm().map_err(BuildError::CreateVm)?;
    memory::register_memslots(&vm, memory)?;
    Ok(vm)
}

fn load_kernel(memory: &GuestMemoryMmap, path: &Path) -> Result<KernelImage, BuildError> {
    let kernel_error = |source| BuildError::Kernel {
        path: path.to_path_buf(),
        source,
    };
    let mut file = open_image("kernel", path)?;
    arch::load_kernel(memory, &mut file).map_err(kernel_error)
}

fn load_initrd(
    memory: &GuestMemoryMmap,
    path: &Path,
    kernel: &KernelImage,
) -> Result<InitrdRegion, BuildError> {
    let initrd_error = |source| BuildError::Initrd {
        path: path.to_path_buf(),
        source,
    };
    let mut file = open_image("initrd", path)?;
    arch::load_initrd(memory, &mut file, kernel).map_err(initrd_error)
}

fn open_image(what: &'static str, path: &Path) -> Result<File, BuildError> {
    File::open(path).map_err(|source| {
        BuildError::Config(ConfigError::FileUnreadable {
            what,
            path: path.to_path_buf(),
            source,
        })
    })
}

/// The guest command line: the user's, then what the architecture announces
/// there for each virtio device (x86: one `virtio_mmio.device=`, for kernels
/// with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`; arm64: nothing, the FDT
/// describes them). Its length
/// is checked once, where it is written into the guest
/// ([`arch::load_cmdline`]).
fn build_cmdline(user: &str, virtio: &[PlannedDevice]) -> Result<Cmdline, BuildError> {
    let mut cmdline = Cmdline::new(usize::MAX).map_err(BuildError::Cmdline)?;
    cmdline.insert_str(user).map_err(BuildError::Cmdline)?;
    for entry in virtio.iter().filter_map(|d| arch::virtio_cmdline(&d.slot)) {
        cmdline.insert_str(entry).map_err(BuildError::Cmdline)?;
    }
    Ok(cmdline)
}

/// Creates and configures every vCPU; the boot vCPU gets the entry registers.
fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    memory: &GuestMemoryMmap,
    kernel: &KernelImage,
    count: u8,
) -> Result<Vec<VcpuFd>, BuildError> {
    let template = arch::vcpu_template(kvm, vm)
        .map_err(|source| BuildError::ConfigureVcpu { index: 0, source })?;
    (0..count)
        .map(|index| {
            let fd = vm
                .create_vcpu(index.into())
                .map_err(|source| BuildError::CreateVcpu { index, source })?;
            arch::configure_vcpu(&fd, index, count, &template, memory, kernel)
                .map_err(|source| BuildError::ConfigureVcpu { index, source })?;
            Ok(fd)
        })
        .collect()
}
