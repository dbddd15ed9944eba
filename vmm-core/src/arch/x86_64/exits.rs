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

/// `CS.base` right after INIT/RESET: execution starts at 0xffff_fff0.
const RESET_CS_BASE: u64 = 0xffff_0000;
/// `RIP` right after INIT/RESET.
const RESET_RIP: u64 = 0xfff0;

/// The vCPU's registers when KVM reported its shutdown (triple fault), as
/// one line for the log: where the guest was and which tables it used,
/// enough to tell a bad IDT, GDT or stack from a guest bug. On AMD hosts KVM
/// re-initialises the vCPU before it reports the shutdown (the VMCB is
/// undefined after one), so the line then says that instead.
pub(crate) fn shutdown_state(vcpu: &VcpuFd) -> String {
    let (regs, sregs) = match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(regs), Ok(sregs)) => (regs, sregs),
        (Err(e), _) | (_, Err(e)) => return format!("registers unreadable: {e}"),
    };
    if regs.rip == RESET_RIP && sregs.cs.base == RESET_CS_BASE {
        return "KVM reset the vCPU before reporting the shutdown (AMD SVM does): \
                its state at the fault is lost"
            .to_string();
    }
    format!(
        "rip={:#x} rsp={:#x} rflags={:#x} cs={:#x} ss={:#x} cr0={:#x} cr2={:#x} cr3={:#x} \
         cr4={:#x} efer={:#x} gdt={:#x}+{:#x} idt={:#x}+{:#x} tr={:#x}@{:#x}",
        regs.rip,
        regs.rsp,
        regs.rflags,
        sregs.cs.selector,
        sregs.ss.selector,
        sregs.cr0,
        sregs.cr2,
        sregs.cr3,
        sregs.cr4,
        sregs.efer,
        sregs.gdt.base,
        sregs.gdt.limit,
        sregs.idt.base,
        sregs.idt.limit,
        sregs.tr.selector,
        sregs.tr.base,
    )
}
