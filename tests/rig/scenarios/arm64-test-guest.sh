#!/bin/sh
# Boots the aarch64 no_std test guest (arm64 Image) under mercury inside the
# arm64 L1 with 4 vCPUs (then once with 1): the guest finds its UART, RAM, CPUs, PSCI and boot
# timer in mercury's FDT, reports one CHECK line per check and powers off
# through PSCI SYSTEM_OFF, so mercury exits 0. The rig builds the static
# aarch64 mercury ($MERCURY_BIN_AARCH64 overrides it; docs/RIG.md, "The
# aarch64 L1").
# rig-arch: aarch64
# rig-images: test-guest-arm64
# rig-timeout: 300
# rig-expect: mercury-present test-guest-exit test-guest-end
# rig-expect: test-guest-serial test-guest-cpu test-guest-smp test-guest-timer
# rig-expect: test-guest-memory test-guest-1vcpu
. /rig/lib.sh

rig_check_mercury_present || exit 0

log=/tmp/test-guest.serial
err=/tmp/test-guest.stderr
rm -f $log $err
RIG_BOOT_LABEL=test-guest-arm64
rig_vm 120 $log $err mercury run --kernel /images/test-guest-arm64 --vcpus 4 --memory 128 \
    --cmdline "checks=serial,cpu,smp,timer,memory expect_mib=128" --serial $log

rig_arm64_test_guest_checks $log $err

# The same guest with 1 vCPU: the FDT has one CPU and nothing is started.
log=/tmp/test-guest-1.serial
err=/tmp/test-guest-1.stderr
rm -f $log $err
RIG_BOOT_LABEL=test-guest-arm64-1vcpu
rig_vm 120 $log $err mercury run --kernel /images/test-guest-arm64 --vcpus 1 --memory 128 \
    --cmdline "checks=cpu,smp" --serial $log
cpu=$(grep -a -m 1 '^CHECK cpu ' $log)
smp=$(grep -a -m 1 '^CHECK smp ' $log)
if [ "$rig_rc" -eq 0 ] && echo " $cpu " | grep -q ' PASS .*fdt_cpus=1 ' &&
    echo " $smp " | grep -q ' PASS cpus=1 expected=1 '; then
    rig_pass test-guest-1vcpu "rc=0; $cpu; $smp"
else
    rig_fail test-guest-1vcpu "rc=$rig_rc ${rig_why:+($rig_why) }cpu '$cpu' smp '$smp'"
    rig_show $err 15 "mercury stderr"
fi
exit 0
