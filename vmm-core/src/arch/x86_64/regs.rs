//! vCPU register state at boot: FPU and LAPIC LINT pins for every vCPU; for
//! the boot vCPU the general-purpose and special registers that enter the
//! kernel (64-bit long mode for Linux64, flat 32-bit protected mode for PVH).

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use super::gdt::{self, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use super::layout::{BOOT_STACK_POINTER, PVH_INFO_START, ZERO_PAGE_START};
use super::paging::setup_identity_page_tables;
use super::{ArchError, BootProtocol, KernelImage};

/// x87 control word after FNINIT: all exceptions masked, 64-bit precision.
const FPU_CONTROL_WORD: u16 = 0x37f;
/// MXCSR at reset: all SSE exceptions masked.
const MXCSR_DEFAULT: u32 = 0x1f80;

/// RFLAGS bit 1 is reserved and always reads as 1.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// CR0.PE: protected mode.
const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type, hard-wired to 1 on modern CPUs.
const CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension, required for long mode.
const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active (KVM wants it set along with CR0.PG).
const EFER_LMA: u64 = 1 << 10;

/// Local APIC LVT LINT0 register offset.
const APIC_LVT_LINT0: usize = 0x350;
/// Local APIC LVT LINT1 register offset.
const APIC_LVT_LINT1: usize = 0x360;
/// LVT delivery mode field, bits 10:8.
const APIC_DELIVERY_MODE_SHIFT: u32 = 8;
/// See [`APIC_DELIVERY_MODE_SHIFT`].
const APIC_DELIVERY_MODE_MASK: u32 = 0x7 << APIC_DELIVERY_MODE_SHIFT;
/// Delivery mode NMI.
const APIC_MODE_NMI: u32 = 0x4;
/// Delivery mode ExtINT: the 8259 PIC's interrupts come in through LINT0.
const APIC_MODE_EXTINT: u32 = 0x7;

/// Sets the x87/SSE control state a kernel expects after FNINIT.
pub(super) fn setup_fpu(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let fpu = kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(ArchError::SetFpu)
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as std::os::raw::c_char;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !APIC_DELIVERY_MODE_MASK) | (mode << APIC_DELIVERY_MODE_SHIFT)
}

/// Wires LINT0 to ExtINT (the PIC, virtual-wire mode) and LINT1 to NMI, as
/// the MP table says.
pub(super) fn setup_lint(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let mut lapic = vcpu.get_lapic().map_err(ArchError::GetLapic)?;
    let lint0 = lapic_reg(&lapic, APIC_LVT_LINT0);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT_LINT0,
        with_delivery_mode(lint0, APIC_MODE_EXTINT),
    );
    let lint1 = lapic_reg(&lapic, APIC_LVT_LINT1);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT_LINT1,
        with_delivery_mode(lint1, APIC_MODE_NMI),
    );
    vcpu.set_lapic(&lapic).map_err(ArchError::SetLapic)
}

/// The general-purpose registers that enter `kernel`.
pub(super) fn boot_regs(kernel: &KernelImage) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: kernel.entry.0,
        ..Default::default()
    };
    match kernel.protocol {
        BootProtocol::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
        BootProtocol::Pvh => regs.rbx = PVH_INFO_START,
    }
    regs
}

pub(super) fn setup_regs(vcpu: &VcpuFd, kernel: &KernelImage) -> Result<(), ArchError> {
    vcpu.set_regs(&boot_regs(kernel))
        .map_err(ArchError::SetRegs)
}

