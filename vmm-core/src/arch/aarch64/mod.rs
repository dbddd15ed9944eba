//! aarch64: memory layout, arm64 `Image` boot, vGIC, FDT, vCPU registers.
//!
//! The interface shared code uses is the one `arch` documents; on arm64:
//! - [`memory_regions`]: one RAM region from [`layout::DRAM_START`];
//! - [`check_guest_fits`]: RAM must end below the host's IPA limit;
//! - [`load_kernel`], [`load_initrd`]: the Image 2 MiB-aligned (+ its
//!   `text_offset`) above the FDT, the initrd at the top of RAM;
//!   [`load_cmdline`] only checks the length (the command line goes into
//!   the FDT's `/chosen`);
//! - [`setup_vm`]: nothing before the vCPUs (the GIC needs them);
//! - [`vcpu_template`], [`configure_vcpu`]: `KVM_ARM_PREFERRED_TARGET`,
//!   `KVM_ARM_VCPU_INIT` with PSCI 0.2 (secondaries powered off, started by
//!   the guest's PSCI CPU_ON, which KVM handles), boot registers;
//! - [`setup_machine`]: the vGIC (v3 with its ITS when KVM has them, else
//!   v2), initialised before the first `KVM_RUN`; the vCPUs' MPIDRs;
//! - [`configure_system`]: the FDT at [`layout::FDT_ADDR`].
//!
//! PSCI SYSTEM_OFF and SYSTEM_RESET come back as `KVM_EXIT_SYSTEM_EVENT`,
//! which the vCPU loop maps to power-off and reset; a guest panic is
//! reported through pvpanic on MMIO.
//!
//! One concern per file: `layout`, `image` (Image header and loading),
//! `regs` (register ids, vCPU init, boot registers, MPIDR), `gic`, `fdt`,
//! `exits`.

mod exits;
mod fdt;
mod gic;
mod image;
pub(crate) mod layout;
mod regs;

use std::fs::File;

use kvm_bindings::kvm_vcpu_init;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use linux_loader::cmdline::Cmdline;
use vm_memory::{GuestAddress, GuestMemoryError, GuestMemoryMmap};

pub(crate) use self::exits::{faulting_instruction, shutdown_state};
pub(crate) use self::gic::GicVersion;

