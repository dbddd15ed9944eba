//! The FDT, parsed back with the `fdt` crate: nodes and properties as the
//! guest kernel will read them.

use fdt::node::FdtNode;
use fdt::Fdt;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::arch::aarch64::{layout, memory_regions};

const MIB: u64 = 1 << 20;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&memory_regions(128 * MIB)).unwrap()
}

fn slots() -> Vec<DeviceSlot> {
    vec![
        DeviceSlot {
            addr: layout::VIRTIO_MMIO_START,
            len: 0x1000,
            irq: layout::VIRTIO_IRQ_FIRST,
        },
        DeviceSlot {
            addr: layout::VIRTIO_MMIO_START + 0x1000,
            len: 0x1000,
            irq: layout::VIRTIO_IRQ_FIRST + 1,
        },
    ]
}

fn machine(gic: GicVersion, cpus: u64) -> Machine {
    Machine {
        // MPIDR_EL1 as KVM reports it: bit 31 is RES1, Aff0 the index
        // within a cluster of 16, Aff1 the cluster.
        mpidrs: (0..cpus)
            .map(|i| (1 << 31) | ((i / 16) << 8) | (i % 16))
            .collect(),
        gic,
    }
}

fn initrd() -> InitrdRegion {
    InitrdRegion {
        addr: GuestAddress(0x8700_0000),
        size: 0x1234,
    }
}

fn build(gic: GicVersion, cpus: u64, initrd: Option<InitrdRegion>) -> Vec<u8> {
    create_fdt(
        &memory(),
        "console=ttyS0 panic=1",
        initrd,
        &machine(gic, cpus),
        &slots(),
    )
    .unwrap()
}

/// A property as big-endian 32-bit cells.
fn cells(node: FdtNode<'_, '_>, name: &str) -> Vec<u32> {
    let value = node
        .property(name)
        .unwrap_or_else(|| panic!("{} has no {name}", node.name))
        .value;
    value
        .chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

/// A property as big-endian 64-bit values.
fn u64s(node: FdtNode<'_, '_>, name: &str) -> Vec<u64> {
    cells(node, name)
        .chunks(2)
        .map(|c| (u64::from(c[0]) << 32) | u64::from(c[1]))
        .collect()
}

fn string(node: FdtNode<'_, '_>, name: &str) -> String {
    node.property(name)
        .and_then(|p| p.as_str())
        .unwrap_or_else(|| panic!("{} has no string {name}", node.name))
        .to_string()
}

fn node<'b, 'a>(fdt: &'b Fdt<'a>, path: &str) -> FdtNode<'b, 'a> {
    fdt.find_node(path)
        .unwrap_or_else(|| panic!("no node {path}"))
}

#[test]
fn root_memory_and_chosen() {
    let dtb = build(GicVersion::V3 { its: true }, 2, Some(initrd()));
    let fdt = Fdt::new(&dtb).unwrap();
    let root = node(&fdt, "/");
    assert_eq!(string(root, "compatible"), "linux,dummy-virt");
    assert_eq!(cells(root, "#address-cells"), [2]);
    assert_eq!(cells(root, "#size-cells"), [2]);
    assert_eq!(cells(root, "interrupt-parent"), [GIC_PHANDLE]);

    let memory = node(&fdt, "/memory@80000000");
    assert_eq!(string(memory, "device_type"), "memory");
    assert_eq!(u64s(memory, "reg"), [0x8000_0000, 128 * MIB]);

    let chosen = fdt.chosen();
    assert_eq!(chosen.bootargs(), Some("console=ttyS0 panic=1"));
    assert_eq!(chosen.stdout().unwrap().name, "uart@40001000");
    let chosen = node(&fdt, "/chosen");
    assert_eq!(u64s(chosen, "linux,initrd-start"), [0x8700_0000]);
    assert_eq!(u64s(chosen, "linux,initrd-end"), [0x8700_1234]);
}

#[test]
fn no_initrd_properties_without_an_initrd() {
    let dtb = build(GicVersion::V3 { its: false }, 1, None);
    let fdt = Fdt::new(&dtb).unwrap();
    let chosen = node(&fdt, "/chosen");
    assert!(chosen.property("linux,initrd-start").is_none());
    assert!(chosen.property("linux,initrd-end").is_none());
}

#[test]
fn cpus_carry_their_mpidr_affinity_and_psci() {
    let dtb = build(GicVersion::V3 { its: false }, 18, None);
    let fdt = Fdt::new(&dtb).unwrap();
    let cpus = node(&fdt, "/cpus");
    assert_eq!(cells(cpus, "#address-cells"), [2]);
    assert_eq!(cells(cpus, "#size-cells"), [0]);
    let nodes: Vec<_> = cpus.children().collect();
    assert_eq!(nodes.len(), 18);
    for (i, cpu) in nodes.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(cpu.name, format!("cpu@{i:x}"));
        assert_eq!(string(cpu, "device_type"), "cpu");
        assert_eq!(string(cpu, "enable-method"), "psci");
        // Bit 31 (RES1) is not part of the affinity.
        assert_eq!(u64s(cpu, "reg"), [((i / 16) << 8) | (i % 16)]);
    }
    let psci = node(&fdt, "/psci");
    assert_eq!(string(psci, "compatible"), "arm,psci-0.2");
    assert_eq!(string(psci, "method"), "hvc");
}