/// Writes the GDT/IDT (and, for Linux64, the page tables) and fills `sregs`
/// to match: segments from the GDT, control registers for the protocol.
pub(super) fn boot_sregs(
    mem: &GuestMemoryMmap,
    sregs: &mut kvm_sregs,
    protocol: BootProtocol,
) -> Result<(), ArchError> {
    let gdt = gdt::boot_gdt(protocol);
    let tables = gdt::write_tables(mem, &gdt)?;
    (sregs.gdt.base, sregs.gdt.limit) = tables.gdt;
    (sregs.idt.base, sregs.idt.limit) = tables.idt;

    let code = gdt::segment_from_gdt(gdt[CODE_INDEX], CODE_INDEX);
    let data = gdt::segment_from_gdt(gdt[DATA_INDEX], DATA_INDEX);
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = gdt::segment_from_gdt(gdt[TSS_INDEX], TSS_INDEX);

    match protocol {
        BootProtocol::Linux64 => {
            sregs.cr3 = setup_identity_page_tables(mem)?;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        BootProtocol::Pvh => {
            // PVH: protected mode, paging off.
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(())
}

/// Sets the boot vCPU's special registers, starting from KVM's reset state
/// (which keeps e.g. the APIC base).
pub(super) fn setup_sregs(
    mem: &GuestMemoryMmap,
    vcpu: &VcpuFd,
    protocol: BootProtocol,
) -> Result<(), ArchError> {
    let mut sregs = vcpu.get_sregs().map_err(ArchError::GetSregs)?;
    boot_sregs(mem, &mut sregs, protocol)?;
    vcpu.set_sregs(&sregs).map_err(ArchError::SetSregs)
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestAddress;

    use super::super::layout::PML4_START;
    use super::super::memory::tests::guest_memory;
    use super::*;

    fn kernel(protocol: BootProtocol) -> KernelImage {
        KernelImage {
            entry: GuestAddress(0x100_0000),
            protocol,
            kernel_end: GuestAddress(0x200_0000),
            setup_header: None,
        }
    }

    #[test]
    fn linux64_regs() {
        let regs = boot_regs(&kernel(BootProtocol::Linux64));
        assert_eq!(regs.rip, 0x100_0000);
        assert_eq!(regs.rflags, 0x2);
        assert_eq!(
            (regs.rsp, regs.rbp),
            (BOOT_STACK_POINTER, BOOT_STACK_POINTER)
        );
        assert_eq!(regs.rsi, ZERO_PAGE_START);
    }

    #[test]
    fn pvh_regs() {
        let regs = boot_regs(&kernel(BootProtocol::Pvh));
        assert_eq!(regs.rip, 0x100_0000);
        assert_eq!(regs.rflags, 0x2);
        assert_eq!(regs.rbx, PVH_INFO_START);
        assert_eq!(regs.rsi, 0);
    }

    #[test]
    fn linux64_sregs_enter_long_mode() {
        let mem = guest_memory(1 << 20);
        let mut sregs = kvm_sregs::default();
        boot_sregs(&mem, &mut sregs, BootProtocol::Linux64).unwrap();
        assert_eq!((sregs.cs.selector, sregs.cs.l), (0x08, 1));
        assert_eq!(sregs.ss.selector, 0x10);
        assert_eq!(sregs.tr.selector, 0x18);
        assert_eq!(sregs.cr0, 0x8000_0011);
        assert_eq!(sregs.cr3, PML4_START);
        assert_eq!(sregs.cr4, 0x20);
        assert_eq!(sregs.efer, 0x500);
    }

    #[test]
    fn pvh_sregs_enter_flat_protected_mode() {
        let mem = guest_memory(1 << 20);
        let mut sregs = kvm_sregs::default();
        boot_sregs(&mem, &mut sregs, BootProtocol::Pvh).unwrap();
        assert_eq!((sregs.cs.selector, sregs.cs.db, sregs.cs.l), (0x08, 1, 0));
        assert_eq!((sregs.cs.base, sregs.cs.limit), (0, 0xffff_ffff));
        assert_eq!((sregs.ds.selector, sregs.ds.limit), (0x10, 0xffff_ffff));
        assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!((sregs.cr4, sregs.efer), (0, 0));
    }

    #[test]
    fn lint_delivery_modes() {
        let mut lapic = kvm_lapic_state::default();
        // Masked, edge, some vector: only the delivery mode changes.
        set_lapic_reg(&mut lapic, APIC_LVT_LINT0, 0x0001_0030);
        let lint0 = with_delivery_mode(lapic_reg(&lapic, APIC_LVT_LINT0), APIC_MODE_EXTINT);
        assert_eq!(lint0, 0x0001_0730);
        assert_eq!(with_delivery_mode(0x0001_0700, APIC_MODE_NMI), 0x0001_0400);
    }
}