/// Errors of the aarch64 boot path.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// The command line cannot be turned into a C string.
    #[error("invalid kernel command line")]
    CmdlineInvalid(#[source] linux_loader::cmdline::Error),
    /// The command line (with what devices appended) is longer than the
    /// guest accepts. The one place this limit is checked.
    #[error("kernel command line is {len} bytes; at most {max} fit")]
    CmdlineTooLong {
        /// Its length, without the terminating NUL.
        len: usize,
        /// [`layout::CMDLINE_MAX_SIZE`] less the NUL.
        max: usize,
    },
    /// `KVM_CREATE_DEVICE` for the vGIC failed, for v3 and for v2.
    #[error("cannot create a vGIC: GICv3: {v3}; GICv2: {v2}")]
    CreateGic {
        /// Why GICv3 failed.
        v3: kvm_ioctls::Error,
        /// Why GICv2 failed.
        v2: kvm_ioctls::Error,
    },
    /// The FDT could not be built.
    #[error("cannot build the device tree: {0}")]
    Fdt(#[source] vm_fdt::Error),
    /// The FDT is larger than the room the layout gives it.
    #[error("the device tree is {size} bytes; at most {max} fit")]
    FdtTooLarge {
        /// Its size.
        size: usize,
        /// [`layout::FDT_MAX_SIZE`].
        max: u64,
    },
    /// A vGIC attribute could not be set.
    #[error("cannot set vGIC attribute {what}: {source}")]
    GicAttribute {
        /// Which attribute.
        what: &'static str,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_GET_ONE_REG` failed.
    #[error("cannot read vCPU register {reg:#x}: {source}")]
    GetRegister {
        /// The register id.
        reg: u64,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A boot structure could not be written into guest memory.
    #[error("failed to write the {what} at guest address {addr:#x}")]
    GuestMemory {
        /// Which structure.
        what: &'static str,
        /// Where it was written.
        addr: u64,
        /// Cause.
        #[source]
        source: GuestMemoryError,
    },
    /// The Image header is not an arm64 Image's.
    #[error("kernel image is not an arm64 Image: {0}")]
    ImageHeader(&'static str),
    /// The Image loader rejected the image.
    #[error("failed to load the arm64 Image kernel")]
    ImageLoad(#[source] linux_loader::loader::Error),
    /// No room for the initrd between the kernel and the end of RAM.
    #[error("initrd of {size} bytes does not fit: {available} bytes free between the kernel and the end of RAM")]
    InitrdDoesNotFit {
        /// Size of the initrd.
        size: u64,
        /// Bytes free for it.
        available: u64,
    },
    /// Reading the initrd into guest memory failed.
    #[error("failed to read the initrd ({size} bytes) into guest memory at {addr:#x}")]
    InitrdRead {
        /// Where it was going.
        addr: u64,
        /// Its size.
        size: u64,
        /// Cause.
        #[source]
        source: GuestMemoryError,
    },
    /// The initrd file size could not be determined.
    #[error("failed to get the initrd size")]
    InitrdSize(#[source] std::io::Error),
    /// The guest's RAM ends beyond what the host's stage-2 tables address.
    #[error("guest RAM ends at {ram_end:#x}, beyond the host's {ipa_bits}-bit guest physical address space")]
    IpaTooSmall {
        /// First address past RAM.
        ram_end: u64,
        /// The host's IPA limit.
        ipa_bits: u32,
    },
    /// The kernel (its whole `image_size`) does not fit in RAM.
    #[error("kernel ends at {kernel_end:#x}, past the end of RAM at {mem_end:#x}")]
    KernelDoesNotFit {
        /// First address past the kernel.
        kernel_end: u64,
        /// First address past RAM.
        mem_end: u64,
    },
    /// The kernel image header could not be read.
    #[error("failed to read the kernel image header")]
    KernelRead(#[source] std::io::Error),
    /// A VM needs at least one vCPU.
    #[error("at least one vCPU is required")]
    NoVcpus,
    /// `KVM_ARM_PREFERRED_TARGET` failed.
    #[error("KVM_ARM_PREFERRED_TARGET failed")]
    PreferredTarget(#[source] kvm_ioctls::Error),
    /// `KVM_SET_ONE_REG` failed.
    #[error("cannot set vCPU register {reg:#x}: {source}")]
    SetRegister {
        /// The register id.
        reg: u64,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_ARM_VCPU_INIT` failed.
    #[error("KVM_ARM_VCPU_INIT failed")]
    VcpuInit(#[source] kvm_ioctls::Error),
}

/// The entry protocol a kernel image is started with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// The arm64 Linux boot protocol: an `Image`, MMU off, x0 = FDT.
    Arm64Image,
}

impl std::fmt::Display for BootProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootProtocol::Arm64Image => "the arm64 Image boot protocol",
        })
    }
}

/// A kernel image loaded into guest memory.
#[derive(Clone, Debug)]
pub struct KernelImage {
    /// Guest address the boot vCPU starts at (the Image's first byte).
    pub entry: GuestAddress,
    /// Protocol used to enter the kernel.
    pub protocol: BootProtocol,
    /// First guest address past the kernel, its BSS included
    /// (`image_size`): nothing else may be placed below it.
    pub kernel_end: GuestAddress,
}

/// Where the initrd was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdRegion {
    /// Guest physical address of the first byte.
    pub addr: GuestAddress,
    /// Size in bytes.
    pub size: usize,
}

/// What every vCPU is configured from: KVM's preferred target, with the
/// features mercury asks for.
pub(crate) type VcpuTemplate = kvm_vcpu_init;

/// What the FDT describes beyond memory, images and devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Machine {
    /// Each vCPU's MPIDR_EL1, read back from KVM, by vCPU index.
    pub mpidrs: Vec<u64>,
    /// The interrupt controller KVM gave the VM.
    pub gic: GicVersion,
}

/// Guest RAM: one region of `mem_size` bytes from [`layout::DRAM_START`].
pub(crate) fn memory_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size == 0 {
        return Vec::new();
    }
    vec![(GuestAddress(layout::DRAM_START), mem_size as usize)]
}

/// Refuses RAM that ends beyond the host's IPA limit (the VM is created
/// with that limit: `Kvm::create_vm` asks for it on arm64).
pub(crate) fn check_guest_fits(kvm: &Kvm, mem_size: u64) -> Result<(), ArchError> {
    // Hosts without KVM_CAP_ARM_VM_IPA_SIZE have the architectural 40 bits.
    let ipa_bits = match kvm.get_host_ipa_limit() {
        bits if bits > 0 => bits as u32,
        _ => 40,
    };
    check_ipa(mem_size, ipa_bits)
}

fn check_ipa(mem_size: u64, ipa_bits: u32) -> Result<(), ArchError> {
    let ram_end = layout::DRAM_START.saturating_add(mem_size);
    let limit = 1u64.checked_shl(ipa_bits).unwrap_or(u64::MAX);
    if ipa_bits < layout::MIN_IPA_BITS || ram_end > limit {
        return Err(ArchError::IpaTooSmall { ram_end, ipa_bits });
    }
    Ok(())
}

/// Nothing is announced on the command line: the FDT describes every
/// virtio device.
pub(crate) fn virtio_cmdline(_slot: &crate::resources::DeviceSlot) -> Option<String> {
    None
}

/// Nothing to set up before the vCPUs exist: the vGIC is created after them
/// ([`setup_machine`]).
pub(crate) fn setup_vm(_vm: &VmFd) -> Result<(), ArchError> {
    Ok(())
}

/// Loads an arm64 `Image`.
pub(crate) fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: &mut File,
) -> Result<KernelImage, ArchError> {
    image::load_kernel(mem, kernel)
}

/// Places the initrd page-aligned at the top of RAM, above the kernel.
pub(crate) fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &mut File,
    kernel: &KernelImage,
) -> Result<InitrdRegion, ArchError> {
    image::load_initrd(mem, initrd, kernel)
}

/// Checks that the command line fits; it reaches the guest in the FDT.
pub(crate) fn load_cmdline(_mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<(), ArchError> {
    image::cmdline_bytes(cmdline).map(|_| ())
}

/// KVM's preferred vCPU target with PSCI 0.2 (for SYSTEM_OFF/RESET and
/// CPU_ON).
pub(crate) fn vcpu_template(_kvm: &Kvm, vm: &VmFd) -> Result<VcpuTemplate, ArchError> {
    regs::vcpu_template(vm)
}

/// Initialises one vCPU (secondaries powered off until PSCI CPU_ON) and
/// gives the boot vCPU the registers that enter the kernel.
pub(crate) fn configure_vcpu(
    vcpu: &VcpuFd,
    id: u8,
    _num_cpus: u8,
    template: &VcpuTemplate,
    _mem: &GuestMemoryMmap,
    kernel: &KernelImage,
) -> Result<(), ArchError> {
    regs::init_vcpu(vcpu, id, template)?;
    if id == 0 {
        regs::setup_boot_regs(vcpu, kernel.entry.0, layout::FDT_ADDR)?;
    }
    Ok(())
}

/// After every vCPU is initialised: creates and initialises the vGIC and
/// reads back the MPIDRs the FDT lists.
pub(crate) fn setup_machine(vm: &VmFd, vcpus: &[VcpuFd]) -> Result<Machine, ArchError> {
    if vcpus.is_empty() {
        return Err(ArchError::NoVcpus);
    }
    let gic = gic::create_gic(vm)?;
    let mpidrs = vcpus
        .iter()
        .map(regs::read_mpidr)
        .collect::<Result<_, _>>()?;
    Ok(Machine { mpidrs, gic })
}

/// Writes the FDT describing the machine, its memory and devices, the
/// command line and the initrd.
pub(crate) fn configure_system(
    mem: &GuestMemoryMmap,
    _kernel: &KernelImage,
    cmdline: &Cmdline,
    initrd: Option<InitrdRegion>,
    machine: &Machine,
    virtio: &[crate::resources::DeviceSlot],
) -> Result<(), ArchError> {
    let bootargs = image::cmdline_bytes(cmdline)?;
    let dtb = fdt::create_fdt(mem, &bootargs, initrd, machine, virtio)?;
    fdt::write_fdt(mem, &dtb)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn ram_is_one_region_from_dram_start() {
        assert_eq!(
            memory_regions(128 * MIB),
            vec![(GuestAddress(0x8000_0000), (128 * MIB) as usize)]
        );
        assert!(memory_regions(0).is_empty());
    }

    #[test]
    fn ram_must_end_below_the_ipa_limit() {
        check_ipa(4 * GIB, 40).unwrap();
        // 1 TiB of IPA space: RAM from 2 GiB may take 1022 GiB.
        check_ipa(1022 * GIB, 40).unwrap();
        let e = check_ipa(1023 * GIB, 40).unwrap_err();
        assert_eq!(
            e.to_string(),
            "guest RAM ends at 0x10040000000, beyond the host's 40-bit guest physical address space"
        );
        // A 32-bit IPA space holds RAM only up to 4 GiB.
        check_ipa(2 * GIB, 32).unwrap();
        assert!(check_ipa(2 * GIB + 1, 32).is_err());
        assert!(check_ipa(MIB, 31).is_err());
    }
}
