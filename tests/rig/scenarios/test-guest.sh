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
if grep -a -q '^TEST-GUEST END' $log && ! grep -a -q '^TEST-GUEST PANIC' $log; then
    rig_pass test-guest-end "$(grep -a -m 1 '^TEST-GUEST START' $log | cut -c 1-100)"
else
    rig_fail test-guest-end "no 'TEST-GUEST END', or a 'TEST-GUEST PANIC'"
    rig_show $log 20 "guest console"
fi

# check NAME [WORD...]: the guest's 'CHECK NAME PASS ...' line, whose detail
# must contain every WORD (key=value) as a whole word.
check() {
    name=$1
    shift
    line=$(grep -a -m 1 "^CHECK $name " $log)
    status=$(echo "$line" | cut -d' ' -f3)
    detail=$(echo "$line" | cut -d' ' -f4-)
    missing=
    for word in "$@"; do
        echo " $detail " | grep -q -F " $word " || missing="$missing $word"
    done
    if [ -z "$line" ]; then
        rig_fail "test-guest-$name" "no 'CHECK $name' line from the guest"
    elif [ "$status" = PASS ] && [ -z "$missing" ]; then
        rig_pass "test-guest-$name" "$detail"
    else
        rig_fail "test-guest-$name" "guest said: $status $detail${missing:+ (want$missing)}"
    fi
}
check serial scratch=5a,a5 lsr=0x60 loopback=mercury loopback_bytes=7 rx_discarded=0
check cpuid apic_id=0 lapic_id=0 hypervisor=1 kvm=1
check smp cpus=4 expected=4 apic_ids=0,1,2,3
check memory mib=128 expect_mib=128
# The value the guest read back from the boot timer is the one mercury logs
# on its exit line.
logged=$(rig_field $err 'exit="' boot_timer_us)
if rig_is_int "$logged" && [ "$logged" -gt 0 ]; then
    check timer "boot_timer_us=$logged"
else
    rig_fail test-guest-timer "mercury logged boot_timer_us='$logged', want a number > 0"
    rig_show $err 15 "mercury stderr"
fi
exit 0
