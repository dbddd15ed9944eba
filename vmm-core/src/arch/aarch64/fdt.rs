//! The flattened device tree the arm64 kernel is booted with (vm-fdt): the
//! only description of the machine the guest gets.
//!
//! ```text
//! /                 linux,dummy-virt; interrupt-parent = the GIC
//!   cpus/cpu@N      enable-method "psci", reg = MPIDR affinity (from KVM)
//!   memory@80000000
//!   chosen          bootargs, linux,initrd-start/-end, stdout-path
//!   psci            arm,psci-0.2, method "hvc" (KVM implements it)
//!   intc@8000000    GICv3 (+ its@8080000 child) or GICv2
//!   timer           the architected timer's four PPIs
//!   apb-pclk        fixed clock the PL031 and PL061 (AMBA devices) need
//!   uart@40001000   ns16550a, byte-wide registers
//!   rtc@40002000    PL031
//!   pvpanic@40003000
//!   pl061@40004000  the GPIO controller (an AMBA device) ...
//!   gpio-keys       ... whose line 3 is the power button (KEY_POWER)
//!   boot-timer@40000000  mercury,boot-timer: where guests write the boot
//!                   timer (Linux ignores the node; the test guest and the
//!                   test initramfs look it up)
//!   virtio_mmio@... one per virtio device
//! ```

use vm_fdt::{FdtWriter, FdtWriterResult};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use super::gic::GicVersion;
use super::layout::{
    gic_redist_end, BOOT_TIMER_ADDR, BOOT_TIMER_SIZE, FDT_ADDR, FDT_MAX_SIZE, GICV2_CPU_ADDR,
    GICV2_CPU_SIZE, GIC_DIST_ADDR, GIC_DIST_SIZE, GIC_ITS_ADDR, GIC_ITS_SIZE, GIC_REDIST_ADDR,
    GPIO, GPIO_IRQ, PVPANIC, RTC, RTC_IRQ, SERIAL, SERIAL_IRQ, TIMER_PPIS,
};
use super::regs::MPIDR_AFFINITY_MASK;
use super::{ArchError, InitrdRegion, Machine};
use crate::resources::DeviceSlot;
use devices::legacy::Pl061;

/// Phandle of the interrupt controller.
const GIC_PHANDLE: u32 = 1;
/// Phandle of the APB clock.
const CLOCK_PHANDLE: u32 = 2;
/// Phandle of the ITS.
const ITS_PHANDLE: u32 = 3;
/// Phandle of the GPIO controller.
const GPIO_PHANDLE: u32 = 4;
/// GPIO specifier flags: active high.
const GPIO_ACTIVE_HIGH: u32 = 0;

/// First cell of a GIC interrupt specifier: a shared peripheral interrupt.
const GIC_SPI: u32 = 0;
/// First cell of a GIC interrupt specifier: a private peripheral interrupt.
const GIC_PPI: u32 = 1;
/// Interrupt flags: edge, rising (the irqfd-driven lines).
const IRQ_TYPE_EDGE_RISING: u32 = 1;
/// Interrupt flags: level, active high (the timer, the GIC maintenance IRQ).
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// The GICv3 maintenance interrupt, a PPI (INTID 25).
const GIC_MAINTENANCE_PPI: u32 = 9;
/// The 16550's input clock: the classic 1.8432 MHz crystal, which makes
/// the divisors guests program the standard ones.
const SERIAL_CLOCK_HZ: u32 = 1_843_200;
/// The APB clock's rate (what the PL031's driver is told; it counts seconds
/// regardless).
const APB_CLOCK_HZ: u32 = 24_000_000;
/// GICv2's distributor window (the v3 one is larger).
const GICV2_DIST_SIZE: u64 = 0x1000;

/// Builds the FDT for the machine.
pub(crate) fn create_fdt(
    mem: &GuestMemoryMmap,
    bootargs: &str,
    initrd: Option<InitrdRegion>,
    machine: &Machine,
    virtio: &[DeviceSlot],
) -> Result<Vec<u8>, ArchError> {
    build(mem, bootargs, initrd, machine, virtio).map_err(ArchError::Fdt)
}

