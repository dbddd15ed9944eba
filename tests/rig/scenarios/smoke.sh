#!/bin/sh
# Smoke test of the rig itself: L1 has a working KVM and the static mercury runs in it.
# rig-timeout: 300
# rig-expect: kvm-dev kvm-nested mercury-help
. /rig/lib.sh

# /dev/kvm is the misc device 10:232.
numbers=$(stat -c '%t:%T' /dev/kvm 2>/dev/null)
if [ -c /dev/kvm ] && [ "$numbers" = "a:e8" ]; then
    rig_pass kvm-dev "/dev/kvm is a char device 10:232"
else
    rig_fail kvm-dev "/dev/kvm missing or wrong (major:minor hex '$numbers', want a:e8)"
fi

# kvm_amd found SVM with nested paging (QEMU's emulated NPT).
npt=$(dmesg | grep -i -m 1 'nested paging enabled')
if [ -n "$npt" ]; then
    rig_pass kvm-nested "$npt"
else
    rig_fail kvm-nested "kvm_amd did not report nested paging"
    dmesg | grep -i -E 'kvm|svm' | tail -n 10
fi

# mercury (static, musl) starts in L1 and prints its usage.
mercury --help >/tmp/help.out 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -q -i 'usage' /tmp/help.out; then
    rig_pass mercury-help "exit 0, $(grep -i -m 1 'usage' /tmp/help.out)"
else
    rig_fail mercury-help "mercury --help: exit $rc, want 0 and a usage text"
    rig_show /tmp/help.out 15 "mercury --help output"
fi
exit 0
