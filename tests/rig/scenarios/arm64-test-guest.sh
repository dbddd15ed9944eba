#!/bin/sh
# Boots the aarch64 no_std test guest (arm64 Image) under mercury inside the
# arm64 L1 with 4 vCPUs: the guest finds its UART, RAM, CPUs, PSCI and boot
# timer in mercury's FDT, reports one CHECK line per check and powers off
# through PSCI SYSTEM_OFF, so mercury exits 0. Needs a static aarch64
# mercury in $MERCURY_BIN_AARCH64 (docs/RIG.md, "The aarch64 L1"); not in
# `cargo test` until the launcher builds for aarch64.
# rig-arch: aarch64
# rig-images: test-guest-arm64
# rig-timeout: 300
# rig-expect: mercury-present test-guest-exit test-guest-end
# rig-expect: test-guest-serial test-guest-cpu test-guest-smp test-guest-timer
# rig-expect: test-guest-memory
. /rig/lib.sh

if [ -x /bin/mercury ]; then
    rig_pass mercury-present "$(mercury --version 2>&1 | head -n 1)"
else
    rig_fail mercury-present "no /bin/mercury: set MERCURY_BIN_AARCH64 to a static aarch64 mercury"
    exit 0
fi

log=/tmp/test-guest.serial
err=/tmp/test-guest.stderr
rm -f $log $err
RIG_BOOT_LABEL=test-guest-arm64
rig_vm 120 $log $err mercury run --kernel /images/test-guest-arm64 --vcpus 4 --memory 128 \
    --cmdline "checks=serial,cpu,smp,timer,memory expect_mib=128" --serial $log

if [ "$rig_rc" -eq 0 ]; then
    rig_pass test-guest-exit "rc=0 secs=$rig_secs"
else
    rig_fail test-guest-exit "rc=$rig_rc secs=$rig_secs ${rig_why:+($rig_why) }want 0: the guest powers off at the end"
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
check serial
check cpu fdt_cpus=4 in_fdt=1 el=1
check smp cpus=4 expected=4
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
