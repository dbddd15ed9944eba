#!/bin/sh
# Smoke test of the aarch64 rig: the arm64 L1 (QEMU virt with EL2) has a
# working KVM in VHE mode, a tiny VM runs on it (kvm-probe: vGICv3, PSCI
# 0.2, MMIO exits, SYSTEM_OFF), and L1's kernel can make the TAP devices and
# bridges that guest networking needs.
# rig-arch: aarch64
# rig-timeout: 300
# rig-modules: tun bridge
# rig-tools: kvm-probe
# rig-expect: kvm-dev kvm-vhe kvm-vm tap-bridge
. /rig/lib.sh

rig_check_kvm_dev

# L1's kernel booted at EL2 and runs KVM with the host at EL2 (VHE).
vhe=$(dmesg | grep -m 1 'VHE mode initialized')
if [ -n "$vhe" ]; then
    rig_pass kvm-vhe "$vhe"
else
    rig_fail kvm-vhe "KVM did not report VHE mode"
    dmesg | grep -i -E 'kvm|el2|hyp' | tail -n 10 | sed 's/^/    /'
fi

# One VM from create to PSCI SYSTEM_OFF, without mercury.
timeout 30 kvm-probe >/tmp/probe.out 2>&1
rc=$?
line=$(grep -m 1 '^kvm-probe: ' /tmp/probe.out)
if [ "$rc" -eq 0 ] && [ "${line#kvm-probe: PASS }" != "$line" ]; then
    rig_pass kvm-vm "${line#kvm-probe: PASS }"
else
    rig_fail kvm-vm "kvm-probe exit $rc (124: timed out): ${line:-no report}"
    rig_show /tmp/probe.out 15 "kvm-probe output"
fi

rig_check_tap_bridge
exit 0