fn build(
    mem: &GuestMemoryMmap,
    bootargs: &str,
    initrd: Option<InitrdRegion>,
    machine: &Machine,
    virtio: &[DeviceSlot],
) -> FdtWriterResult<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "mercury microVM")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    cpus(&mut fdt, &machine.mpidrs)?;
    memory(&mut fdt, mem)?;
    chosen(&mut fdt, bootargs, initrd)?;
    psci(&mut fdt)?;
    let num_cpus = u8::try_from(machine.mpidrs.len()).unwrap_or(u8::MAX);
    gic(&mut fdt, machine.gic, num_cpus)?;
    timer(&mut fdt, machine.gic, num_cpus)?;
    clock(&mut fdt)?;
    serial(&mut fdt)?;
    rtc(&mut fdt)?;
    pvpanic(&mut fdt)?;
    power_button(&mut fdt)?;
    boot_timer(&mut fdt)?;
    for slot in virtio {
        virtio_mmio(&mut fdt, slot)?;
    }

    fdt.end_node(root)?;
    fdt.finish()
}

/// The node path of the console UART (also `/chosen/stdout-path`).
pub(crate) fn serial_node_name() -> String {
    format!("uart@{:x}", SERIAL.base)
}

fn cpus(fdt: &mut FdtWriter, mpidrs: &[u64]) -> FdtWriterResult<()> {
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 0)?;
    for (index, mpidr) in mpidrs.iter().enumerate() {
        let cpu = fdt.begin_node(&format!("cpu@{index:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u64("reg", mpidr & MPIDR_AFFINITY_MASK)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)
}

fn memory(fdt: &mut FdtWriter, mem: &GuestMemoryMmap) -> FdtWriterResult<()> {
    for region in mem.iter() {
        let start = region.start_addr().raw_value();
        let node = fdt.begin_node(&format!("memory@{start:x}"))?;
        fdt.property_string("device_type", "memory")?;
        fdt.property_array_u64("reg", &[start, region.len()])?;
        fdt.end_node(node)?;
    }
    Ok(())
}

fn chosen(
    fdt: &mut FdtWriter,
    bootargs: &str,
    initrd: Option<InitrdRegion>,
) -> FdtWriterResult<()> {
    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", bootargs)?;
    fdt.property_string("stdout-path", &format!("/{}", serial_node_name()))?;
    if let Some(initrd) = initrd {
        let start = initrd.addr.raw_value();
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", start + initrd.size as u64)?;
    }
    fdt.end_node(chosen)
}

fn psci(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let psci = fdt.begin_node("psci")?;
    fdt.property_string("compatible", "arm,psci-0.2")?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)
}

fn gic(fdt: &mut FdtWriter, version: GicVersion, num_cpus: u8) -> FdtWriterResult<()> {
    let intc = fdt.begin_node(&format!("intc@{GIC_DIST_ADDR:x}"))?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    match version {
        GicVersion::V3 { its } => {
            fdt.property_string("compatible", "arm,gic-v3")?;
            let redist_size = gic_redist_end(num_cpus) - GIC_REDIST_ADDR;
            fdt.property_array_u64(
                "reg",
                &[GIC_DIST_ADDR, GIC_DIST_SIZE, GIC_REDIST_ADDR, redist_size],
            )?;
            fdt.property_array_u32(
                "interrupts",
                &[GIC_PPI, GIC_MAINTENANCE_PPI, IRQ_TYPE_LEVEL_HIGH],
            )?;
            if its {
                let node = fdt.begin_node(&format!("its@{GIC_ITS_ADDR:x}"))?;
                fdt.property_string("compatible", "arm,gic-v3-its")?;
                fdt.property_null("msi-controller")?;
                fdt.property_u32("#msi-cells", 1)?;
                fdt.property_phandle(ITS_PHANDLE)?;
                fdt.property_array_u64("reg", &[GIC_ITS_ADDR, GIC_ITS_SIZE])?;
                fdt.end_node(node)?;
            }
        }
        GicVersion::V2 => {
            fdt.property_string("compatible", "arm,cortex-a15-gic")?;
            fdt.property_array_u64(
                "reg",
                &[
                    GIC_DIST_ADDR,
                    GICV2_DIST_SIZE,
                    GICV2_CPU_ADDR,
                    GICV2_CPU_SIZE,
                ],
            )?;
        }
    }
    fdt.end_node(intc)
}

/// PPI flags: GICv2 also names the CPUs the PPI is wired to (bits 8..16).
fn ppi_flags(version: GicVersion, num_cpus: u8) -> u32 {
    match version {
        GicVersion::V2 => IRQ_TYPE_LEVEL_HIGH | (((1u32 << num_cpus.min(8)) - 1) << 8),
        GicVersion::V3 { .. } => IRQ_TYPE_LEVEL_HIGH,
    }
}

fn timer(fdt: &mut FdtWriter, version: GicVersion, num_cpus: u8) -> FdtWriterResult<()> {
    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    fdt.property_null("always-on")?;
    let flags = ppi_flags(version, num_cpus);
    let cells: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&ppi| [GIC_PPI, ppi, flags])
        .collect();
    fdt.property_array_u32("interrupts", &cells)?;
    fdt.end_node(timer)
}

