#!/bin/sh
# Boots the arm64 microVM kernel (Image) with the arm64 busybox initramfs
# under mercury inside the arm64 L1, with 1 and 2 vCPUs: /init runs, sees
# the CPUs and memory mercury gave, and powers off through PSCI SYSTEM_OFF,
# so mercury exits 0; then reboot -f (PSCI SYSTEM_RESET, exit 0), the
# power button (SIGPWR: a PL061 GPIO line under gpio-keys, busybox acpid
# powers off, exit 0) and a kernel panic (pvpanic on MMIO, exit 3). No
# console= on the command line: the kernel takes its console from the FDT's
# /chosen/stdout-path, whichever UART mercury emulates. The rig builds the static aarch64 mercury
# ($MERCURY_BIN_AARCH64 overrides it).
# rig-arch: aarch64
# rig-images: linux-kernel-arm64 initramfs-arm64
# rig-timeout: 600
# rig-expect: mercury-present
# rig-expect: smp1-exit smp1-init smp1-info smp2-exit smp2-init smp2-info
# rig-expect: reboot powerbutton-ready powerbutton-exit panic
. /rig/lib.sh

rig_check_mercury_present || exit 0

RIG_BOOTS=5
# boot NAME VCPUS CMDLINE: the Image and initramfs, 256 MiB, console in
# $log and mercury's stderr in $err (/tmp/linux-NAME.*); sets rig_rc.
boot() {
    log=/tmp/linux-$1.serial
    err=/tmp/linux-$1.stderr
    rm -f $log $err
    RIG_BOOT_LABEL=image-$1
    rig_vm 120 $log $err mercury run --kernel /images/linux-kernel-arm64 \
        --initrd /images/initramfs-arm64 --vcpus "$2" --memory 256 \
        --cmdline "$3" --serial $log
}

for n in 1 2; do
    boot smp$n $n "panic=1 mercury.action=poweroff"
    if [ "$rig_rc" -eq 0 ]; then
        rig_pass smp$n-exit "rc=0 secs=$rig_secs"
    else
        rig_fail smp$n-exit "rc=$rig_rc secs=$rig_secs ${rig_why:+($rig_why) }want 0 after PSCI SYSTEM_OFF"
        rig_show $err 15 "mercury stderr"
    fi
    if grep -a -q 'MERCURY-GUEST INIT' $log; then
        # The kernel's own time stamp when it started /init.
        at=$(grep -a -m 1 'Run /init' $log | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
        rig_pass smp$n-init "MERCURY-GUEST INIT, kernel ran /init at ${at:-?} s, $(grep -a -m 1 'printk: .*console .*enabled' $log | sed 's/^\[[^]]*\] //')"
    else
        rig_fail smp$n-init "no 'MERCURY-GUEST INIT' on the guest console"
        rig_show $log 30 "guest console"
    fi
    nproc=$(rig_field $log 'MERCURY-GUEST INFO' nproc)
    mem=$(rig_field $log 'MERCURY-GUEST INFO' memtotal_kb)
    if [ "$nproc" = "$n" ] && rig_is_int "$mem" && [ "$mem" -gt 204800 ] && [ "$mem" -le 262144 ]; then
        rig_pass smp$n-info "nproc=$nproc memtotal_kb=$mem"
    else
        rig_fail smp$n-info "nproc='$nproc' memtotal_kb='$mem', want $n and 200-256 MiB"
    fi
done

# reboot -f: PSCI SYSTEM_RESET, which mercury reports as a reset (exit 0).
boot reboot 1 "panic=1 mercury.action=reboot"
if [ "$rig_rc" -eq 0 ] && grep -a -q 'MERCURY-GUEST INIT' $log && grep -q 'exit="guest reset' $err; then
    rig_pass reboot "rc=0 secs=$rig_secs: $(grep -o 'exit="[^"]*"' $err)"
else
    rig_fail reboot "rc=$rig_rc secs=$rig_secs ${rig_why:+($rig_why) }want 0 and exit=\"guest reset…\" after PSCI SYSTEM_RESET"
    rig_show $err 15 "mercury stderr"
    rig_show $log 20 "guest console"
fi

# The power button (rig_power_button_checks in /rig/lib.sh).
rm -f /tmp/linux-powerbutton.serial
rig_press_power_when_ready /tmp/linux-powerbutton.serial 120 &
presser=$!
boot powerbutton 1 "panic=1 mercury.action=powerbutton"
kill $presser 2>/dev/null
wait $presser 2>/dev/null
if ! rig_power_button_checks $log $err "$rig_rc" "$rig_secs"; then
    rig_show $err 15 "mercury stderr"
    rig_show $log 30 "guest console"
fi

# A real panic (sysrq c): the kernel's pvpanic MMIO driver tells mercury,
# which exits 3 without waiting for panic=N.
boot panic 1 "panic=30 mercury.action=panic"
if [ "$rig_rc" -eq 3 ] && grep -a -q 'Kernel panic' $log && grep -q 'guest kernel panicked' $err; then
    rig_pass panic "rc=3 secs=$rig_secs: $(grep -a -m 1 'Kernel panic' $log | cut -c 1-100)"
else
    rig_fail panic "rc=$rig_rc secs=$rig_secs ${rig_why:+($rig_why) }want 3, the guest's 'Kernel panic' and 'guest kernel panicked' on stderr"
    rig_show $err 15 "mercury stderr"
    rig_show $log 20 "guest console"
fi
rig_boots_done
exit 0
