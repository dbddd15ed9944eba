//! aarch64 guest physical memory layout. Every fixed address the VMM uses.
//!
//! MMIO devices sit below RAM; RAM starts at 2 GiB, as in Firecracker:
//!
//! ```text
//! 0x0000_0000  unused (no flash, no ROM: the kernel is loaded directly)
//! 0x0800_0000  GIC distributor, 64 KiB           (GIC_DIST_ADDR)
//! 0x0801_0000  GICv2 CPU interface, 8 KiB        (GICV2_CPU_ADDR, v2 only)
//! 0x0808_0000  GICv3 ITS, 128 KiB                (GIC_ITS_ADDR, when KVM has one)
//! 0x080a_0000  GICv3 redistributors, 128 KiB per vCPU (GIC_REDIST_ADDR ..
//!              gic_redist_end(vCPUs); room up to 0x0900_0000, 123 vCPUs)
//! 0x4000_0000  boot timer page                   (BOOT_TIMER_ADDR, Firecracker's)
//! 0x4000_1000  16550 UART                        (SERIAL)
//! 0x4000_2000  PL031 RTC                         (RTC)
//! 0x4000_3000  pvpanic (MMIO)                    (PVPANIC)
//! 0x4000_4000  PL061 GPIO, the power button       (GPIO)
//! 0x4001_0000  virtio-mmio windows, one page each (VIRTIO_MMIO_START ..
//!              VIRTIO_MMIO_END), handed out by `resources::DeviceSlots`
//! 0x8000_0000  RAM (DRAM_START): the FDT in its first 2 MiB, the kernel
//!              Image from DRAM_START + 2 MiB (+ text_offset), the initrd at
//!              the top of RAM
//! ```
//!
//! Why RAM at 2 GiB rather than QEMU virt's 1 GiB: the whole first 2 GiB
//! stay free for the GIC and MMIO devices (room for many redistributors and
//! device windows without moving anything), the boot timer sits at the
//! address Firecracker's guests already use, and the rest of the IPA space
//! (40 bits, 1 TiB, on every arm64 KVM host; the VM is created with the
//! host's limit, see [`super::check_guest_fits`]) is RAM.
//!
//! Interrupt lines are GIC SPIs, numbered from 0 as KVM's irqfd routing
//! numbers them (GSI n = SPI n = INTID 32 + n).

use crate::arch::{BusKind, PlatformDevice, PowerButtonDevice, PowerButtonKind};

/// GIC distributor (GICv3 GICD or GICv2 GICD), at the address measured to
/// work on this project's arm64 KVM hosts (and QEMU virt's).
pub const GIC_DIST_ADDR: u64 = 0x0800_0000;
/// Size of the distributor window (`KVM_VGIC_V3_DIST_SIZE`).
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// GICv2 CPU interface (GICv2 fallback only).
pub const GICV2_CPU_ADDR: u64 = GIC_DIST_ADDR + GIC_DIST_SIZE;
/// Size of the GICv2 CPU interface (`KVM_VGIC_V2_CPU_SIZE`).
pub const GICV2_CPU_SIZE: u64 = 0x2000;
/// GICv3 Interrupt Translation Service (MSIs), when KVM provides one.
pub const GIC_ITS_ADDR: u64 = 0x0808_0000;
/// Size of the ITS window (`KVM_VGIC_V3_ITS_SIZE`: two 64 KiB frames).
pub const GIC_ITS_SIZE: u64 = 0x2_0000;
/// First GICv3 redistributor; one per vCPU follows.
pub const GIC_REDIST_ADDR: u64 = GIC_ITS_ADDR + GIC_ITS_SIZE;
/// Size of one redistributor (`KVM_VGIC_V3_REDIST_SIZE`: RD and SGI frames).
pub const GIC_REDIST_SIZE: u64 = 0x2_0000;
/// Interrupts the vGIC is configured with (`KVM_DEV_ARM_VGIC_GRP_NR_IRQS`):
/// 32 private (SGIs and PPIs) + 96 SPIs; a multiple of 32, as KVM requires.
pub const GIC_NR_IRQS: u32 = 128;

/// Architected timer PPIs (INTID - 16, as the FDT's GIC_PPI cells count):
/// secure physical, non-secure physical, virtual, hypervisor — the
/// standard assignments KVM emulates (INTIDs 29, 30, 27, 26).
pub const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];

