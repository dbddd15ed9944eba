#!/bin/sh
# Boots the arm64 microVM kernel (Image) with the arm64 busybox initramfs
# under mercury inside the arm64 L1, with 1 and 2 vCPUs: /init runs, sees
# the CPUs and memory mercury gave, and powers off through PSCI SYSTEM_OFF,
# so mercury exits 0. No console= on the command line: the kernel takes its
# console from the FDT's /chosen/stdout-path, whichever UART mercury
# emulates. The rig builds the static aarch64 mercury
# ($MERCURY_BIN_AARCH64 overrides it).
# rig-arch: aarch64
# rig-images: linux-kernel-arm64 initramfs-arm64
# rig-timeout: 600
# rig-expect: mercury-present
# rig-expect: smp1-exit smp1-init smp1-info smp2-exit smp2-init smp2-info
. /rig/lib.sh

rig_check_mercury_present || exit 0

RIG_BOOTS=2
for n in 1 2; do
    log=/tmp/linux-smp$n.serial
    err=/tmp/linux-smp$n.stderr
    rm -f $log $err
    RIG_BOOT_LABEL=image-smp$n
    rig_vm 120 $log $err mercury run --kernel /images/linux-kernel-arm64 \
        --initrd /images/initramfs-arm64 --vcpus $n --memory 256 \
        --cmdline "panic=1 mercury.action=poweroff" --serial $log
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
rig_boots_done
exit 0
