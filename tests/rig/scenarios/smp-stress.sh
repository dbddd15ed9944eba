#!/bin/sh
# Repeated 2-vCPU Linux boots, to measure how often a boot fails and whose
# fault it is: ROUNDS rounds of one mercury boot per kernel (vmlinux through
# PVH, the same ELF through the 64-bit entry, bzImage), interleaved so that
# a problem of L1 itself hits all kernels alike, and one boot of the control
# VMM per round (QEMU with KVM, -M microvm, the same bzImage and initramfs:
# QEMU boots no ELF without a PVH note, and QEMU 10's microvm showed no
# console output in 120 s with the PVH vmlinux, under TCG on the host too).
# The control VMM's failures are the environment's rate (L0's emulated SVM
# and L1's KVM) apart from mercury's. Every boot must end with the guest's
# reboot after /init ran; a failed boot shows its guest console,
# the VMM's stderr and L1's KVM trace (cleared before each boot), and
# RIG-BOOT-FAILED, which the host counts and classifies per boot (`rig run`
# prints the table). One verdict per kernel and one for the control VMM,
# each with its failure count. Run by hand (not in CI):
#   cargo run -q -p mercury-rig --bin rig -- run smp-stress
# rig-images: linux-kernel linux-elf64 linux-bzimage initramfs
# rig-tools: control-vmm
# rig-timeout: 4200
# rig-expect: stress-vmlinux stress-elf64 stress-bzimage stress-control
. /rig/lib.sh

ROUNDS=40
# Boot order within a round; the control boot comes last.
KERNELS="bzimage elf64 vmlinux"
MEMORY_MIB=256
VCPUS=2
BOOT_TIMEOUT=120
CMDLINE="console=ttyS0 reboot=k panic=1 quiet"
RIG_BOOTS=$((ROUNDS * 4))

rig_trace_on

image_of() {
    case $1 in
        vmlinux) echo /images/linux-kernel ;;
        elf64) echo /images/linux-elf64 ;;
        bzimage) echo /images/linux-bzimage ;;
    esac
}

# failed VMM LABEL ROUND: the evidence of the boot just done, and its count.
failed() {
    eval "fails_$2=\$((fails_$2 + 1))"
    rig_boot_failed "vmm=$1 label=$2 round=$3 rc=$rig_rc"
    echo "rig: round $3 $1 $2: exited $rig_rc after $rig_secs s${rig_why:+ ($rig_why)}"
    rig_show "$log" 40 "guest console"
    rig_show "$err" 40 "$1 stderr"
    rig_show_kvm_trace
}

fails_vmlinux=0 fails_elf64=0 fails_bzimage=0 fails_control=0 control_boots=0
for round in $(seq 1 $ROUNDS); do
    for kernel in $KERNELS; do
        log=/tmp/$kernel.serial
        err=/tmp/$kernel.stderr
        rm -f "$log"
        rig_trace_clear
        RIG_BOOT_LABEL=$kernel
        rig_vm $BOOT_TIMEOUT "$log" "$err" mercury run --kernel "$(image_of $kernel)" \
            --initrd /images/initramfs --vcpus $VCPUS --memory $MEMORY_MIB \
            --cmdline "$CMDLINE mercury.action=reboot" --serial "$log"
        if [ "$rig_rc" -eq 0 ] && grep -a -q 'MERCURY-GUEST INIT' "$log"; then
            continue
        fi
        failed mercury "$kernel" "$round"
    done
    # The control VMM. microvm has no i8042 for reboot=k, and its ACPI
    # power-off does not end QEMU, so the guest reboots through the ACPI
    # reset register (reboot=a) and -no-reboot makes QEMU exit 0. A triple
    # fault would end QEMU the same way: L1's KVM trace tells them apart.
    kernel=bzimage
    log=/tmp/control-$kernel.serial
    err=/tmp/control-$kernel.stderr
    rm -f "$log"
    rig_trace_clear
    RIG_BOOT_LABEL=control-$kernel
    control_boots=$((control_boots + 1))
    rig_vm $BOOT_TIMEOUT "$log" "$err" control-vmm -accel kvm -cpu host -M microvm \
        -smp $VCPUS -m $MEMORY_MIB -nodefaults -no-user-config -display none -no-reboot \
        -serial "file:$log" -kernel "$(image_of $kernel)" -initrd /images/initramfs \
        -append "console=ttyS0 reboot=a panic=1 quiet mercury.action=reboot"
    if [ "$rig_rc" -ne 0 ] || ! grep -a -q 'MERCURY-GUEST INIT' "$log" || rig_trace_shutdowns; then
        failed control-vmm control "$round"
    fi
    echo "rig: round $round/$ROUNDS done: failures vmlinux=$fails_vmlinux elf64=$fails_elf64 bzimage=$fails_bzimage control=$fails_control/$control_boots"
done
rig_boots_done

for kernel in vmlinux elf64 bzimage; do
    eval "fails=\$fails_$kernel"
    if [ "$fails" -eq 0 ]; then
        rig_pass "stress-$kernel" "$ROUNDS boots with $VCPUS vCPUs, all reached /init and rebooted"
    else
        rig_fail "stress-$kernel" "$fails of $ROUNDS boots with $VCPUS vCPUs failed"
    fi
done
if [ "$fails_control" -eq 0 ]; then
    rig_pass stress-control "$control_boots control-VMM boots (QEMU/KVM microvm) with $VCPUS vCPUs, all reached /init and powered off"
else
    rig_fail stress-control "$fails_control of $control_boots control-VMM boots (QEMU/KVM microvm) with $VCPUS vCPUs failed"
fi
exit 0
