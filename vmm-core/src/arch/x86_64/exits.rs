//! x86_64 details for reporting vCPU exits.

use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Longest x86 instruction.
const MAX_INSTRUCTION_LEN: usize = 15;

/// The guest RIP and up to 15 bytes of the instruction there, for reporting
/// an internal error. Bytes that cannot be translated or read are left out.
pub(crate) fn faulting_instruction(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> (u64, Vec<u8>) {
    let Ok(regs) = vcpu.get_regs() else {
        return (0, Vec::new());
    };
    let rip = regs.rip;
    let mut bytes = Vec::with_capacity(MAX_INSTRUCTION_LEN);
    for i in 0..MAX_INSTRUCTION_LEN as u64 {
        // Translate each byte: the instruction may cross a page boundary.
        let Ok(t) = vcpu.translate_gva(rip.wrapping_add(i)) else {
            break;
        };
        if t.valid == 0 {
            break;
        }
        match mem.read_obj::<u8>(GuestAddress(t.physical_address)) {
            Ok(b) => bytes.push(b),
            Err(_) => break,
        }
    }
    (rip, bytes)
}
