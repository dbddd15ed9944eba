//! aarch64 details for reporting vCPU exits.

use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use super::regs::{get_reg, PC, PSTATE};

/// The guest PC, for reporting an internal error. The instruction bytes
/// are left out: KVM cannot translate guest virtual addresses on arm64.
pub(crate) fn faulting_instruction(vcpu: &VcpuFd, _mem: &GuestMemoryMmap) -> (u64, Vec<u8>) {
    (get_reg(vcpu, PC).unwrap_or(0), Vec::new())
}

/// PC and PSTATE, as one line for the log, when KVM reports a shutdown
/// exit (which arm64 KVM does not use for guest events; kept for the
/// shared exit handling).
pub(crate) fn shutdown_state(vcpu: &VcpuFd) -> String {
    match (get_reg(vcpu, PC), get_reg(vcpu, PSTATE)) {
        (Ok(pc), Ok(pstate)) => format!("pc={pc:#x} pstate={pstate:#x}"),
        (Err(e), _) | (_, Err(e)) => format!("registers unreadable: {e}"),
    }
}
