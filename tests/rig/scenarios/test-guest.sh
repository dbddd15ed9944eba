#!/bin/sh
# Boots the no_std test guest (PVH ELF) under mercury inside L1 with 4 vCPUs,
# on a real, hardware-style KVM: the guest reports one CHECK line per check
# and resets through the i8042, so mercury exits 0. Each check must PASS and
# report what the VMM provided: the UART's scratch register and loopback,
# APIC IDs 0-3, the 128 MiB announced, the boot time mercury logged.
# rig-images: test-guest
# rig-timeout: 300
# rig-expect: test-guest-exit test-guest-end
# rig-expect: test-guest-serial test-guest-cpuid test-guest-smp test-guest-timer
# rig-expect: test-guest-memory
. /rig/lib.sh

log=/tmp/test-guest.serial
err=/tmp/test-guest.stderr
# mercury appends to a serial file: start from an empty one.
rm -f $log $err
rig_vm 120 $log $err mercury run --kernel /images/test-guest --vcpus 4 --memory 128 \
    --cmdline "checks=serial,cpuid,smp,timer,memory expect_mib=128" --serial $log

if [ "$rig_rc" -eq 0 ]; then
    rig_pass test-guest-exit "rc=0 secs=$rig_secs $(grep -a -i -m 1 'boot time' $err | sed 's/.*\] //' | cut -c 1-80)"
else
    rig_fail test-guest-exit "rc=$rig_rc secs=$rig_secs ${rig_why:+($rig_why) }want 0: the guest resets at the end"
    rig_show $err 15 "mercury stderr"
fi
rig_test_guest_end $log

rig_test_guest_check $log serial scratch=5a,a5 lsr=0x60 loopback=mercury loopback_bytes=7 rx_discarded=0
rig_test_guest_check $log cpuid apic_id=0 lapic_id=0 hypervisor=1 kvm=1
rig_test_guest_check $log smp cpus=4 expected=4 apic_ids=0,1,2,3
rig_test_guest_check $log memory mib=128 expect_mib=128
rig_test_guest_timer $log $err
exit 0
