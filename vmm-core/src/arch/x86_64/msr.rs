//! The MSRs a vCPU boots with (as Firecracker): SYSENTER/SYSCALL targets
//! cleared, the TSC at zero, fast strings on, MTRRs enabled with write-back
//! as the default memory type.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

use super::ArchError;

/// Time-stamp counter.
const MSR_IA32_TSC: u32 = 0x10;
/// SYSENTER code segment.
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// SYSENTER stack pointer.
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// SYSENTER instruction pointer.
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// Miscellaneous feature enables.
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// MISC_ENABLE bit 0: fast `rep movs`/`rep stos`.
const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
/// Default memory type for ranges no MTRR covers.
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRdefType bit 11: MTRRs enabled.
const MTRR_ENABLE: u64 = 1 << 11;
/// Memory type write-back.
const MTRR_MEM_TYPE_WB: u64 = 0x6;
/// SYSCALL/SYSRET segment selectors.
const MSR_STAR: u32 = 0xc000_0081;
/// 64-bit SYSCALL target.
const MSR_LSTAR: u32 = 0xc000_0082;
/// Compatibility-mode SYSCALL target.
const MSR_CSTAR: u32 = 0xc000_0083;
/// RFLAGS bits SYSCALL clears.
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// GS base SWAPGS swaps in.
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// The boot MSRs and their values, in the order they are set.
pub(super) fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Sets the boot MSRs; KVM stops at the first MSR it refuses, so a short
/// count is an error naming that MSR.
pub(super) fn setup_boot_msrs(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(ArchError::BuildMsrList)?;
    let written = vcpu.set_msrs(&msrs).map_err(ArchError::SetMsrs)?;
    if written != entries.len() {
        return Err(ArchError::SetMsrsIncomplete {
            written,
            requested: entries.len(),
            first_rejected: entries.get(written).map_or(0, |e| e.index),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_are_unique_and_as_firecracker() {
        let entries = boot_msr_entries();
        let mut indices: Vec<u32> = entries.iter().map(|e| e.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), entries.len());
        let value = |index| entries.iter().find(|e| e.index == index).unwrap().data;
        assert_eq!(value(MSR_IA32_MISC_ENABLE), 1);
        assert_eq!(value(MSR_MTRR_DEF_TYPE), 0x806);
        assert_eq!(value(MSR_LSTAR), 0);
    }
}
