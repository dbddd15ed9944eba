#!/bin/sh
# Boot-time benchmark on L1's real (nested) KVM: the static boot-harness
# (benches/) boots the microVM Linux kernel with the test initramfs under
# mercury several times per variant, variants interleaved, and prints its
# table: VMM setup (process start -> first KVM_RUN), kernel (first KVM_RUN
# -> the boot timer the initramfs /init writes first thing) and total, each
# min/median/max, and ratios of medians against the first variant.
#   bench-kernels: vmlinux (PVH entry) and bzImage, 1 and 2 vCPUs, `quiet`;
#   bench-cmdline: vmlinux, 1 vCPU, without and with `quiet`.
# The checks assert only that the measurements were produced (every boot
# counted, the harness exited 0, the medians parsed), never a time: L1 runs
# under TCG; its numbers are recorded in docs/BENCHMARKS.md, not judged here.
# With RIG_COMPARE_WITH=/path/to/firecracker on the host (a static binary),
# it is /bin/compare-vmm here and `compare` boots it and mercury with the
# same vmlinux, initramfs, command line, vCPUs and memory, interleaved; the
# harness prints mercury/other ratios (no bzImage: Firecracker boots only
# ELF kernels on x86_64).
# rig-images: linux-kernel linux-bzimage initramfs
# rig-tools: boot-harness compare-vmm
# rig-timeout: 1200
# rig-expect: bench-kernels bench-cmdline
. /rig/lib.sh

# Counted boots per variant, after WARMUP uncounted ones.
RUNS=10
WARMUP=1
MEMORY_MIB=128
BASE_CMDLINE="console=ttyS0 reboot=k panic=1 mercury.action=reboot"
# Limit for one boot (they take ~1-5 s in L1).
BOOT_TIMEOUT=120

INITRD=/images/initramfs
. /rig/bench.sh

bench bench-kernels 4 --kernel /images/linux-kernel --kernel /images/linux-bzimage \
    --vcpus 1,2 --cmdline "$BASE_CMDLINE quiet"
bench bench-cmdline 2 --kernel /images/linux-kernel --vcpus 1 \
    --cmdline "$BASE_CMDLINE" --cmdline "$BASE_CMDLINE quiet"

if [ -x /bin/compare-vmm ]; then
    bench compare 2 --kernel /images/linux-kernel --vcpus 1,2 --cmdline "$BASE_CMDLINE quiet" \
        --compare-with /bin/compare-vmm
    # The other VMM's boots, and the mercury/other ratios.
    if result=$(variants_ok "$out" firecracker 2 total_ms) && [ $rc -eq 0 ] &&
        grep -q '/  firecracker, ' "$out"; then
        rig_pass compare-vmm "$(compare-vmm --version 2>&1 | head -n 1 | cut -c 1-60) medians:$result"
    else
        rig_fail compare-vmm "rc=$rc; $result; mercury/other ratio rows: $(grep -c '/  firecracker, ' "$out")"
    fi
fi
exit 0
