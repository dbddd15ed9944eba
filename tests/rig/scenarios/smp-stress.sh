#!/bin/sh
# Repeated 2-vCPU Linux boots, to hunt rare failures (an application
# processor's triple fault, see docs/BENCHMARKS.md "Known problems"): ROUNDS
# rounds of one boot per kernel (vmlinux through PVH, the same ELF through the
# 64-bit entry, bzImage), interleaved so that a problem of L1 itself hits all
# kernels alike. Every boot must end with the guest's reboot (exit 0) after
# /init ran; a failed boot shows its guest console and mercury's stderr.
# One verdict per kernel with its failure count. Run by hand (not in CI):
#   cargo run -p mercury-rig -- run smp-stress
# L1's KVM traces its exits and injected exceptions (tracefs) into a ring
# buffer that is cleared before each boot; a failed boot shows the buffer's
# tail: what the vCPUs did last, e.g. the exit before a triple fault.
# rig-images: linux-kernel linux-elf64 linux-bzimage initramfs
# rig-timeout: 3000
# rig-expect: stress-vmlinux stress-elf64 stress-bzimage
. /rig/lib.sh

ROUNDS=40
# Boot order within a round.
KERNELS="bzimage elf64 vmlinux"
MEMORY_MIB=256
VCPUS=2
BOOT_TIMEOUT=120

rig_trace_on

fails_vmlinux=0 fails_elf64=0 fails_bzimage=0
for round in $(seq 1 $ROUNDS); do
    for kernel in $KERNELS; do
        case $kernel in
            vmlinux) image=/images/linux-kernel ;;
            elf64) image=/images/linux-elf64 ;;
            bzimage) image=/images/linux-bzimage ;;
        esac
        log=/tmp/$kernel.serial
        err=/tmp/$kernel.stderr
        rm -f "$log"
        rig_trace_clear
        rig_vm $BOOT_TIMEOUT "$log" "$err" mercury run --kernel "$image" --initrd /images/initramfs \
            --vcpus $VCPUS --memory $MEMORY_MIB \
            --cmdline "console=ttyS0 reboot=k panic=1 quiet mercury.action=reboot" \
            --serial "$log"
        if [ "$rig_rc" -eq 0 ] && grep -a -q 'MERCURY-GUEST INIT' "$log"; then
            continue
        fi
        eval "fails_$kernel=\$((fails_$kernel + 1))"
        echo "rig: round $round $kernel: mercury exited $rig_rc after $rig_secs s${rig_why:+ ($rig_why)}"
        rig_show "$log" 40 "guest console"
        rig_show "$err" 40 "mercury stderr"
        rig_show_kvm_trace
    done
    echo "rig: round $round/$ROUNDS done: failures vmlinux=$fails_vmlinux elf64=$fails_elf64 bzimage=$fails_bzimage"
done

for kernel in vmlinux elf64 bzimage; do
    eval "fails=\$fails_$kernel"
    if [ "$fails" -eq 0 ]; then
        rig_pass "stress-$kernel" "$ROUNDS boots with $VCPUS vCPUs, all reached /init and rebooted"
    else
        rig_fail "stress-$kernel" "$fails of $ROUNDS boots with $VCPUS vCPUs failed"
    fi
done
exit 0
