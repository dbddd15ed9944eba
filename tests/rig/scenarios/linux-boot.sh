#!/bin/sh
# Boots mercury's microVM Linux kernel with the busybox test initramfs inside
# L1: as an ELF vmlinux through PVH (from its XEN_ELFNOTE_PHYS32_ENTRY note),
# as the same ELF without that note (Linux 64-bit boot protocol at e_entry)
# and as a bzImage (64-bit entry), each with 1 and 2 vCPUs; then a guest
# poweroff, a power-off through the ACPI power button mercury presses on
# SIGPWR, and two guest panics (sysrq crash; init missing). Ten guest boots
# in one L1 run.
# rig-images: linux-kernel linux-elf64 linux-bzimage initramfs
# rig-timeout: 900
# rig-expect: vmlinux-smp1-entry vmlinux-smp1-exit vmlinux-smp1-init vmlinux-smp1-info
# rig-expect: vmlinux-smp2-entry vmlinux-smp2-exit vmlinux-smp2-init vmlinux-smp2-info
# rig-expect: elf64-smp1-entry elf64-smp1-exit elf64-smp1-init elf64-smp1-info
# rig-expect: elf64-smp2-entry elf64-smp2-exit elf64-smp2-init elf64-smp2-info
# rig-expect: bzimage-smp1-entry bzimage-smp1-exit bzimage-smp1-init bzimage-smp1-info
# rig-expect: bzimage-smp2-entry bzimage-smp2-exit bzimage-smp2-init bzimage-smp2-info
# rig-expect: poweroff-exit powerbutton-ready powerbutton-exit panic panic-noinit
. /rig/lib.sh

MEMORY_MIB=256
# MemTotal is RAM minus what the kernel reserves for itself: it must be
# above 200 MiB and can never exceed the 256 MiB given.
MEM_MIN_KB=204800
MEM_MAX_KB=262144
# Limit for one guest boot (they take 10-25 s in L1).
BOOT_TIMEOUT=120
# 3 kernels x 1 and 2 vCPUs, then poweroff, powerbutton, panic and
# panic-noinit.
RIG_BOOTS=10
rig_trace_on

# boot LABEL KERNEL VCPUS ARGS: one `mercury run` with ARGS appended to the
# base command line (e.g. mercury.action=reboot); sets rc, secs, log, err.
boot() {
    log=/tmp/$1.serial
    err=/tmp/$1.stderr
    rig_trace_clear
    RIG_BOOT_LABEL=$1
    rig_vm $BOOT_TIMEOUT "$log" "$err" mercury run --kernel "$2" --initrd /images/initramfs \
        --vcpus "$3" --memory $MEMORY_MIB \
        --cmdline "console=ttyS0 reboot=k panic=1 $4" \
        --serial "$log"
    rc=$rig_rc
    secs=$rig_secs
    echo "rig: $1: mercury exited $rc after $secs s${rig_why:+ ($rig_why)}"
}

# show_failed_boot: the evidence after a failed verdict on the boot just
# done: guest console, mercury's stderr and L1's KVM trace (from which the
# rig recognises a guest the emulated host derailed).
show_failed_boot() {
    rig_show "$log" 15 "guest console"
    rig_show "$err" 15 "mercury stderr"
    rig_show_kvm_trace
}

# The boot-timer value mercury logs on stderr, for the record.
boot_timer() { grep -a -i -m 1 'boot time' "$err" | sed 's/.*\] //' | cut -c 1-80; }

exit_detail() {
    if [ -n "$rig_why" ]; then echo "rc=$rc ($rig_why)"; else echo "rc=$rc secs=$secs"; fi
}

