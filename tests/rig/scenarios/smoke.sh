#!/bin/sh
# Smoke test of the rig itself: L1 has a working KVM, the static mercury runs
# in it, and L1's kernel can make the TAP devices and bridges that guest
# networking needs.
# rig-timeout: 300
# rig-modules: tun bridge
# rig-expect: kvm-dev kvm-nested mercury-help tap-bridge
. /rig/lib.sh

rig_check_kvm_dev

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

rig_check_tap_bridge
exit 0
