#!/bin/sh
# Boot-time benchmark on the arm64 L1's real (nested, VHE) KVM: the static
# aarch64 boot-harness (benches/) boots the arm64 microVM kernel (Image)
# with the arm64 test initramfs under the static aarch64 mercury, several
# times per variant, variants interleaved, and prints its table: VMM setup
# (process start -> first KVM_RUN), kernel (first KVM_RUN -> the boot timer
# the initramfs /init writes) and total, each min/median/max.
#   bench-vcpus:   1 and 2 vCPUs, `quiet`;
#   bench-cmdline: 1 vCPU, without and with `quiet`.
# On arm64 /init finds the boot timer in the device tree, so it writes it
# after mounting /proc and /sys (x86_64 writes it first thing): a few ms
# on hardware, more under TCG; docs/BENCHMARKS.md says so beside the x86
# numbers. The checks assert only that the measurements were produced,
# never a time (boot-bench.sh, /rig/bench.sh).
# rig-arch: aarch64
# rig-images: linux-kernel-arm64 initramfs-arm64
# rig-tools: boot-harness
# rig-timeout: 1200
# rig-expect: mercury-present bench-vcpus bench-cmdline
. /rig/lib.sh

rig_check_mercury_present || exit 0

RUNS=10
WARMUP=1
MEMORY_MIB=128
# PSCI SYSTEM_RESET ends each boot (mercury exits 0 on a guest reset).
BASE_CMDLINE="panic=1 mercury.action=reboot"
BOOT_TIMEOUT=120
INITRD=/images/initramfs-arm64
. /rig/bench.sh

bench bench-vcpus 2 --kernel /images/linux-kernel-arm64 --vcpus 1,2 --cmdline "$BASE_CMDLINE quiet"
bench bench-cmdline 2 --kernel /images/linux-kernel-arm64 --vcpus 1 \
    --cmdline "$BASE_CMDLINE" --cmdline "$BASE_CMDLINE quiet"
exit 0