# check_boot PREFIX VCPUS PROTOCOL: verdicts on the boot just done.
check_boot() {
    entry=$(grep -a -m 1 'entered through' "$err" | sed 's/.*entered through //')
    case "$entry" in
        "$3 at "*) rig_pass "$1-entry" "entered through $entry" ;;
        *) rig_fail "$1-entry" "want mercury to log 'entered through $3 at ...'; got '$entry'" ;;
    esac
    if [ "$rc" -eq 0 ]; then
        rig_pass "$1-exit" "rc=0 secs=$secs $(boot_timer)"
    else
        rig_fail "$1-exit" "$(exit_detail), want 0 (guest reboot)"
        rig_show "$err" 15 "mercury stderr"
        rig_show_kvm_trace
    fi
    if grep -a -q 'MERCURY-GUEST INIT' "$log"; then
        rig_pass "$1-init" "initramfs /init ran"
    else
        rig_fail "$1-init" "no 'MERCURY-GUEST INIT' on the guest console"
        rig_show "$log" 30 "guest console"
    fi
    nproc=$(rig_field "$log" 'MERCURY-GUEST INFO' nproc)
    mem=$(rig_field "$log" 'MERCURY-GUEST INFO' memtotal_kb)
    if rig_is_int "$nproc" && rig_is_int "$mem" && [ "$nproc" -eq "$2" ] &&
        [ "$mem" -gt $MEM_MIN_KB ] && [ "$mem" -le $MEM_MAX_KB ]; then
        rig_pass "$1-info" "nproc=$nproc memtotal_kb=$mem"
    else
        rig_fail "$1-info" "nproc='$nproc' (want $2) memtotal_kb='$mem' (want $MEM_MIN_KB < x <= $MEM_MAX_KB)"
    fi
}

for kernel in vmlinux elf64 bzimage; do
    case $kernel in
        vmlinux) image=/images/linux-kernel protocol=PVH ;;
        elf64) image=/images/linux-elf64 protocol="the Linux 64-bit boot protocol" ;;
        bzimage) image=/images/linux-bzimage protocol="the Linux 64-bit boot protocol" ;;
    esac
    for vcpus in 1 2; do
        boot "$kernel-smp$vcpus" "$image" "$vcpus" mercury.action=reboot
        check_boot "$kernel-smp$vcpus" "$vcpus" "$protocol"
    done
done

# A guest poweroff ends mercury with status 0 too.
boot poweroff /images/linux-kernel 1 mercury.action=poweroff
action=missing
grep -a -q 'MERCURY-GUEST ACTION poweroff' "$log" && action=seen
if [ "$rc" -eq 0 ] && [ $action = seen ]; then
    rig_pass poweroff-exit "rc=0 secs=$secs after 'MERCURY-GUEST ACTION poweroff'"
else
    rig_fail poweroff-exit "want rc=0 after 'MERCURY-GUEST ACTION poweroff'; got $(exit_detail), that line: $action"
    show_failed_boot
fi

# The host asks, the guest decides: SIGPWR makes mercury press the ACPI
# power button (the GED notifies the DSDT's PNP0C0C device); the guest's
# button driver reports KEY_POWER, busybox acpid (mercury.action=powerbutton)
# runs its power-button script, which powers off, and mercury exits 0
# (rig_power_button in /rig/lib.sh).
log=/tmp/powerbutton.serial
rm -f "$log"
rig_press_power_when_ready "$log" $BOOT_TIMEOUT &
presser=$!
boot powerbutton /images/linux-kernel 2 mercury.action=powerbutton
kill $presser 2>/dev/null
wait $presser 2>/dev/null
rig_power_button_checks "$log" "$err" "$rc" "$secs" || show_failed_boot

# A guest kernel panic is reported as such: the kernel tells pvpanic after
# printing its message, mercury ends the VM at once, exits 3 and says
# "guest kernel panicked" on stderr. With panic=1 a VMM that ignored pvpanic
# would see the guest reboot and exit 0. Two ways to panic: a sysrq crash
# from /init, and no init at all (rdinit= names a missing file).
# check_panic LABEL: verdict on the boot just done.
check_panic() {
    panicked=no
    grep -a -q 'Kernel panic' "$log" && panicked=yes
    reported=no
    grep -a -q 'guest kernel panicked' "$err" && reported=yes
    got="got $(exit_detail), guest 'Kernel panic' line: $panicked, 'guest kernel panicked' on stderr: $reported"
    if [ $panicked = yes ] && [ "$rc" -eq 3 ] && [ $reported = yes ]; then
        rig_pass "$1" "rc=3; $(grep -a -m 1 'Kernel panic' "$log" | cut -c 1-100)"
    else
        rig_fail "$1" "want the guest's 'Kernel panic', mercury exit 3 and 'guest kernel panicked' on stderr; $got"
        show_failed_boot
    fi
}

boot panic /images/linux-kernel 1 mercury.action=panic
check_panic panic

# No init: the kernel panics with "No working init found" (or "Requested
# init ... failed"), before any userspace ran.
boot panic-noinit /images/linux-kernel 1 "rdinit=/no/such/init init=/no/such/init"
check_panic panic-noinit
exit 0
