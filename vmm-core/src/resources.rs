//! Where devices go: the one allocator of virtio-mmio windows and their
//! interrupt lines (vm-allocator), so that adding a device never means
//! editing constants elsewhere. The ranges come from the arch layout.

use vm_allocator::{AddressAllocator, AllocPolicy, IdAllocator};

use crate::arch::layout::{
    VIRTIO_IRQ_FIRST, VIRTIO_IRQ_LAST, VIRTIO_MMIO_END, VIRTIO_MMIO_START, VIRTIO_MMIO_WINDOW,
};

/// A virtio device's place: its MMIO window and its interrupt line (GSI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceSlot {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) irq: u32,
}

impl DeviceSlot {
    /// The kernel command-line form (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`):
    /// `virtio_mmio.device=4K@0xd0001000:5`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn cmdline(&self) -> String {
        format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            self.len >> 10,
            self.addr,
            self.irq
        )
    }
}

/// Errors handing out slots.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// More virtio devices than interrupt lines or MMIO windows.
    #[error("too many virtio devices: at most {max} fit ({what} exhausted)")]
    Exhausted {
        /// How many fit.
        max: u32,
        /// Which resource ran out.
        what: &'static str,
    },
}

/// Hands out virtio-mmio windows and interrupt lines in order.
pub(crate) struct DeviceSlots {
    mmio: AddressAllocator,
    irqs: IdAllocator,
}

impl DeviceSlots {
    pub(crate) fn new() -> Self {
        DeviceSlots {
            mmio: AddressAllocator::new(VIRTIO_MMIO_START, VIRTIO_MMIO_END - VIRTIO_MMIO_START)
                .expect("the virtio MMIO range in the layout is valid"),
            irqs: IdAllocator::new(VIRTIO_IRQ_FIRST, VIRTIO_IRQ_LAST)
                .expect("the virtio IRQ range in the layout is valid"),
        }
    }

    /// The most virtio devices a VM can have.
    pub(crate) const MAX_DEVICES: u32 = VIRTIO_IRQ_LAST - VIRTIO_IRQ_FIRST + 1;

    /// The next free window and line.
    pub(crate) fn allocate(&mut self) -> Result<DeviceSlot, ResourceError> {
        let exhausted = |what| ResourceError::Exhausted {
            max: Self::MAX_DEVICES,
            what,
        };
        let irq = self
            .irqs
            .allocate_id()
            .map_err(|_| exhausted("interrupt lines"))?;
        let range = self
            .mmio
            .allocate(
                VIRTIO_MMIO_WINDOW,
                VIRTIO_MMIO_WINDOW,
                AllocPolicy::FirstMatch,
            )
            .map_err(|_| exhausted("MMIO windows"))?;
        Ok(DeviceSlot {
            addr: range.start(),
            len: range.len(),
            irq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_consecutive_pages_and_lines_until_the_lines_run_out() {
        let mut slots = DeviceSlots::new();
        let first = slots.allocate().unwrap();
        assert_eq!(
            first,
            DeviceSlot {
                addr: VIRTIO_MMIO_START,
                len: 0x1000,
                irq: VIRTIO_IRQ_FIRST
            }
        );
        let cmdline = format!("virtio_mmio.device=4K@{VIRTIO_MMIO_START:#x}:{VIRTIO_IRQ_FIRST}");
        assert_eq!(first.cmdline(), cmdline);
        let second = slots.allocate().unwrap();
        assert_eq!(
            (second.addr, second.irq),
            (VIRTIO_MMIO_START + 0x1000, VIRTIO_IRQ_FIRST + 1)
        );
        for _ in 2..DeviceSlots::MAX_DEVICES {
            let slot = slots.allocate().unwrap();
            assert!(slot.irq <= VIRTIO_IRQ_LAST && slot.addr + slot.len <= VIRTIO_MMIO_END);
        }
        let e = slots.allocate().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "too many virtio devices: at most {} fit (interrupt lines exhausted)",
                VIRTIO_IRQ_LAST - VIRTIO_IRQ_FIRST + 1
            )
        );
        // x86: 18 lines, IOAPIC pins 5..=22 (0xd000_1000 onwards).
    }
}