/// Start of the MMIO region for devices, below RAM.
pub const MMIO_START: u64 = 0x4000_0000;
/// The boot-timer device (Firecracker's arm64 address): the guest writes
/// `devices::legacy::BOOT_TIMER_MAGIC` (123) here.
pub const BOOT_TIMER_ADDR: u64 = MMIO_START;
/// Size of the boot-timer MMIO window.
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
/// One page for each platform device.
const PLATFORM_WINDOW: u64 = 0x1000;
/// The console: a 16550 UART (vm-superio's model, as on x86 and as in
/// Firecracker) with byte-wide registers.
pub const SERIAL: PlatformDevice = PlatformDevice {
    bus: BusKind::Mmio,
    base: BOOT_TIMER_ADDR + BOOT_TIMER_SIZE,
    len: PLATFORM_WINDOW,
};
/// The UART's interrupt line.
pub const SERIAL_IRQ: u32 = 1;
/// The PL031 real-time clock (vm-superio's model).
pub const RTC: Option<PlatformDevice> = Some(PlatformDevice {
    bus: BusKind::Mmio,
    base: SERIAL.base + PLATFORM_WINDOW,
    len: PLATFORM_WINDOW,
});
/// The RTC's interrupt line (described in the FDT as the PL031 binding
/// requires; the model raises no alarm interrupts).
pub const RTC_IRQ: u32 = 2;
/// pvpanic on MMIO (`qemu,pvpanic-mmio`, Linux's `CONFIG_PVPANIC_MMIO`): a
/// guest panic ends the VM with `VmExit::GuestPanic`, as on x86.
pub const PVPANIC: PlatformDevice = PlatformDevice {
    bus: BusKind::Mmio,
    base: SERIAL.base + 2 * PLATFORM_WINDOW,
    len: PLATFORM_WINDOW,
};
/// No i8042 on arm64: PSCI SYSTEM_RESET resets the VM.
pub const I8042: Option<PlatformDevice> = None;
/// No ACPI power-control register on arm64: PSCI SYSTEM_OFF powers off.
pub const ACPI_POWER: Option<PlatformDevice> = None;
/// The PL061 GPIO controller whose line 3 is the power button (the FDT's
/// `gpio-keys` node gives it `KEY_POWER`), as on QEMU `virt`.
pub const GPIO: PlatformDevice = PlatformDevice {
    bus: BusKind::Mmio,
    base: SERIAL.base + 3 * PLATFORM_WINDOW,
    len: PLATFORM_WINDOW,
};
/// The GPIO controller's interrupt line (edge, see `devices::legacy::Pl061`).
pub const GPIO_IRQ: u32 = 3;
/// The power button: line 3 of the PL061 (no ACPI on arm64).
pub const POWER_BUTTON: PowerButtonDevice = PowerButtonDevice {
    kind: PowerButtonKind::Pl061,
    at: GPIO,
    irq: GPIO_IRQ,
};
/// First virtio-mmio window.
pub const VIRTIO_MMIO_START: u64 = MMIO_START + 0x1_0000;
/// End (exclusive) of the virtio-mmio windows: room for 240 devices, more
/// than there are interrupt lines for them.
pub const VIRTIO_MMIO_END: u64 = MMIO_START + 0x10_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_WINDOW: u64 = 0x1000;
/// SPIs for virtio devices, one each (edge-triggered, as the transport's
/// interrupts are signalled through irqfds): 16..=63. 0..=15 are left to
/// platform devices.
pub const VIRTIO_IRQ_FIRST: u32 = 16;
/// See [`VIRTIO_IRQ_FIRST`].
pub const VIRTIO_IRQ_LAST: u32 = 63;

/// Start of guest RAM.
pub const DRAM_START: u64 = 0x8000_0000;
/// The FDT lives at the start of RAM. The arm64 boot protocol limits a DTB
/// to 2 MiB and wants it 8-byte aligned, in a 2 MiB block of its own.
pub const FDT_ADDR: u64 = DRAM_START;
/// The most the FDT may take.
pub const FDT_MAX_SIZE: u64 = 0x20_0000;
/// 2 MiB-aligned base the Image is loaded from (plus its `text_offset`).
pub const KERNEL_BASE: u64 = DRAM_START + FDT_MAX_SIZE;
/// Largest command line, NUL included (arm64 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Guest physical addresses the layout needs: RAM must end below
/// `1 << ipa_bits`; every arm64 KVM host offers at least 40 bits.
pub const MIN_IPA_BITS: u32 = 32;

