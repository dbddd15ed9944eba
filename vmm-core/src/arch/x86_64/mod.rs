//! x86_64: memory layout, Linux/PVH boot, MP table, ACPI, CPUID, MSRs,
//! registers.
//!
//! The interface shared code uses (all `pub(crate)`):
//! - [`memory_regions`]: guest RAM regions around the MMIO gap;
//! - [`setup_vm`]: VM-wide KVM setup (TSS, identity map, irqchip, PIT);
//! - [`load_kernel`], [`load_initrd`], [`load_cmdline`]: images into memory;
//! - [`configure_system`]: MP table, ACPI tables and zero page / PVH
//!   start_info;
//! - [`vcpu_template`] ([`supported_cpuid`]), [`configure_vcpu`]: per-vCPU
//!   CPUID, MSRs, registers; [`setup_machine`] has nothing left to do after
//!   them on x86 (the irqchip exists before the vCPUs).
//!
//! One concern per file: `memory` (RAM regions and the RAM map the guest is
//! told about), `kernel` (images into memory), `mptable`, `acpi`,
//! `boot_params` (Linux zero page), `pvh` (hvm_start_info), `cpuid`, `msr`,
//! `gdt`, `paging` and `regs`. The RSDP address reaches the guest through
//! [`BootInfo::rsdp`].

mod acpi;
mod boot_params;
mod cpuid;
mod exits;
mod gdt;
mod kernel;
pub(crate) mod layout;
mod memory;
mod mptable;
mod msr;
mod paging;
mod pvh;
mod regs;

use std::fs::File;

