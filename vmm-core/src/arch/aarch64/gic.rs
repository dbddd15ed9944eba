//! The in-kernel vGIC: GICv3 (with an ITS when KVM has one), or GICv2 on
//! hosts without v3, created through `KVM_CREATE_DEVICE`.
//!
//! Order matters to KVM: the vGIC is created after every vCPU exists and
//! is initialised (`KVM_ARM_VCPU_INIT`), its regions and interrupt count
//! are set, then `KVM_DEV_ARM_VGIC_CTRL_INIT` — all before the first
//! `KVM_RUN`. The device fds are dropped afterwards: the vGIC lives as long
//! as the VM.

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
    KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_NR_IRQS, KVM_VGIC_ITS_ADDR_TYPE, KVM_VGIC_V2_ADDR_TYPE_CPU,
    KVM_VGIC_V2_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, VmFd};

use super::layout::{GICV2_CPU_ADDR, GIC_DIST_ADDR, GIC_ITS_ADDR, GIC_NR_IRQS, GIC_REDIST_ADDR};
use super::ArchError;

/// The interrupt controller a VM got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GicVersion {
    /// GICv2: distributor and CPU interface.
    V2,
    /// GICv3: distributor and one redistributor per vCPU, and an ITS when
    /// KVM provides one.
    V3 {
        /// Whether an ITS (MSI controller) was created.
        its: bool,
    },
}

/// Creates and initialises the vGIC for the VM's vCPUs (KVM sizes the
/// redistributor region from their number).
pub(crate) fn create_gic(vm: &VmFd) -> Result<GicVersion, ArchError> {
    match create_device(vm, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3) {
        Ok(gic) => {
            set_addr(
                &gic,
                KVM_VGIC_V3_ADDR_TYPE_DIST,
                GIC_DIST_ADDR,
                "GICv3 distributor",
            )?;
            set_addr(
                &gic,
                KVM_VGIC_V3_ADDR_TYPE_REDIST,
                GIC_REDIST_ADDR,
                "GICv3 redistributors",
            )?;
            finish(&gic)?;
            let its = match create_its(vm) {
                Ok(()) => true,
                Err(e) => {
                    log::info!("no GICv3 ITS: {e}");
                    false
                }
            };
            log::debug!("vGICv3 created (ITS: {its})");
            Ok(GicVersion::V3 { its })
        }
        Err(v3) => {
            let gic = create_device(vm, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2)
                .map_err(|v2| ArchError::CreateGic { v3, v2 })?;
            set_addr(
                &gic,
                KVM_VGIC_V2_ADDR_TYPE_DIST,
                GIC_DIST_ADDR,
                "GICv2 distributor",
            )?;
            set_addr(
                &gic,
                KVM_VGIC_V2_ADDR_TYPE_CPU,
                GICV2_CPU_ADDR,
                "GICv2 CPU interface",
            )?;
            finish(&gic)?;
            log::info!("no vGICv3 ({v3}): the guest gets a GICv2");
            Ok(GicVersion::V2)
        }
    }
}

fn create_device(vm: &VmFd, type_: u32) -> Result<DeviceFd, kvm_ioctls::Error> {
    let mut device = kvm_create_device {
        type_,
        fd: 0,
        flags: 0,
    };
    vm.create_device(&mut device)
}

/// Sets the number of interrupts, then initialises the vGIC.
fn finish(gic: &DeviceFd) -> Result<(), ArchError> {
    let nr_irqs: u32 = GIC_NR_IRQS;
    set_attr(
        gic,
        KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
        0,
        &nr_irqs as *const u32 as u64,
        "number of interrupts",
    )?;
    set_attr(
        gic,
        KVM_DEV_ARM_VGIC_GRP_CTRL,
        KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
        0,
        "CTRL_INIT",
    )
}

/// The ITS, at its layout address.
fn create_its(vm: &VmFd) -> Result<(), ArchError> {
    let its = create_device(vm, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS).map_err(|source| {
        ArchError::GicAttribute {
            what: "ITS (KVM_CREATE_DEVICE)",
            source,
        }
    })?;
    set_addr(&its, KVM_VGIC_ITS_ADDR_TYPE, GIC_ITS_ADDR, "ITS base")?;
    set_attr(
        &its,
        KVM_DEV_ARM_VGIC_GRP_CTRL,
        KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
        0,
        "ITS CTRL_INIT",
    )
}

fn set_addr(device: &DeviceFd, kind: u32, addr: u64, what: &'static str) -> Result<(), ArchError> {
    set_attr(
        device,
        KVM_DEV_ARM_VGIC_GRP_ADDR,
        kind.into(),
        &addr as *const u64 as u64,
        what,
    )
}

/// `KVM_SET_DEVICE_ATTR`; `addr` points at the value, which must outlive
/// the call (the callers pass their locals).
fn set_attr(
    device: &DeviceFd,
    group: u32,
    attr: u64,
    addr: u64,
    what: &'static str,
) -> Result<(), ArchError> {
    let attr = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr,
    };
    device
        .set_device_attr(&attr)
        .map_err(|source| ArchError::GicAttribute { what, source })
}
