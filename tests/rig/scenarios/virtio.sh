#!/bin/sh
# mercury's virtio devices under real Linux drivers, inside the x86_64 L1
# (a real KVM): blk, durable, ro, net and vsock are the checks of
# /rig/virtio.sh (tests/rig/share/virtio.sh, which arm64-virtio shares),
# with 16 MiB over TCP; then
#   acpi:     the same kernel built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES
#             finds its disk and NIC through the DSDT alone
# rig-images: linux-kernel linux-kernel-acpi initramfs test-disk guest-tool
# rig-modules: tun bridge loop
# rig-timeout: 1200
# rig-expect: blk-guest blk-host durable-host ro-guest ro-host
# rig-expect: net-ping net-tcp vsock-guest-to-host vsock-host-to-guest acpi-disk acpi-net
. /rig/lib.sh

KERNEL=/images/linux-kernel
INITRD=/images/initramfs
GUEST_TOOL=/images/guest-tool
CMDLINE="console=ttyS0 reboot=k panic=1 quiet"
NET_BYTES=16777216
RIG_BOOTS=9
. /rig/virtio.sh

# --- acpi: no virtio_mmio.device= support in the kernel ------------------
cp /images/test-disk /tmp/acpi.img
KERNEL_OVERRIDE=/images/linux-kernel-acpi
guest acpi-blk blk "" --disk /tmp/acpi.img
if [ "$(rig_field "$log" 'MERCURY-GUEST BLK' token)" = "$TOKEN" ]; then
    rig_pass acpi-disk "the kernel without cmdline devices mounted its disk (found through the DSDT)"
else
    rig_fail acpi-disk "rc=$rc: $(grep -a 'MERCURY-GUEST BLK' "$log")"
    evidence
fi
tunctl -t mtap2 >/dev/null && ip link set mtap2 up
guest acpi-net net "mercury.ip=10.78.0.1/24 mercury.peer=10.78.0.1" --net tap=mtap2
mac=$(rig_field "$log" 'MERCURY-GUEST NET up' mac)
if [ -n "$mac" ]; then
    rig_pass acpi-net "eth0 came up with mac=$mac (found through the DSDT)"
else
    rig_fail acpi-net "no eth0 in the guest"
    evidence
fi
KERNEL_OVERRIDE=
rig_boots_done
exit 0