#[test]
fn gic_v3_with_its_redistributors_sized_per_vcpu() {
    let dtb = build(GicVersion::V3 { its: true }, 4, None);
    let fdt = Fdt::new(&dtb).unwrap();
    let intc = node(&fdt, "/intc@8000000");
    assert_eq!(string(intc, "compatible"), "arm,gic-v3");
    assert!(intc.property("interrupt-controller").is_some());
    assert_eq!(cells(intc, "#interrupt-cells"), [3]);
    assert_eq!(cells(intc, "phandle"), [GIC_PHANDLE]);
    assert_eq!(
        u64s(intc, "reg"),
        [0x0800_0000, 0x1_0000, 0x080a_0000, 4 * 0x2_0000]
    );
    let its = node(&fdt, "/intc@8000000/its@8080000");
    assert_eq!(string(its, "compatible"), "arm,gic-v3-its");
    assert!(its.property("msi-controller").is_some());
    assert_eq!(u64s(its, "reg"), [0x0808_0000, 0x2_0000]);

    let timer = node(&fdt, "/timer");
    assert_eq!(string(timer, "compatible"), "arm,armv8-timer");
    assert_eq!(
        cells(timer, "interrupts"),
        [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
    );

    let dtb = build(GicVersion::V3 { its: false }, 1, None);
    let fdt = Fdt::new(&dtb).unwrap();
    assert!(fdt.find_node("/intc@8000000/its@8080000").is_none());
}

#[test]
fn gic_v2_fallback() {
    let dtb = build(GicVersion::V2, 2, None);
    let fdt = Fdt::new(&dtb).unwrap();
    let intc = node(&fdt, "/intc@8000000");
    assert_eq!(string(intc, "compatible"), "arm,cortex-a15-gic");
    assert_eq!(
        u64s(intc, "reg"),
        [0x0800_0000, 0x1000, 0x0801_0000, 0x2000]
    );
    // GICv2 PPIs name their CPUs: two vCPUs, mask 0b11.
    let timer = node(&fdt, "/timer");
    assert_eq!(cells(timer, "interrupts")[2], 0x304);
}

#[test]
fn platform_devices() {
    let dtb = build(GicVersion::V3 { its: false }, 1, None);
    let fdt = Fdt::new(&dtb).unwrap();
    let uart = node(&fdt, "/uart@40001000");
    assert_eq!(string(uart, "compatible"), "ns16550a");
    assert_eq!(u64s(uart, "reg"), [0x4000_1000, 0x1000]);
    assert_eq!(cells(uart, "interrupts"), [0, layout::SERIAL_IRQ, 1]);
    assert_eq!(cells(uart, "clock-frequency"), [1_843_200]);

    let rtc = node(&fdt, "/rtc@40002000");
    let compatible: Vec<_> = rtc.compatible().unwrap().all().collect();
    assert_eq!(compatible, ["arm,pl031", "arm,primecell"]);
    assert_eq!(u64s(rtc, "reg"), [0x4000_2000, 0x1000]);
    assert_eq!(cells(rtc, "clocks"), [CLOCK_PHANDLE]);
    assert_eq!(string(rtc, "clock-names"), "apb_pclk");
    let clock = fdt.find_phandle(CLOCK_PHANDLE).unwrap();
    assert_eq!(string(clock, "compatible"), "fixed-clock");

    let timer = fdt.find_compatible(&["mercury,boot-timer"]).unwrap();
    assert_eq!(timer.name, "boot-timer@40000000");
    assert_eq!(u64s(timer, "reg"), [0x4000_0000, 0x1000]);

    let pvpanic = node(&fdt, "/pvpanic@40003000");
    assert_eq!(string(pvpanic, "compatible"), "qemu,pvpanic-mmio");
    assert_eq!(u64s(pvpanic, "reg"), [0x4000_3000, 0x1000]);
}

#[test]
fn the_power_button_is_a_pl061_line_under_gpio_keys() {
    let dtb = build(GicVersion::V3 { its: false }, 1, None);
    let fdt = Fdt::new(&dtb).unwrap();
    let gpio = node(&fdt, "/pl061@40004000");
    let compatible: Vec<_> = gpio.compatible().unwrap().all().collect();
    assert_eq!(compatible, ["arm,pl061", "arm,primecell"]);
    assert_eq!(u64s(gpio, "reg"), [0x4000_4000, 0x1000]);
    assert_eq!(cells(gpio, "interrupts"), [0, layout::GPIO_IRQ, 1]);
    assert!(gpio.property("gpio-controller").is_some());
    assert_eq!(cells(gpio, "#gpio-cells"), [2]);
    assert_eq!(cells(gpio, "clocks"), [CLOCK_PHANDLE]);
    assert_eq!(string(gpio, "clock-names"), "apb_pclk");

    let keys = node(&fdt, "/gpio-keys");
    assert_eq!(string(keys, "compatible"), "gpio-keys");
    let key = node(&fdt, "/gpio-keys/poweroff");
    assert_eq!(cells(key, "linux,code"), [116], "KEY_POWER");
    let gpios = cells(key, "gpios");
    assert_eq!(gpios, [GPIO_PHANDLE, 3, 0], "line 3, active high");
    let controller = fdt.find_phandle(gpios[0]).unwrap();
    assert_eq!(controller.name, "pl061@40004000");
}

#[test]
fn one_virtio_mmio_node_per_device() {
    let dtb = build(GicVersion::V3 { its: false }, 1, None);
    let fdt = Fdt::new(&dtb).unwrap();
    let nodes: Vec<_> = fdt
        .all_nodes()
        .filter(|n| n.name.starts_with("virtio_mmio@"))
        .collect();
    assert_eq!(nodes.len(), 2);
    for (node, slot) in nodes.into_iter().zip(slots()) {
        assert_eq!(string(node, "compatible"), "virtio,mmio");
        assert_eq!(u64s(node, "reg"), [slot.addr, 0x1000]);
        // SPI number, edge rising: GSI n is SPI n (INTID 32 + n).
        assert_eq!(cells(node, "interrupts"), [0, slot.irq, 1]);
        assert!(node.property("dma-coherent").is_some());
    }
}

#[test]
fn the_blob_is_written_at_the_fdt_address_and_size_checked() {
    let mem = memory();
    let dtb = build(GicVersion::V3 { its: false }, 1, None);
    write_fdt(&mem, &dtb).unwrap();
    let mut magic = [0u8; 4];
    mem.read_slice(&mut magic, GuestAddress(layout::FDT_ADDR))
        .unwrap();
    assert_eq!(magic, [0xd0, 0x0d, 0xfe, 0xed]);

    let huge = vec![0u8; (layout::FDT_MAX_SIZE + 1) as usize];
    let e = write_fdt(&mem, &huge).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the device tree is 2097153 bytes; at most 2097152 fit"
    );
}
