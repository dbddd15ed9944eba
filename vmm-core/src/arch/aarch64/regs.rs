//! vCPU initialisation and registers: `KVM_ARM_VCPU_INIT`, the boot
//! registers the arm64 boot protocol asks for, and MPIDR_EL1 read back.
//!
//! Registers are reached with `KVM_{GET,SET}_ONE_REG`; a core register's id
//! is its offset in `struct kvm_regs` in 32-bit words, a system register's
//! its (op0, op1, CRn, CRm, op2) encoding.

use std::mem::offset_of;

use kvm_bindings::{
    kvm_regs, kvm_vcpu_init, user_pt_regs, KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2,
    KVM_REG_ARM64, KVM_REG_ARM64_SYSREG, KVM_REG_ARM64_SYSREG_CRM_SHIFT,
    KVM_REG_ARM64_SYSREG_CRN_SHIFT, KVM_REG_ARM64_SYSREG_OP0_SHIFT, KVM_REG_ARM64_SYSREG_OP1_SHIFT,
    KVM_REG_ARM64_SYSREG_OP2_SHIFT, KVM_REG_ARM_CORE, KVM_REG_SIZE_U64,
};
use kvm_ioctls::{VcpuFd, VmFd};

use super::ArchError;

/// PSTATE at entry: EL1 with SP_EL1 (EL1h), debug, SError, IRQ and FIQ
/// masked, as the arm64 boot protocol requires.
pub(crate) const BOOT_PSTATE: u64 = PSR_MODE_EL1H | PSR_D | PSR_A | PSR_I | PSR_F;
const PSR_MODE_EL1H: u64 = 0x5;
const PSR_F: u64 = 1 << 6;
const PSR_I: u64 = 1 << 7;
const PSR_A: u64 = 1 << 8;
const PSR_D: u64 = 1 << 9;

/// The affinity fields of MPIDR_EL1 (Aff3 in bits 32..40, Aff2..Aff0 in
/// bits 0..24): what a `cpu` node's `reg` holds.
pub(crate) const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// The id of a 64-bit core register at byte `offset` in `kvm_regs`.
pub(crate) const fn core_reg(offset: usize) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (offset / 4) as u64
}

/// The id of general-purpose register `xn`.
pub(crate) const fn x_reg(n: usize) -> u64 {
    core_reg(offset_of!(kvm_regs, regs) + offset_of!(user_pt_regs, regs) + n * 8)
}

/// The id of the program counter.
pub(crate) const PC: u64 = core_reg(offset_of!(kvm_regs, regs) + offset_of!(user_pt_regs, pc));
/// The id of PSTATE.
pub(crate) const PSTATE: u64 =
    core_reg(offset_of!(kvm_regs, regs) + offset_of!(user_pt_regs, pstate));

/// The id of a 64-bit system register.
pub(crate) const fn sys_reg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | KVM_REG_ARM64_SYSREG as u64
        | (op0 << KVM_REG_ARM64_SYSREG_OP0_SHIFT)
        | (op1 << KVM_REG_ARM64_SYSREG_OP1_SHIFT)
        | (crn << KVM_REG_ARM64_SYSREG_CRN_SHIFT)
        | (crm << KVM_REG_ARM64_SYSREG_CRM_SHIFT)
        | (op2 << KVM_REG_ARM64_SYSREG_OP2_SHIFT)
}

/// MPIDR_EL1: S3_0_C0_C0_5.
pub(crate) const MPIDR_EL1: u64 = sys_reg(3, 0, 0, 0, 5);

/// KVM's preferred target for this host's CPUs, with PSCI 0.2. (No PMU:
/// a vCPU with one cannot run before its PMU is wired to an interrupt,
/// and nothing here needs it yet.)
pub(crate) fn vcpu_template(vm: &VmFd) -> Result<kvm_vcpu_init, ArchError> {
    let mut init = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init)
        .map_err(ArchError::PreferredTarget)?;
    set_feature(&mut init, KVM_ARM_VCPU_PSCI_0_2);
    Ok(init)
}

