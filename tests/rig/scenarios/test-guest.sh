#!/bin/sh
# Boots the no_std test guest (PVH ELF) under mercury inside L1 with 4 vCPUs,
# on a real, hardware-style KVM: the guest reports one CHECK line per check
# and resets through the i8042, so mercury exits 0.
# rig-images: test-guest
# rig-timeout: 300
# rig-expect: test-guest-exit test-guest-end
# rig-expect: test-guest-serial test-guest-cpuid test-guest-smp test-guest-timer
. /rig/lib.sh

log=/tmp/test-guest.serial
err=/tmp/test-guest.stderr
rig_vm 120 $log $err mercury run --kernel /images/test-guest --vcpus 4 --memory 128 \
    --cmdline "checks=serial,cpuid,smp,timer" --serial $log

if [ "$rig_rc" -eq 0 ]; then
    rig_pass test-guest-exit "rc=0 secs=$rig_secs $(grep -a -i -m 1 'boot time' $err | sed 's/.*\] //' | cut -c 1-80)"
else
    rig_fail test-guest-exit "rc=$rig_rc secs=$rig_secs ${rig_why:+($rig_why) }want 0: the guest resets at the end"
    rig_show $err 15 "mercury stderr"
fi
if grep -a -q '^TEST-GUEST END' $log && ! grep -a -q '^TEST-GUEST PANIC' $log; then
    rig_pass test-guest-end "$(grep -a -m 1 '^TEST-GUEST START' $log | cut -c 1-100)"
else
    rig_fail test-guest-end "no 'TEST-GUEST END', or a 'TEST-GUEST PANIC'"
    rig_show $log 20 "guest console"
fi

# check NAME [REQUIRED-WORD]: the guest's 'CHECK NAME PASS ...' line.
check() {
    line=$(grep -a -m 1 "^CHECK $1 " $log)
    status=$(echo "$line" | cut -d' ' -f3)
    detail=$(echo "$line" | cut -d' ' -f4-)
    if [ -z "$line" ]; then
        rig_fail "test-guest-$1" "no 'CHECK $1' line from the guest"
    elif [ "$status" = PASS ] && { [ -z "$2" ] || echo " $detail " | grep -q " $2 "; }; then
        rig_pass "test-guest-$1" "$detail"
    else
        rig_fail "test-guest-$1" "guest said: $status $detail${2:+ (want $2)}"
    fi
}
check serial
check cpuid
check smp cpus=4
check timer
exit 0