/// First byte past the redistributors of `num_cpus` vCPUs.
pub const fn gic_redist_end(num_cpus: u8) -> u64 {
    // `check_vcpus` caps vCPUs at MAX_VCPUS, whose redistributors end
    // well below the platform devices (see the tests).
    GIC_REDIST_ADDR + GIC_REDIST_SIZE * num_cpus as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_VCPUS;

    fn ranges() -> Vec<(&'static str, u64, u64)> {
        let mut v = vec![
            ("GIC distributor", GIC_DIST_ADDR, GIC_DIST_SIZE),
            ("GICv2 CPU interface", GICV2_CPU_ADDR, GICV2_CPU_SIZE),
            ("GIC ITS", GIC_ITS_ADDR, GIC_ITS_SIZE),
            (
                "GIC redistributors",
                GIC_REDIST_ADDR,
                gic_redist_end(MAX_VCPUS) - GIC_REDIST_ADDR,
            ),
            ("boot timer", BOOT_TIMER_ADDR, BOOT_TIMER_SIZE),
            ("serial", SERIAL.base, SERIAL.len),
            ("pvpanic", PVPANIC.base, PVPANIC.len),
            (
                "virtio",
                VIRTIO_MMIO_START,
                VIRTIO_MMIO_END - VIRTIO_MMIO_START,
            ),
        ];
        if let Some(rtc) = RTC {
            v.push(("rtc", rtc.base, rtc.len));
        }
        v
    }

    #[test]
    fn device_ranges_do_not_overlap_and_lie_below_ram() {
        let ranges = ranges();
        for (i, &(a, a_base, a_len)) in ranges.iter().enumerate() {
            assert!(a_base + a_len <= DRAM_START, "{a} reaches into RAM");
            for &(b, b_base, b_len) in &ranges[i + 1..] {
                let disjoint = a_base + a_len <= b_base || b_base + b_len <= a_base;
                assert!(disjoint, "{a} overlaps {b}");
            }
        }
    }

    #[test]
    fn gic_regions_fit_the_largest_vm() {
        // The room for redistributors ends where QEMU virt's UART would be.
        assert!(gic_redist_end(MAX_VCPUS) <= 0x0900_0000);
        assert_eq!(gic_redist_end(1), GIC_REDIST_ADDR + 0x2_0000);
        // KVM wants 64 KiB-aligned GICv3 frames.
        for addr in [GIC_DIST_ADDR, GIC_ITS_ADDR, GIC_REDIST_ADDR] {
            assert_eq!(addr % 0x1_0000, 0, "{addr:#x}");
        }
        assert_eq!(GIC_NR_IRQS % 32, 0);
    }

    #[test]
    fn interrupt_lines_are_distinct_spis() {
        for irq in [SERIAL_IRQ, RTC_IRQ, GPIO_IRQ] {
            assert!(irq < VIRTIO_IRQ_FIRST);
        }
        assert_ne!(SERIAL_IRQ, RTC_IRQ);
        assert_ne!(GPIO_IRQ, SERIAL_IRQ);
        assert_ne!(GPIO_IRQ, RTC_IRQ);
        const { assert!(VIRTIO_IRQ_FIRST <= VIRTIO_IRQ_LAST) };
        // GSI n is SPI n: every line must be below the vGIC's SPI count.
        const { assert!(VIRTIO_IRQ_LAST < GIC_NR_IRQS - 32) };
    }

    #[test]
    fn boot_addresses_follow_the_arm64_boot_protocol() {
        assert_eq!(FDT_ADDR % 8, 0);
        const { assert!(FDT_MAX_SIZE <= 0x20_0000) };
        assert_eq!(KERNEL_BASE % 0x20_0000, 0);
        const { assert!(FDT_ADDR + FDT_MAX_SIZE <= KERNEL_BASE) };
        // Firecracker's boot timer address, which its guests already use.
        assert_eq!(BOOT_TIMER_ADDR, 0x4000_0000);
    }
}