use kvm_bindings::{kvm_pit_config, CpuId, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use linux_loader::cmdline::Cmdline;
use vm_memory::{GuestAddress, GuestMemoryError, GuestMemoryMmap};

pub(crate) use self::cpuid::normalize_cpuid;
pub(crate) use self::exits::{faulting_instruction, shutdown_state};
pub(crate) use self::memory::memory_regions;

/// Errors of the x86_64 boot path.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// The ACPI tables do not fit in the BIOS area.
    #[error("ACPI tables end at {end:#x}, past the end of the BIOS area at {limit:#x}")]
    AcpiTablesDoNotFit {
        /// First address past the tables.
        end: u64,
        /// [`layout::ACPI_TABLES_END`].
        limit: u64,
    },
    /// The boot MSR list does not fit a `kvm_msrs`.
    #[error("failed to build the list of boot MSRs")]
    BuildMsrList(#[source] vmm_sys_util::fam::Error),
    /// The bzImage loader rejected the image.
    #[error("failed to load the bzImage kernel")]
    BzImageLoad(#[source] linux_loader::loader::Error),
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
    /// Writing the command line into guest memory failed.
    #[error("failed to write the kernel command line at guest address {addr:#x}")]
    CmdlineWrite {
        /// Where it was written.
        addr: u64,
        /// Cause.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// `KVM_CREATE_IRQCHIP` failed.
    #[error("failed to create the in-kernel irqchip")]
    CreateIrqChip(#[source] kvm_ioctls::Error),
    /// `KVM_CREATE_PIT2` failed.
    #[error("failed to create the in-kernel PIT")]
    CreatePit(#[source] kvm_ioctls::Error),
    /// The kernel is an ELF for another machine, word size or byte order.
    #[error(
        "kernel image is an ELF for {machine} ({bits}-bit, {endian}-endian), not an x86-64 kernel"
    )]
    ElfNotX86_64 {
        /// The ELF's machine, by name when known.
        machine: String,
        /// 32 or 64 (`EI_CLASS`).
        bits: u8,
        /// "little" or "big" (`EI_DATA`).
        endian: &'static str,
    },
    /// The ELF loader rejected the image.
    #[error("failed to load the ELF kernel")]
    ElfLoad(#[source] linux_loader::loader::Error),
    /// `KVM_GET_LAPIC` failed.
    #[error("failed to read the local APIC state")]
    GetLapic(#[source] kvm_ioctls::Error),
    /// `KVM_GET_SREGS` failed.
    #[error("failed to read the special registers")]
    GetSregs(#[source] kvm_ioctls::Error),
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("failed to get the CPUID entries KVM supports")]
    GetSupportedCpuid(#[source] kvm_ioctls::Error),
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
    /// No room for the initrd between the kernel and the top of low RAM.
    #[error("initrd of {size} bytes does not fit: {available} bytes free between the kernel and the top of low RAM")]
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
    /// The kernel does not fit in low guest memory.
    #[error("kernel ends at {kernel_end:#x}, past the end of low guest memory at {mem_end:#x}")]
    KernelDoesNotFit {
        /// First address past the kernel.
        kernel_end: u64,
        /// First address past low RAM.
        mem_end: u64,
    },
    /// The kernel image header could not be read.
    #[error("failed to read the kernel image header")]
    KernelRead(#[source] std::io::Error),
    /// The MP table for this many vCPUs does not fit in the EBDA.
    #[error(
        "MP table for {num_cpus} vCPUs needs {size} bytes, only {available} fit below 0xa0000"
    )]
    MpTableDoesNotFit {
        /// Requested vCPUs.
        num_cpus: u8,
        /// Bytes the table needs.
        size: usize,
        /// Bytes available at [`layout::MPTABLE_START`].
        available: usize,
    },
    /// A VM needs at least one vCPU.
    #[error("at least one vCPU is required")]
    NoVcpus,
    /// `KVM_SET_CPUID2` failed.
    #[error("failed to set the vCPU's CPUID")]
    SetCpuid(#[source] kvm_ioctls::Error),
    /// `KVM_SET_FPU` failed.
    #[error("failed to set the FPU state")]
    SetFpu(#[source] kvm_ioctls::Error),
    /// `KVM_SET_IDENTITY_MAP_ADDR` failed.
    #[error("failed to set the identity-map page at {addr:#x}")]
    SetIdentityMapAddress {
        /// [`layout::KVM_IDENTITY_MAP_ADDR`].
        addr: u64,
        /// Cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_SET_LAPIC` failed.
    #[error("failed to set the local APIC state")]
    SetLapic(#[source] kvm_ioctls::Error),
    /// `KVM_SET_MSRS` failed.
    #[error("failed to set the boot MSRs")]
    SetMsrs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_MSRS` stopped before the end of the list.
    #[error(
        "only {written} of {requested} boot MSRs were set; MSR {first_rejected:#x} was rejected"
    )]
    SetMsrsIncomplete {
        /// MSRs KVM accepted.
        written: usize,
        /// MSRs asked for.
        requested: usize,
        /// Index of the first MSR KVM refused.
        first_rejected: u32,
    },
    /// `KVM_SET_REGS` failed.
    #[error("failed to set the general-purpose registers")]
    SetRegs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_SREGS` failed.
    #[error("failed to set the special registers")]
    SetSregs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_TSS_ADDR` failed.
    #[error("failed to set the TSS address to {addr:#x}")]
    SetTssAddress {
        /// [`layout::KVM_TSS_ADDR`].
        addr: u64,
        /// Cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The kernel image is in none of the formats we load.
    #[error("kernel image is neither an ELF vmlinux nor a bzImage")]
    UnknownKernelFormat,
}

/// The entry protocol a kernel image is started with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// Linux 64-bit boot protocol: long mode, RSI = zero page.
    Linux64,
    /// PVH: 32-bit protected mode, paging off, RBX = hvm_start_info.
    Pvh,
}

impl std::fmt::Display for BootProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootProtocol::Linux64 => "the Linux 64-bit boot protocol",
            BootProtocol::Pvh => "PVH",
        })
    }
}

/// A kernel image loaded into guest memory.
#[derive(Clone, Debug)]
pub struct KernelImage {
    /// Guest address the boot vCPU starts at.
    pub entry: GuestAddress,
    /// Protocol used to enter the kernel.
    pub protocol: BootProtocol,
    /// First guest address past the loaded kernel.
    pub kernel_end: GuestAddress,
    /// The bzImage setup header, copied into the zero page (None for ELF).
    pub setup_header: Option<linux_loader::loader::bootparam::setup_header>,
}

/// Where the initrd was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdRegion {
    /// Guest physical address of the first byte.
    pub addr: GuestAddress,
    /// Size in bytes.
    pub size: usize,
}

/// What the boot structures (zero page, hvm_start_info) point the guest at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BootInfo {
    /// Command line size in bytes, NUL included (it lives at
    /// [`layout::CMDLINE_START`]).
    pub cmdline_size: usize,
    /// The initrd, if any.
    pub initrd: Option<InitrdRegion>,
    /// ACPI RSDP, when ACPI tables are written.
    pub rsdp: Option<GuestAddress>,
}

/// VM-wide setup before vCPUs exist: TSS and identity-map addresses, the
/// in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT.
pub(crate) fn setup_vm(vm: &VmFd) -> Result<(), ArchError> {
    // KVM needs these pages (unused by the guest, inside the MMIO gap) for
    // real-mode emulation on Intel; set them explicitly rather than let KVM
    // pick addresses that may collide with guest memory.
    vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
        .map_err(|source| ArchError::SetIdentityMapAddress {
            addr: layout::KVM_IDENTITY_MAP_ADDR,
            source,
        })?;
    vm.set_tss_address(layout::KVM_TSS_ADDR as usize)
        .map_err(|source| ArchError::SetTssAddress {
            addr: layout::KVM_TSS_ADDR,
            source,
        })?;
    vm.create_irq_chip().map_err(ArchError::CreateIrqChip)?;
    // The dummy speaker port keeps guests that beep from exiting to us.
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(ArchError::CreatePit)
}

/// What every vCPU is configured from: the CPUID KVM supports.
pub(crate) type VcpuTemplate = CpuId;

/// What the boot structures describe beyond memory and images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Machine {
    /// Number of vCPUs.
    pub num_cpus: u8,
}

/// Every layout fits any x86-64 host: nothing to check.
pub(crate) fn check_guest_fits(_kvm: &Kvm, _mem_size: u64) -> Result<(), ArchError> {
    Ok(())
}

/// The `virtio_mmio.device=` entry for a device, for kernels with
/// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` (the DSDT describes it as well).
pub(crate) fn virtio_cmdline(slot: &crate::resources::DeviceSlot) -> Option<String> {
    Some(slot.cmdline())
}

/// [`supported_cpuid`], under the name shared code uses.
pub(crate) fn vcpu_template(kvm: &Kvm, _vm: &VmFd) -> Result<VcpuTemplate, ArchError> {
    supported_cpuid(kvm)
}

/// After the vCPUs: nothing to create (the irqchip came with `setup_vm`).
pub(crate) fn setup_machine(_vm: &VmFd, vcpus: &[VcpuFd]) -> Result<Machine, ArchError> {
    Ok(Machine {
        num_cpus: u8::try_from(vcpus.len()).map_err(|_| ArchError::NoVcpus)?,
    })
}

/// Loads an ELF vmlinux (PVH entry if it has the PVH note) or a bzImage.
pub(crate) fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: &mut File,
) -> Result<KernelImage, ArchError> {
    kernel::load_kernel(mem, kernel)
}

/// Places the initrd page-aligned at the top of low RAM, above the kernel.
pub(crate) fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &mut File,
    kernel: &KernelImage,
) -> Result<InitrdRegion, ArchError> {
    kernel::load_initrd(mem, initrd, kernel)
}

/// Writes the command line at `layout::CMDLINE_START`.
pub(crate) fn load_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<(), ArchError> {
    kernel::load_cmdline(mem, cmdline)
}

/// Writes the MP table (for kernels without ACPI), the ACPI tables, and the
/// zero page (Linux64) or start_info (PVH) pointing at them.
pub(crate) fn configure_system(
    mem: &GuestMemoryMmap,
    kernel: &KernelImage,
    cmdline: &Cmdline,
    initrd: Option<InitrdRegion>,
    machine: &Machine,
    virtio: &[crate::resources::DeviceSlot],
) -> Result<(), ArchError> {
    let num_cpus = machine.num_cpus;
    mptable::setup_mptable(mem, num_cpus)?;
    let rsdp = acpi::setup_acpi(mem, num_cpus, virtio)?;
    let info = BootInfo {
        cmdline_size: kernel::cmdline_size(cmdline)?,
        initrd,
        rsdp: Some(rsdp),
    };
    let ram = memory::ram_ranges(mem);
    match kernel.protocol {
        BootProtocol::Linux64 => {
            boot_params::write_boot_params(mem, kernel.setup_header.as_ref(), &info, &ram)
        }
        BootProtocol::Pvh => pvh::write_start_info(mem, &info, &ram),
    }
}

/// The CPUID entries KVM supports on this host (input to `configure_vcpu`).
pub(crate) fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, ArchError> {
    kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(ArchError::GetSupportedCpuid)
}

/// Configures one vCPU: normalized CPUID, boot MSRs, FPU, LAPIC LINT pins,
/// and for the boot vCPU (id 0) the registers that enter the kernel.
///
/// Application processors keep their reset registers: they start when the
/// guest sends them INIT/SIPI.
pub(crate) fn configure_vcpu(
    vcpu: &VcpuFd,
    id: u8,
    num_cpus: u8,
    supported_cpuid: &CpuId,
    mem: &GuestMemoryMmap,
    kernel: &KernelImage,
) -> Result<(), ArchError> {
    let mut cpuid = supported_cpuid.clone();
    normalize_cpuid(&mut cpuid, id, num_cpus);
    vcpu.set_cpuid2(&cpuid).map_err(ArchError::SetCpuid)?;
    msr::setup_boot_msrs(vcpu)?;
    regs::setup_fpu(vcpu)?;
    regs::setup_lint(vcpu)?;
    if id == 0 {
        regs::setup_sregs(mem, vcpu, kernel.protocol)?;
        regs::setup_regs(vcpu, kernel)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kvm_bindings::{kvm_msr_entry, Msrs};
    use kvm_ioctls::Kvm;
    use vm_memory::Bytes;

    use super::layout::{MPTABLE_START, PML4_START, PVH_INFO_START, ZERO_PAGE_START};
    use super::*;

    const MIB: u64 = 1 << 20;

    fn kernel(protocol: BootProtocol) -> KernelImage {
        KernelImage {
            entry: GuestAddress(0x100_0000),
            protocol,
            kernel_end: GuestAddress(0x110_0000),
            setup_header: None,
        }
    }

    /// A VM set up by `setup_vm`, with `num_cpus` vCPUs and 64 MiB of RAM
    /// (not registered with KVM: these tests never run the vCPUs).
    fn vm_with_vcpus(num_cpus: u8) -> (Kvm, VmFd, Vec<VcpuFd>, GuestMemoryMmap) {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        setup_vm(&vm).unwrap();
        let vcpus = (0..num_cpus)
            .map(|id| vm.create_vcpu(u64::from(id)).unwrap())
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&memory_regions(64 * MIB)).unwrap();
        (kvm, vm, vcpus, mem)
    }

    #[test]
    fn setup_vm_creates_irqchip_and_pit() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        setup_vm(&vm).unwrap();
        // The irqchip exists: a second one is refused.
        assert!(vm.create_irq_chip().is_err());
        // The PIT exists: its state can be read.
        vm.get_pit2().unwrap();
    }

    #[test]
    fn configure_vcpu_linux64_bsp_and_ap() {
        let (kvm, _vm, vcpus, mem) = vm_with_vcpus(2);
        let supported = supported_cpuid(&kvm).unwrap();
        let kernel = kernel(BootProtocol::Linux64);
        for (id, vcpu) in vcpus.iter().enumerate() {
            configure_vcpu(vcpu, id as u8, 2, &supported, &mem, &kernel).unwrap();
        }

        // BSP: registers enter the kernel in long mode.
        let regs = vcpus[0].get_regs().unwrap();
        assert_eq!(regs.rip, 0x100_0000);
        assert_eq!(regs.rsi, ZERO_PAGE_START);
        assert_eq!(regs.rflags, 0x2);
        let sregs = vcpus[0].get_sregs().unwrap();
        assert_eq!((sregs.cs.selector, sregs.cs.l), (0x08, 1));
        assert_eq!(sregs.cr3, PML4_START);
        assert_eq!(sregs.cr0 & 0x8000_0001, 0x8000_0001);
        assert_eq!(sregs.efer & 0x500, 0x500);

        // AP: still at the reset vector, waiting for INIT/SIPI.
        let ap = vcpus[1].get_sregs().unwrap();
        assert_eq!(ap.cs.selector, 0xf000);
        assert_eq!(ap.cr0 & 1, 0);
        assert_eq!(vcpus[1].get_regs().unwrap().rip, 0xfff0);

        for (id, vcpu) in vcpus.iter().enumerate() {
            // CPUID: each vCPU has its own APIC id.
            let cpuid = vcpu
                .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
                .unwrap();
            let leaf1 = cpuid.as_slice().iter().find(|e| e.function == 1).unwrap();
            assert_eq!(leaf1.ebx >> 24, id as u32);
            assert_ne!(leaf1.ecx & (1 << 31), 0);

            // MSRs read back as set.
            let wanted = msr::boot_msr_entries();
            let mut msrs = Msrs::from_entries(
                &wanted
                    .iter()
                    .map(|e| kvm_msr_entry {
                        index: e.index,
                        ..Default::default()
                    })
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            assert_eq!(vcpu.get_msrs(&mut msrs).unwrap(), wanted.len());
            for (got, want) in msrs.as_slice().iter().zip(&wanted) {
                // The TSC has moved on since it was zeroed.
                if want.index != 0x10 {
                    assert_eq!(got.data, want.data, "MSR {:#x}", want.index);
                }
            }

            // FPU and LAPIC LINT pins.
            assert_eq!(vcpu.get_fpu().unwrap().fcw, 0x37f);
            // MXCSR is read from the XSAVE area (legacy region, bytes 24..28):
            // KVM_GET_FPU reports it as 0 on some hosts (this CI's kvm_pvm).
            assert_eq!(vcpu.get_xsave().unwrap().region[6], 0x1f80);
            let lapic = vcpu.get_lapic().unwrap();
            let reg = |offset: usize| {
                u32::from_le_bytes(std::array::from_fn(|i| lapic.regs[offset + i] as u8))
            };
            assert_eq!((reg(0x350) >> 8) & 0x7, 0x7, "LINT0 ExtINT");
            assert_eq!((reg(0x360) >> 8) & 0x7, 0x4, "LINT1 NMI");
        }
    }

    #[test]
    fn configure_vcpu_pvh_bsp() {
        let (kvm, _vm, vcpus, mem) = vm_with_vcpus(1);
        let supported = supported_cpuid(&kvm).unwrap();
        configure_vcpu(
            &vcpus[0],
            0,
            1,
            &supported,
            &mem,
            &kernel(BootProtocol::Pvh),
        )
        .unwrap();
        let regs = vcpus[0].get_regs().unwrap();
        assert_eq!(
            (regs.rip, regs.rbx, regs.rflags),
            (0x100_0000, PVH_INFO_START, 0x2)
        );
        let sregs = vcpus[0].get_sregs().unwrap();
        assert_eq!(sregs.cr0 & 0x8000_0001, 0x1, "protected mode, paging off");
        assert_eq!((sregs.cr4, sregs.efer), (0, 0));
        assert_eq!(
            (sregs.cs.db, sregs.cs.l, sregs.cs.limit),
            (1, 0, 0xffff_ffff)
        );
    }

    #[test]
    fn configure_system_writes_mptable_and_boot_structures() {
        let mem = GuestMemoryMmap::from_ranges(&memory_regions(64 * MIB)).unwrap();
        let mut cmdline = Cmdline::new(layout::CMDLINE_MAX_SIZE).unwrap();
        cmdline.insert_str("console=ttyS0").unwrap();
        let initrd = Some(InitrdRegion {
            addr: GuestAddress(0x3ff_f000),
            size: 0x800,
        });
        configure_system(
            &mem,
            &kernel(BootProtocol::Linux64),
            &cmdline,
            initrd,
            &Machine { num_cpus: 4 },
            &[],
        )
        .unwrap();
        let mut signature = [0u8; 4];
        mem.read_slice(&mut signature, GuestAddress(MPTABLE_START))
            .unwrap();
        assert_eq!(&signature, b"_MP_");
        let params: linux_loader::loader::bootparam::boot_params =
            mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ params.hdr.cmdline_size }, 14);
        assert_eq!({ params.hdr.ramdisk_image }, 0x3ff_f000);
        assert_eq!({ params.acpi_rsdp_addr }, layout::ACPI_RSDP_ADDR);
        let mut rsdp = [0u8; 8];
        mem.read_slice(&mut rsdp, GuestAddress(layout::ACPI_RSDP_ADDR))
            .unwrap();
        assert_eq!(&rsdp, b"RSD PTR ");

        let one = Machine { num_cpus: 1 };
        configure_system(&mem, &kernel(BootProtocol::Pvh), &cmdline, None, &one, &[]).unwrap();
        let start_info: linux_loader::loader::elf::start_info::hvm_start_info =
            mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(start_info.magic, 0x336e_c578);
        assert_eq!(start_info.rsdp_paddr, layout::ACPI_RSDP_ADDR);
    }

    #[test]
    fn error_messages_name_the_input() {
        let e = ArchError::InitrdDoesNotFit {
            size: 0x2000,
            available: 0x1000,
        };
        assert_eq!(
            e.to_string(),
            "initrd of 8192 bytes does not fit: 4096 bytes free between the kernel and the top of low RAM"
        );
        let e = ArchError::KernelDoesNotFit {
            kernel_end: 0x200_0000,
            mem_end: 0x100_0000,
        };
        assert!(e.to_string().contains("0x2000000"));
        assert!(e.to_string().contains("0x1000000"));
    }
}