fn set_feature(init: &mut kvm_vcpu_init, feature: u32) {
    init.features[(feature / 32) as usize] |= 1 << (feature % 32);
}

/// The `KVM_ARM_VCPU_INIT` argument for vCPU `id`: the template, and for
/// every vCPU but the boot one, powered off (the guest starts it with PSCI
/// CPU_ON).
pub(crate) fn init_for(id: u8, template: &kvm_vcpu_init) -> kvm_vcpu_init {
    let mut init = *template;
    if id > 0 {
        set_feature(&mut init, KVM_ARM_VCPU_POWER_OFF);
    }
    init
}

/// Initialises vCPU `id` from the template.
pub(crate) fn init_vcpu(vcpu: &VcpuFd, id: u8, template: &kvm_vcpu_init) -> Result<(), ArchError> {
    vcpu.vcpu_init(&init_for(id, template))
        .map_err(ArchError::VcpuInit)
}

/// The boot vCPU's registers: PC at the Image, x0 the FDT, x1..x3 zero,
/// PSTATE EL1h with interrupts masked.
pub(crate) fn boot_registers(entry: u64, fdt_addr: u64) -> [(u64, u64); 6] {
    [
        (PSTATE, BOOT_PSTATE),
        (PC, entry),
        (x_reg(0), fdt_addr),
        (x_reg(1), 0),
        (x_reg(2), 0),
        (x_reg(3), 0),
    ]
}

/// Sets the boot registers (see [`boot_registers`]).
pub(crate) fn setup_boot_regs(vcpu: &VcpuFd, entry: u64, fdt_addr: u64) -> Result<(), ArchError> {
    for (reg, value) in boot_registers(entry, fdt_addr) {
        vcpu.set_one_reg(reg, &value.to_le_bytes())
            .map_err(|source| ArchError::SetRegister { reg, source })?;
    }
    Ok(())
}

/// Reads a 64-bit register.
pub(crate) fn get_reg(vcpu: &VcpuFd, reg: u64) -> Result<u64, ArchError> {
    let mut bytes = [0u8; 8];
    vcpu.get_one_reg(reg, &mut bytes)
        .map_err(|source| ArchError::GetRegister { reg, source })?;
    Ok(u64::from_le_bytes(bytes))
}

/// The vCPU's MPIDR_EL1, as KVM assigned it at `KVM_ARM_VCPU_INIT`.
pub(crate) fn read_mpidr(vcpu: &VcpuFd) -> Result<u64, ArchError> {
    get_reg(vcpu, MPIDR_EL1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_ids_match_the_kernel_abi() {
        // From linux/arch/arm64/include/uapi/asm/kvm.h and QEMU's tables.
        assert_eq!(x_reg(0), 0x6030_0000_0010_0000);
        assert_eq!(x_reg(1), 0x6030_0000_0010_0002);
        assert_eq!(PC, 0x6030_0000_0010_0040);
        assert_eq!(PSTATE, 0x6030_0000_0010_0042);
        assert_eq!(MPIDR_EL1, 0x6030_0000_0013_c005);
    }

    #[test]
    fn the_boot_vcpu_enters_el1h_masked_with_x0_the_fdt() {
        assert_eq!(BOOT_PSTATE, 0x3c5);
        let regs = boot_registers(0x8020_0000, 0x8000_0000);
        assert!(regs.contains(&(PC, 0x8020_0000)));
        assert!(regs.contains(&(x_reg(0), 0x8000_0000)));
        assert!(regs.contains(&(PSTATE, 0x3c5)));
        for n in 1..=3 {
            assert!(regs.contains(&(x_reg(n), 0)));
        }
    }

    #[test]
    fn secondaries_start_powered_off_with_psci_0_2() {
        let mut template = kvm_vcpu_init {
            target: 5,
            ..Default::default()
        };
        set_feature(&mut template, KVM_ARM_VCPU_PSCI_0_2);
        let boot = init_for(0, &template);
        assert_eq!(boot.target, 5);
        assert_eq!(boot.features[0], 1 << 2);
        let secondary = init_for(3, &template);
        assert_eq!(secondary.features[0], (1 << 2) | 1);
    }
}
