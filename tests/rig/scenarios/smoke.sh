#!/bin/sh
# Smoke test of the rig itself: L1 has a working KVM, the static mercury runs
# in it, and L1's kernel can make the TAP devices and bridges that guest
# networking needs.
# rig-timeout: 300
# rig-modules: tun bridge
# rig-expect: kvm-dev kvm-nested mercury-help tap-bridge
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

# A TAP device enslaved to a bridge, both up: what a virtio-net backend uses.
# The kernel says so in sysfs (brif/ link) and in the bridge port's state.
ip link set lo up
if tunctl -t rigtap0 >/tmp/net.out 2>&1 && brctl addbr rigbr0 >>/tmp/net.out 2>&1 &&
    brctl addif rigbr0 rigtap0 >>/tmp/net.out 2>&1 && ip link set rigtap0 up >>/tmp/net.out 2>&1 &&
    ip link set rigbr0 up >>/tmp/net.out 2>&1 && [ -e /sys/class/net/rigbr0/brif/rigtap0 ] &&
    [ -e /dev/net/tun ]; then
    rig_pass tap-bridge "rigtap0 is a port of rigbr0 ($(cat /sys/class/net/rigtap0/tun_flags 2>/dev/null) tun_flags), /dev/net/tun present"
else
    rig_fail tap-bridge "could not make TAP rigtap0 a port of bridge rigbr0"
    rig_show /tmp/net.out 15 "tunctl/brctl/ip output"
    ls -l /dev/net /sys/class/net 2>&1 | sed 's/^/    /'
fi
exit 0
