#!/bin/sh
# mercury's virtio devices under real Linux drivers inside the arm64 L1
# (QEMU virt with EL2, a real KVM in VHE mode): the arm64 microVM kernel
# with the arm64 busybox initramfs runs the checks of /rig/virtio.sh
# (tests/rig/share/virtio.sh, shared with the x86_64 scenario `virtio`):
# an ext4 disk read and written (checked in L1 after exit), an fsync that
# survives SIGKILL, a read-only disk, two guests on a bridge (ping, then
# 4 MiB over TCP; arm64 TCG is slower than x86), and vsock both ways. No
# console= on the command line: the kernel takes its console from the
# FDT's /chosen/stdout-path.
# rig-arch: aarch64
# rig-images: linux-kernel-arm64 initramfs-arm64 test-disk guest-tool-arm64
# (Debian's arm64 L1 kernel has ext4 as a module, and L1 mounts the
# images: ext4 with the crc32c it asks the crypto API for.)
# rig-modules: tun bridge loop crc32c_generic ext4
# rig-timeout: 1200
# rig-expect: mercury-present blk-guest blk-host durable-host ro-guest ro-host
# rig-expect: net-ping net-tcp vsock-guest-to-host vsock-host-to-guest
. /rig/lib.sh

rig_check_mercury_present || exit 0

KERNEL=/images/linux-kernel-arm64
INITRD=/images/initramfs-arm64
GUEST_TOOL=/images/guest-tool-arm64
CMDLINE="panic=1 quiet"
NET_BYTES=4194304
RIG_BOOTS=6
. /rig/virtio.sh
rig_boots_done
exit 0
