//! The VM's virtio devices: which ones the configuration asks for, where
//! each goes ([`DeviceSlots`]), and wiring one into the VM: its transport
//! on the MMIO bus, one ioeventfd per queue on the QueueNotify register
//! (datamatch = queue index), one irqfd, and its event handler on the VMM
//! thread's event loop.

use std::sync::{Arc, Mutex};

use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::mmio::{MmioDevice, QUEUE_NOTIFY_OFFSET};
use devices::virtio::net::{self, Net};
use devices::virtio::rng::Rng;
use devices::virtio::vsock::{self, Vsock};
use devices::virtio::VirtioDevice;
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::bus::Bus;
use crate::config::VmConfig;
use crate::device_manager::{DeviceError, VmmEventManager};
use crate::resources::{DeviceSlot, DeviceSlots, ResourceError};
use event_manager::SubscriberOps;

/// Which virtio device, by its index in the configuration's lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VirtioKind {
    Disk(usize),
    Net(usize),
    Vsock,
    Rng,
}

impl VirtioKind {
    fn name(self) -> &'static str {
        match self {
            VirtioKind::Disk(_) => "virtio-blk",
            VirtioKind::Net(_) => "virtio-net",
            VirtioKind::Vsock => "virtio-vsock",
            VirtioKind::Rng => "virtio-rng",
        }
    }
}

/// A virtio device the configuration asks for, with its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlannedDevice {
    pub(crate) kind: VirtioKind,
    pub(crate) slot: DeviceSlot,
}

/// Gives every configured virtio device a slot, in a fixed order (disks,
/// then network interfaces, vsock, rng), so a configuration always yields
/// the same addresses and lines, and disk N is always the N-th disk the
/// guest probes.
pub(crate) fn plan(config: &VmConfig) -> Result<Vec<PlannedDevice>, ResourceError> {
    let kinds = (0..config.disks.len())
        .map(VirtioKind::Disk)
        .chain((0..config.nets.len()).map(VirtioKind::Net))
        .chain(config.vsock.iter().map(|_| VirtioKind::Vsock))
        .chain(config.rng.then_some(VirtioKind::Rng));
    let mut slots = DeviceSlots::new();
    kinds
        .map(|kind| {
            Ok(PlannedDevice {
                kind,
                slot: slots.allocate()?,
            })
        })
        .collect()
}

/// Creates the device model for `kind` from the configuration.
fn create_device(
    kind: VirtioKind,
    config: &VmConfig,
) -> Result<Arc<Mutex<dyn VirtioDevice>>, DeviceError> {
    Ok(match kind {
        VirtioKind::Disk(index) => {
            let spec = &config.disks[index];
            let device = Block::new(&BlockConfig {
                path: spec.path.clone(),
                read_only: spec.read_only,
                id: spec.id.clone(),
            })
            .map_err(|e| DeviceError::Backend {
                device: kind.name(),
                source: Box::new(e),
            })?;
            Arc::new(Mutex::new(device))
        }
        VirtioKind::Net(index) => {
            let spec = &config.nets[index];
            let mac = crate::device_config::mac_of(spec).map_err(DeviceError::Config)?;
            let device = Net::new(&net::NetConfig {
                tap: spec.tap.clone(),
                mac,
            })
            .map_err(|e| DeviceError::Backend {
                device: kind.name(),
                source: Box::new(e),
            })?;
            Arc::new(Mutex::new(device))
        }
        VirtioKind::Vsock => {
            let Some(spec) = config.vsock.as_ref() else {
                return Err(DeviceError::Unconfigured(kind.name()));
            };
            let device = Vsock::new(&vsock::VsockConfig {
                guest_cid: spec.cid,
                uds_path: spec.uds.clone(),
            })
            .map_err(|e| DeviceError::Backend {
                device: kind.name(),
                source: Box::new(e),
            })?;
            Arc::new(Mutex::new(device))
        }
        VirtioKind::Rng => Arc::new(Mutex::new(Rng::new())),
    })
}

/// Creates and wires every planned device.
pub(crate) fn attach_all(
    vm: &VmFd,
    memory: &GuestMemoryMmap,
    config: &VmConfig,
    planned: &[PlannedDevice],
    mmio: &mut Bus,
    event_manager: &mut VmmEventManager,
) -> Result<(), DeviceError> {
    for device in planned {
        let model = create_device(device.kind, config)?;
        attach(vm, memory, device, model, mmio, event_manager)?;
    }
    Ok(())
}

fn attach(
    vm: &VmFd,
    memory: &GuestMemoryMmap,
    planned: &PlannedDevice,
    model: Arc<Mutex<dyn VirtioDevice>>,
    mmio: &mut Bus,
    event_manager: &mut VmmEventManager,
) -> Result<(), DeviceError> {
    let name = planned.kind.name();
    let slot = planned.slot;
    let device = MmioDevice::new(model, memory.clone()).map_err(|source| DeviceError::Create {
        device: name,
        source,
    })?;
    let notify = IoEventAddress::Mmio(slot.addr + QUEUE_NOTIFY_OFFSET);
    for (index, evt) in device.queue_evts.iter().enumerate() {
        vm.register_ioevent(evt, &notify, index as u32)
            .map_err(|source| DeviceError::Ioeventfd {
                device: name,
                addr: slot.addr + QUEUE_NOTIFY_OFFSET,
                source,
            })?;
    }
    vm.register_irqfd(&device.irq_evt, slot.irq)
        .map_err(|source| DeviceError::Irqfd {
            device: name,
            gsi: slot.irq,
            source,
        })?;
    mmio.insert(Arc::new(Mutex::new(device.transport)), slot.addr, slot.len)
        .map_err(|source| DeviceError::Bus {
            device: name,
            source,
        })?;
    event_manager.add_subscriber(Arc::new(Mutex::new(device.handler)));
    log::debug!(
        "{name} at {:#x}+{:#x}, GSI {}",
        slot.addr,
        slot.len,
        slot.irq
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_get_slots_in_a_fixed_order() {
        let disk = tempfile();
        let mut config = VmConfig::new("/k");
        config.rng = true;
        config.disks = vec![
            crate::DiskConfig {
                path: disk.as_path().to_path_buf(),
                read_only: false,
                id: None,
            };
            2
        ];
        config.nets = vec![crate::NetConfig {
            tap: "t0".into(),
            mac: None,
        }];
        let planned = plan(&config).unwrap();
        let kinds: Vec<_> = planned.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                VirtioKind::Disk(0),
                VirtioKind::Disk(1),
                VirtioKind::Net(0),
                VirtioKind::Rng
            ]
        );
        let irqs: Vec<_> = planned.iter().map(|p| p.slot.irq).collect();
        let first = crate::arch::layout::VIRTIO_IRQ_FIRST;
        assert_eq!(irqs, [first, first + 1, first + 2, first + 3]);
        assert_eq!(plan(&config).unwrap(), planned, "deterministic");
    }

    fn tempfile() -> vmm_sys_util::tempfile::TempFile {
        vmm_sys_util::tempfile::TempFile::new().unwrap()
    }
}