fn clock(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let clock = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", APB_CLOCK_HZ)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(CLOCK_PHANDLE)?;
    fdt.end_node(clock)
}

fn serial(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let uart = fdt.begin_node(&serial_node_name())?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &[SERIAL.base, SERIAL.len])?;
    fdt.property_u32("clock-frequency", SERIAL_CLOCK_HZ)?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, SERIAL_IRQ, IRQ_TYPE_EDGE_RISING])?;
    fdt.end_node(uart)
}

fn rtc(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let Some(rtc) = RTC else { return Ok(()) };
    let node = fdt.begin_node(&format!("rtc@{:x}", rtc.base))?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,pl031".to_string(), "arm,primecell".to_string()],
    )?;
    fdt.property_array_u64("reg", &[rtc.base, rtc.len])?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, RTC_IRQ, IRQ_TYPE_LEVEL_HIGH])?;
    fdt.property_u32("clocks", CLOCK_PHANDLE)?;
    fdt.property_string("clock-names", "apb_pclk")?;
    fdt.end_node(node)
}

fn pvpanic(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let node = fdt.begin_node(&format!("pvpanic@{:x}", PVPANIC.base))?;
    fdt.property_string("compatible", "qemu,pvpanic-mmio")?;
    fdt.property_array_u64("reg", &[PVPANIC.base, PVPANIC.len])?;
    fdt.end_node(node)
}

/// The PL061 and, under `gpio-keys`, its line that reports `KEY_POWER`
/// (Linux: `gpio-pl061`, `gpio-keys`; systemd-logind tags such a key as a
/// power switch).
fn power_button(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let gpio = fdt.begin_node(&format!("pl061@{:x}", GPIO.base))?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,pl061".to_string(), "arm,primecell".to_string()],
    )?;
    fdt.property_array_u64("reg", &[GPIO.base, GPIO.len])?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, GPIO_IRQ, IRQ_TYPE_EDGE_RISING])?;
    fdt.property_null("gpio-controller")?;
    fdt.property_u32("#gpio-cells", 2)?;
    fdt.property_u32("clocks", CLOCK_PHANDLE)?;
    fdt.property_string("clock-names", "apb_pclk")?;
    fdt.property_phandle(GPIO_PHANDLE)?;
    fdt.end_node(gpio)?;

    let keys = fdt.begin_node("gpio-keys")?;
    fdt.property_string("compatible", "gpio-keys")?;
    let key = fdt.begin_node("poweroff")?;
    fdt.property_string("label", "GPIO Key Poweroff")?;
    fdt.property_u32("linux,code", Pl061::KEY_POWER)?;
    fdt.property_array_u32(
        "gpios",
        &[
            GPIO_PHANDLE,
            u32::from(Pl061::POWER_BUTTON_LINE),
            GPIO_ACTIVE_HIGH,
        ],
    )?;
    fdt.end_node(key)?;
    fdt.end_node(keys)
}

fn boot_timer(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let node = fdt.begin_node(&format!("boot-timer@{BOOT_TIMER_ADDR:x}"))?;
    fdt.property_string("compatible", "mercury,boot-timer")?;
    fdt.property_array_u64("reg", &[BOOT_TIMER_ADDR, BOOT_TIMER_SIZE])?;
    fdt.end_node(node)
}

fn virtio_mmio(fdt: &mut FdtWriter, slot: &DeviceSlot) -> FdtWriterResult<()> {
    let node = fdt.begin_node(&format!("virtio_mmio@{:x}", slot.addr))?;
    fdt.property_string("compatible", "virtio,mmio")?;
    fdt.property_array_u64("reg", &[slot.addr, slot.len])?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, slot.irq, IRQ_TYPE_EDGE_RISING])?;
    fdt.property_null("dma-coherent")?;
    fdt.end_node(node)
}

/// Writes the blob at [`FDT_ADDR`], refusing one larger than its room.
pub(crate) fn write_fdt(mem: &GuestMemoryMmap, dtb: &[u8]) -> Result<(), ArchError> {
    if dtb.len() as u64 > FDT_MAX_SIZE {
        return Err(ArchError::FdtTooLarge {
            size: dtb.len(),
            max: FDT_MAX_SIZE,
        });
    }
    mem.write_slice(dtb, GuestAddress(FDT_ADDR))
        .map_err(|source| ArchError::GuestMemory {
            what: "device tree",
            addr: FDT_ADDR,
            source,
        })
}

#[cfg(test)]
#[path = "fdt_tests.rs"]
mod tests;
