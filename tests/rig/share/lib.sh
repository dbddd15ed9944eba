# Helpers for rig scenarios; L1's /rig/lib.sh. Source it with `. /rig/lib.sh`.
# Runs under busybox ash: POSIX sh plus `local`, no bash arrays.

# rig_result CHECK PASS|FAIL DETAIL...: one verdict line for the host.
rig_result() {
    local check=$1 status=$2
    shift 2
    echo "RIG-RESULT $check $status $*"
}
rig_pass() { local check=$1; shift; rig_result "$check" PASS "$@"; }
rig_fail() { local check=$1; shift; rig_result "$check" FAIL "$@"; }

# rig_expect CHECK DETAIL COMMAND...: PASS if COMMAND exits 0, else FAIL.
rig_expect() {
    local check=$1 detail=$2
    shift 2
    if "$@"; then rig_pass "$check" "$detail"; else rig_fail "$check" "$detail"; fi
}

# rig_now: L1 uptime in seconds (10 ms resolution).
rig_now() { cut -d' ' -f1 /proc/uptime; }

# rig_cs: L1 uptime in centiseconds, an integer for shell arithmetic.
rig_cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }

# rig_since START: seconds elapsed since START (a rig_now value), 2 decimals.
rig_since() { awk -v s="$1" -v e="$(rig_now)" 'BEGIN { printf "%.2f", e - s }'; }

# rig_vm LIMIT SERIAL STDERR COMMAND...: runs a VMM command (e.g. `mercury run
# ... --serial SERIAL`) in the background with its stderr in STDERR and waits
# for it. Sets rig_rc (its exit status), rig_secs and rig_why (empty, or why it
# was killed). It is killed (rig_rc=124) after LIMIT seconds, and (rig_rc=125)
# RIG_STOP_GRACE seconds after the guest console shows the guest stopped for
# good (halted, powered off, or panicked without reboot) while the VMM keeps
# running: a guest that stops must end the VMM, and waiting out LIMIT would
# only cost CI time.
RIG_STOP_GRACE=${RIG_STOP_GRACE:-15}
RIG_STOP_PATTERN='reboot: System halted|reboot: Power down|end Kernel panic'
#
# Every call is one numbered boot on the console, for the host's per-boot
# evidence (report::evidence): `RIG-BOOT n=N vmm=NAME label=LABEL of=TOTAL`
# before it and `RIG-BOOT-END n=N rc=RC secs=S` after it; what the scenario
# prints until the next RIG-BOOT (its verdict, rig_show, rig_show_kvm_trace)
# belongs to that boot. Set RIG_BOOT_LABEL (e.g. the kernel) and RIG_BOOTS
# (how many boots the scenario makes, for the progress line) before calling.
rig_boot_n=0
rig_vm() {
    local limit=$1 serial=$2 stderr=$3 t0 start pid now stopped=
    shift 3
    rig_boot_begin "$1" "${RIG_BOOT_LABEL:--}"
    t0=$(rig_now)
    start=$(rig_cs)
    "$@" 2>"$stderr" &
    pid=$!
    rig_why=
    while kill -0 "$pid" 2>/dev/null; do
        now=$(rig_cs)
        if [ $((now - start)) -ge $((limit * 100)) ]; then
            rig_why="killed: still running after the $limit s limit"
            break
        fi
        if [ -z "$stopped" ] && grep -a -q -E "$RIG_STOP_PATTERN" "$serial" 2>/dev/null; then
            stopped=$now
        fi
        if [ -n "$stopped" ] && [ $((now - stopped)) -ge $((RIG_STOP_GRACE * 100)) ]; then
            rig_why="killed: the guest stopped ('$(grep -a -o -m 1 -E "$RIG_STOP_PATTERN" "$serial")') but the VMM was still running $RIG_STOP_GRACE s later"
            break
        fi
        sleep 0.2
    done
    if [ -n "$rig_why" ]; then
        kill "$pid" 2>/dev/null
        sleep 0.5
        kill -0 "$pid" 2>/dev/null && sleep 1 && kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        case $rig_why in
            *limit*) rig_rc=124 ;;
            *) rig_rc=125 ;;
        esac
    else
        wait "$pid"
        rig_rc=$?
    fi
    rig_secs=$(rig_since "$t0")
    rig_boot_end "$rig_rc" "$rig_secs${rig_why:+ why=killed}"
}

# rig_boot_begin VMM LABEL / rig_boot_end RC [SECS]: the markers of one
# numbered boot, for a scenario that runs a VMM itself (in the background,
# several at once) rather than through rig_vm.
rig_boot_begin() {
    rig_boot_n=$((rig_boot_n + 1))
    echo "RIG-BOOT n=$rig_boot_n vmm=${1##*/} label=$2 of=${RIG_BOOTS:-?}"
}
rig_boot_end() { echo "RIG-BOOT-END n=$rig_boot_n rc=$1 secs=${2:--}"; }

# rig_boot_failed WHY...: the boot just run (the last rig_vm) failed; the
# host counts it and looks for the environment's evidence in its span.
rig_boot_failed() { echo "RIG-BOOT-FAILED n=$rig_boot_n $*"; }
# rig_boots_done: what follows (e.g. verdicts that sum up many boots)
# belongs to no boot's span.
rig_boots_done() { echo "RIG-BOOTS-DONE"; }

# rig_show FILE [N] [LABEL]: the last N (default 25) lines of FILE, indented,
# so a failure's evidence lands in the console log next to its verdict.
rig_show() {
    local file=$1 n=${2:-25} label=${3:-$1}
    echo "  --- last $n lines of $label ---"
    if [ -f "$file" ]; then tail -n "$n" "$file" | sed 's/^/  | /'; else echo "  | (no file)"; fi
}

# rig_field FILE PREFIX KEY: the value of KEY=value on the last line of FILE
# that contains PREFIX (empty if absent). E.g. rig_field log "MERCURY-GUEST INFO" nproc
rig_field() {
    grep -a "$2" "$1" 2>/dev/null | tail -n 1 | tr ' \r' '\n\n' | sed -n "s/^$3=//p" | tail -n 1
}

# rig_cluster_listing STATE: what exists on L1 that `mercury cluster` could
# have made (links, VMM processes, files under STATE), to compare before
# `up` and after `down`.
rig_cluster_listing() {
    ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
    echo "--- processes"
    ps -o args | grep '[m]ercury run' | sort
    echo "--- state"
    find "$1" 2>/dev/null | sort
}

# rig_cluster_up LABEL SPEC STATE TIMEOUT: `mercury cluster up -f SPEC
# --state-dir STATE --timeout TIMEOUT -o json` as one boot span labelled
# LABEL, its JSON in /tmp/up.json and its stderr in /tmp/up.err (echoed,
# indented); sets rc and secs.
rig_cluster_up() {
    local t0
    RIG_BOOT_LABEL=$1
    rig_trace_clear
    rig_boot_begin mercury "$1"
    t0=$(rig_now)
    mercury cluster up -f "$2" --state-dir "$3" --timeout "$4" -o json >/tmp/up.json 2>/tmp/up.err
    rc=$?
    secs=$(rig_since "$t0")
    rig_boot_end "$rc" "$secs"
    echo "rig: up ($1): exit $rc after $secs s"
    sed 's/^/  up: /' /tmp/up.err
}

# rig_down_poweroff_check OUT SECS NODE...: down-poweroff, every NODE was
# powered off through its power button within `mercury cluster down`'s
# --timeout, before any SIGTERM: OUT (down's output) says
# `stopped NODE (PoweredOff)` for each.
rig_down_poweroff_check() {
    local out=$1 secs=$2 n line ok=0 count=0 detail=
    shift 2
    for n in "$@"; do
        count=$((count + 1))
        line=$(grep -o "stopped $n ([A-Za-z]*)" "$out")
        detail="$detail '${line:-no stopped line for $n}'"
        [ "$line" = "stopped $n (PoweredOff)" ] && ok=$((ok + 1))
    done
    if [ $ok -eq $count ]; then
        rig_pass down-poweroff "in $secs s:$detail"
    else
        rig_fail down-poweroff "want every node powered off by its power button:$detail"
    fi
}

# rig_cluster_down SPEC STATE TIMEOUT NODE...: `mercury cluster down` with
# --timeout TIMEOUT, then again (it must find nothing), its output in
# /tmp/down.out; then the verdicts down-poweroff (rig_down_poweroff_check on
# the NODEs left) and down-clean (both exit 0, and STATE's listing equals
# /tmp/before.txt, which the scenario takes with rig_cluster_listing STATE
# before its first up).
rig_cluster_down() {
    local spec=$1 state=$2 timeout=$3 t0 rc rc2 down_secs
    shift 3
    t0=$(rig_now)
    mercury cluster down -f "$spec" --state-dir "$state" --timeout "$timeout" >/tmp/down.out 2>&1
    rc=$?
    down_secs=$(rig_since "$t0")
    mercury cluster down -f "$spec" --state-dir "$state" >>/tmp/down.out 2>&1
    rc2=$?
    rig_cluster_listing "$state" >/tmp/after.txt
    rig_down_poweroff_check /tmp/down.out "$down_secs" "$@"
    if [ $rc -eq 0 ] && [ $rc2 -eq 0 ] && cmp -s /tmp/before.txt /tmp/after.txt; then
        rig_pass down-clean "in $down_secs s: $(head -1 /tmp/down.out); again: $(tail -1 /tmp/down.out)"
    else
        rig_fail down-clean "exit $rc/$rc2; left over: $(diff /tmp/before.txt /tmp/after.txt | tr '\n' ';'); $(tr '\n' ';' </tmp/down.out)"
    fi
}

# rig_node_field FILE NODE KEY: KEY of node NODE in FILE, the output of
# `mercury cluster status -o json` (empty if absent).
rig_node_field() {
    tr -d ' \n' <"$1" | sed 's/},{/}\n{/g' | grep "\"name\":\"$2\"" |
        sed -n "s/.*\"$3\":\"\{0,1\}\([^,\"}]*\).*/\1/p"
}

# rig_cluster_status: `mercury cluster status -o json` for $SPEC and
# $STATE (the scenario's), its JSON in /tmp/status.json; sets status_rc.
rig_cluster_status() {
    mercury cluster status -f "$SPEC" --state-dir "$STATE" -o json >/tmp/status.json 2>/tmp/status.err
    status_rc=$?
}

# rig_debian_userland IMAGE: Debian's tools from the node image IMAGE
# (iproute2 with netns, etcdctl) as a writable overlay on a read-only loop
# mount at /debian, with L1's /proc, /sys and /dev (needs the loop and
# overlay modules); rig_debian CMD... runs one there, rig_debian_release
# unmounts it. Non-zero if it cannot mount.
rig_debian_userland() {
    mkdir -p /debian-ro /debian-rw /debian
    mount -t tmpfs tmpfs /debian-rw || return 1
    mkdir -p /debian-rw/upper /debian-rw/work
    mount -o loop,ro "$1" /debian-ro || return 1
    mount -t overlay overlay -o lowerdir=/debian-ro,upperdir=/debian-rw/upper,workdir=/debian-rw/work /debian ||
        return 1
    mount -t proc proc /debian/proc
    mount -t sysfs sysfs /debian/sys
    mount --bind /dev /debian/dev
    mkdir -p /debian/run/netns /debian/run/systemd/resolve
}

# Through Debian's env: busybox's chroot would run its own applet for a bare
# command name (its shell prefers applets), not Debian's program.
rig_debian() { chroot /debian /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

# Best effort (L1 powers off next); -d frees the loop device, which
# otherwise keeps the scratch disk busy. `ip netns add` bind-mounts
# /run/netns onto itself, and `ip netns del` leaves that mount.
rig_debian_release() {
    umount /debian/run/netns 2>/dev/null
    umount /debian/dev /debian/sys /debian/proc /debian 2>/dev/null
    umount -d /debian-ro 2>/dev/null
    umount /debian-rw 2>/dev/null
}

# rig_etcd_check PUT_IP GET_IP MEMBER...: etcd-cluster, the external etcd
# on the control-plane nodes answers L1's etcdctl (Debian's, from
# rig_debian_userland): a key put through PUT_IP's client URL is read back
# through GET_IP's, and the member list names exactly the MEMBERs.
rig_etcd_check() {
    local put_ip=$1 get_ip=$2 value="written-through-$1" put_rc got members want
    shift 2
    want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
    rig_debian etcdctl --endpoints "http://$put_ip:2379" put mercury-rig "$value" >/tmp/etcd.out 2>&1
    put_rc=$?
    got=$(rig_debian etcdctl --endpoints "http://$get_ip:2379" get mercury-rig --print-value-only 2>>/tmp/etcd.out)
    members=$(rig_debian etcdctl --endpoints "http://$get_ip:2379" member list 2>>/tmp/etcd.out |
        awk -F', ' '{print $3}' | sort | tr '\n' ' ')
    if [ $put_rc -eq 0 ] && [ "$got" = "$value" ] && [ "$members" = "$want" ]; then
        rig_pass etcd-cluster "put via $put_ip, read back via $get_ip: '$got'; members: $members"
    else
        rig_fail etcd-cluster "put exit $put_rc, read '$got', members '$members' (want '$want'): $(head -5 /tmp/etcd.out | tr '\n' ';')"
        return 1
    fi
}

# rig_bundle_check BUNDLE IP GATEWAY ENDPOINT: bundle, the bare-metal
# machine's join bundle holds its address IP/24, the gateway, a
# JoinConfiguration for the control-plane ENDPOINT (an IP) and apply.sh.
rig_bundle_check() {
    if grep -q "$2/24" "$1/network-config" && grep -q "\"$3\"" "$1/network-config" &&
        grep -q 'kind: JoinConfiguration' "$1/user-data" && grep -q "apiServerEndpoint: $4:6443" "$1/user-data" &&
        [ -x "$1/apply.sh" ]; then
        rig_pass bundle "$(ls "$1" | tr '\n' ' '); command: $(grep -m1 'tar ' /tmp/up.err)"
    else
        rig_fail bundle "$(ls "$1" 2>&1 | tr '\n' ' ')"
        rig_show "$1/network-config" 20 "network-config"
    fi
}

# rig_baremetal_join_check BUNDLE BRIDGE IP ENDPOINT: baremetal-join, a
# network namespace whose veth peer is on BRIDGE stands in for the machine:
# BUNDLE's apply.sh --network-only (with Debian's iproute2, from
# rig_debian_userland) gives it IP/24 and its route, it reaches the
# control-plane ENDPOINT, and L1 reaches it.
rig_baremetal_join_check() {
    local apply_rc addr route
    rig_debian ip netns add bm
    rig_debian ip link add bm-host type veth peer name bm-eth0
    rig_debian ip link set bm-eth0 netns bm
    rig_debian ip link set bm-host master "$2"
    rig_debian ip link set bm-host up
    rm -rf /debian/tmp/bundle
    cp -r "$1" /debian/tmp/bundle
    rig_debian ip netns exec bm sh /tmp/bundle/apply.sh --network-only --iface bm-eth0 >/tmp/apply.out 2>&1
    apply_rc=$?
    addr=$(rig_debian ip netns exec bm ip -4 -o addr show dev bm-eth0 | awk '{print $4}')
    route=$(rig_debian ip netns exec bm ip -4 route show default)
    if [ $apply_rc -eq 0 ] && grep -q "reaches the control-plane endpoint $4" /tmp/apply.out &&
        [ "$addr" = "$3/24" ] && ping -c 2 -W 5 "$3" >/dev/null 2>&1; then
        rig_pass baremetal-join "apply.sh exit 0, $addr, '$route'; $(grep -c . /tmp/apply.out) lines: $(tr '\n' ';' </tmp/apply.out)"
    else
        rig_fail baremetal-join "apply.sh exit $apply_rc, addr '$addr', route '$route': $(tr '\n' ';' </tmp/apply.out)"
    fi
    rig_debian ip link del bm-host
    rig_debian ip netns del bm
}

# rig_watch_start: `mercury cluster reconcile -f $SPEC --watch` in the
# background, polling every 2 s, its log in /tmp/watch.log; sets watcher.
rig_watch_start() {
    mercury cluster reconcile -f "$SPEC" --watch --interval 2s --state-dir "$STATE" >/tmp/watch.log 2>&1 &
    watcher=$!
    sleep 5
}

# rig_watch_until_ready LABEL NODE TIMEOUT: after the scenario changed
# $SPEC, one boot span LABEL while the watcher converges, until NODE is
# ready in status (/tmp/status.json), the watcher dies or TIMEOUT seconds
# pass; sets state (NODE's last) and secs.
rig_watch_until_ready() {
    local t0
    RIG_BOOT_LABEL=$1
    rig_boot_begin mercury "$1"
    t0=$(rig_now)
    state=
    while [ "$(rig_since "$t0" | cut -d. -f1)" -lt "$3" ]; do
        rig_cluster_status
        state=$(rig_node_field /tmp/status.json "$2" state)
        [ "$state" = ready ] && break
        kill -0 "$watcher" 2>/dev/null || break
        sleep 5
    done
    secs=$(rig_since "$t0")
    rig_boot_end "$([ "$state" = ready ] && echo 0 || echo 1)" "$secs"
}

# rig_mercury_vmms: the pids of L1's `mercury run` processes, sorted.
rig_mercury_vmms() { ps -o pid,args | grep '[m]ercury run' | awk '{print $1}' | sort | tr '\n' ' '; }

# rig_watch_invalid_check WRITE FIELD VMMS: watch-invalid, after WRITE (a
# command that makes $SPEC fail validation at FIELD, a grep pattern) the
# watcher logs that it did not apply it, naming FIELD, and keeps the
# cluster (the VMM pids stay the same, VMMS of them); SIGINT then stops
# the watcher and not the nodes.
rig_watch_invalid_check() {
    local before after
    before=$(rig_mercury_vmms)
    $1
    sleep 8
    after=$(rig_mercury_vmms)
    kill -INT "$watcher"
    sleep 3
    if grep -q 'not applied' /tmp/watch.log && grep -q "$2" /tmp/watch.log &&
        [ "$before" = "$after" ] && ! kill -0 "$watcher" 2>/dev/null &&
        [ "$(rig_mercury_vmms | wc -w)" -eq "$3" ]; then
        rig_pass watch-invalid "$(grep -m1 'invalid' /tmp/watch.log); VMMs $after kept; watcher gone after SIGINT"
    else
        rig_fail watch-invalid "VMMs '$before' -> '$after', watcher $(kill -0 "$watcher" 2>/dev/null && echo alive || echo gone)"
        rig_show /tmp/watch.log 20 "watcher"
    fi
}

# rig_is_int VALUE: whether VALUE is a non-negative decimal integer.
rig_is_int() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }

# L1's KVM trace: its exits and injected exceptions, in a ring buffer (the
# last few MiB). A failed guest boot then shows what its vCPUs did last.
RIG_TRACE=/sys/kernel/tracing
# rig_trace_on: start tracing KVM's exits (no-op without tracefs).
rig_trace_on() {
    mount -t tracefs nodev $RIG_TRACE 2>/dev/null
    [ -w $RIG_TRACE/buffer_size_kb ] || { echo "rig: no tracefs in L1, KVM untraced"; return 0; }
    echo 4096 >$RIG_TRACE/buffer_size_kb
    local event
    for event in kvm/kvm_exit kvm/kvm_inj_exception kvm/kvm_userspace_exit; do
        # (the shell reports a missing file itself: quiet it around the echo)
        { echo 1 >$RIG_TRACE/events/$event/enable; } 2>/dev/null || echo "rig: no trace event $event"
    done
    echo 1 >$RIG_TRACE/tracing_on
}
# rig_trace_clear: empty the buffer (before each guest boot).
rig_trace_clear() { [ -w $RIG_TRACE/trace ] && echo >$RIG_TRACE/trace; return 0; }
# rig_trace_shutdowns: whether a vCPU shut down (triple fault) since the
# last rig_trace_clear.
rig_trace_shutdowns() { [ -r $RIG_TRACE/trace ] && grep -a -q 'reason shutdown' $RIG_TRACE/trace; }
# rig_show_kvm_trace: the vCPU shutdowns in the buffer, its tail, and L1's
# modules with their addresses, so a guest RIP can be placed (the host-side
# rig recognises the shutdowns that L0's emulated SVM causes:
# report::environment_derailed_guest).
rig_show_kvm_trace() {
    [ -r $RIG_TRACE/trace ] || return 0
    grep -a 'reason shutdown' $RIG_TRACE/trace >/tmp/rig-shutdowns
    rig_show /tmp/rig-shutdowns 10 "vCPU shutdowns in L1's KVM trace"
    rig_show $RIG_TRACE/trace 30 "L1's KVM trace"
    rig_show /proc/modules 20 "L1's modules"
}

# Checks that scenarios on both architectures share.

# The host asks, the guest decides: SIGPWR makes mercury press the guest's
# power button (x86_64: the ACPI GED notifies the DSDT's PNP0C0C device;
# arm64: a PL061 GPIO line under gpio-keys); the guest's driver reports
# KEY_POWER, busybox acpid (initramfs mercury.action=powerbutton) runs its
# power-button script, which powers off, and mercury exits 0. A guest that
# missed or ignored the press keeps running until rig_vm's limit kills it
# (rc 124): no power-off, no exit 0.
# rig_press_power_when_ready LOG LIMIT: (run it in the background) SIGPWR
# to mercury once the guest console LOG says acpid is watching the button.
rig_press_power_when_ready() {
    local log=$1 limit=$2 n=0 pid
    while [ $n -lt $((limit * 5)) ]; do
        if grep -a -q 'MERCURY-GUEST POWER-BUTTON ready' "$log" 2>/dev/null; then
            pid=$(pidof mercury)
            echo "rig: powerbutton: guest ready, SIGPWR to mercury pid ${pid:-none}"
            [ -n "$pid" ] && kill -PWR $pid
            return
        fi
        n=$((n + 1))
        sleep 0.2
    done
}
# rig_power_button_checks LOG ERR RC SECS: the verdicts powerbutton-ready and
# powerbutton-exit on that boot (its console, mercury's stderr, its exit
# status and seconds); returns 1 when either failed.
rig_power_button_checks() {
    local log=$1 err=$2 rc=$3 secs=$4 ready pressed=missing acpid=missing sigpwr=missing reason ok=0
    ready=$(grep -a -m 1 'MERCURY-GUEST POWER-BUTTON ready' "$log" | sed 's/.*POWER-BUTTON ready //')
    if [ -n "$ready" ]; then
        rig_pass powerbutton-ready "$ready; $(grep -a -m 1 -E 'input: (Power Button|gpio-keys)' "$log" | sed 's/.*\] //' | cut -c 1-80)"
    else
        rig_fail powerbutton-ready "no 'MERCURY-GUEST POWER-BUTTON ready' (a power button input device and acpid on it) on the guest console"
        ok=1
    fi
    grep -a -q 'MERCURY-GUEST POWER-BUTTON pressed' "$log" && pressed=seen
    # busybox acpid logs the action it runs for the KEY_POWER press.
    grep -a -q 'acpid: PWRF/00000080' "$log" && acpid=seen
    grep -a -q "received SIGPWR, pressed the guest's power button" "$err" && sigpwr=seen
    reason=$(grep -a -o 'exit="[^"]*"' "$err" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ $pressed = seen ] && [ $acpid = seen ] && [ $sigpwr = seen ] &&
        [ "$reason" = 'exit="guest powered off"' ]; then
        rig_pass powerbutton-exit "rc=0 secs=$secs $reason after SIGPWR, the guest's 'acpid: PWRF/00000080' and '$(grep -a -m 1 'MERCURY-GUEST POWER-BUTTON pressed' "$log" | sed 's/.*POWER-BUTTON //')'"
    else
        rig_fail powerbutton-exit "want SIGPWR logged, the guest's 'acpid: PWRF/00000080' and 'POWER-BUTTON pressed', rc=0 and exit=\"guest powered off\"; got rc=$rc secs=$secs${rig_why:+ ($rig_why)}, SIGPWR: $sigpwr, acpid: $acpid, pressed: $pressed, reason: ${reason:-none}"
        ok=1
    fi
    return $ok
}

# rig_arm64_test_guest_checks LOG ERR: the verdicts on a boot of the aarch64
# test guest with 4 vCPUs, 128 MiB and `checks=serial,cpu,smp,timer,memory
# expect_mib=128` (rig_rc, rig_secs, rig_why from rig_vm): test-guest-exit
# (exit 0 after its PSCI SYSTEM_OFF), -end, -serial, -cpu, -smp, -memory,
# -timer.
rig_arm64_test_guest_checks() {
    local log=$1 err=$2
    if [ "$rig_rc" -eq 0 ]; then
        rig_pass test-guest-exit "rc=0 secs=$rig_secs"
    else
        rig_fail test-guest-exit "rc=$rig_rc secs=$rig_secs ${rig_why:+($rig_why) }want 0: the guest powers off at the end"
        rig_show "$err" 15 "mercury stderr"
    fi
    rig_test_guest_end "$log"
    rig_test_guest_check "$log" serial
    rig_test_guest_check "$log" cpu fdt_cpus=4 in_fdt=1 el=1
    rig_test_guest_check "$log" smp cpus=4 expected=4
    rig_test_guest_check "$log" memory mib=128 expect_mib=128
    rig_test_guest_timer "$log" "$err"
}

# rig_check_kvm_dev: kvm-dev, /dev/kvm is the misc device 10:232.
rig_check_kvm_dev() {
    local numbers
    numbers=$(stat -c '%t:%T' /dev/kvm 2>/dev/null)
    if [ -c /dev/kvm ] && [ "$numbers" = "a:e8" ]; then
        rig_pass kvm-dev "/dev/kvm is a char device 10:232"
    else
        rig_fail kvm-dev "/dev/kvm missing or wrong (major:minor hex '$numbers', want a:e8)"
    fi
}

# rig_check_tap_bridge: tap-bridge, a TAP device enslaved to a bridge, both
# up: what a virtio-net backend uses. The kernel says so in sysfs (brif/
# link) and in the bridge port's state. Needs the tun and bridge modules.
rig_check_tap_bridge() {
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
}

# rig_check_mercury_present: mercury-present, /bin/mercury is there (an
# aarch64 L1 has it only when MERCURY_BIN_AARCH64 names one). Returns 1
# without it: `rig_check_mercury_present || exit 0`.
rig_check_mercury_present() {
    if [ -x /bin/mercury ]; then
        rig_pass mercury-present "$(mercury --version 2>&1 | head -n 1)"
    else
        rig_fail mercury-present "no /bin/mercury: set MERCURY_BIN_AARCH64 to a static aarch64 mercury"
        return 1
    fi
}

# The no_std test guest's console (guest-images/test-guest): a 'TEST-GUEST
# START' line, one 'CHECK NAME PASS|FAIL DETAIL' line per check, 'TEST-GUEST
# END' (or 'TEST-GUEST PANIC ...'). Verdicts are named test-guest-NAME.

# rig_test_guest_end SERIAL: test-guest-end, the guest ran to its end
# without a panic.
rig_test_guest_end() {
    if grep -a -q '^TEST-GUEST END' "$1" && ! grep -a -q '^TEST-GUEST PANIC' "$1"; then
        rig_pass test-guest-end "$(grep -a -m 1 '^TEST-GUEST START' "$1" | cut -c 1-100)"
    else
        rig_fail test-guest-end "no 'TEST-GUEST END', or a 'TEST-GUEST PANIC'"
        rig_show "$1" 20 "guest console"
    fi
}

# rig_test_guest_check SERIAL NAME [WORD...]: the guest's 'CHECK NAME PASS
# ...' line, whose detail must contain every WORD (key=value) as a whole
# word.
rig_test_guest_check() {
    local log=$1 name=$2 line status detail missing='' word
    shift 2
    line=$(grep -a -m 1 "^CHECK $name " "$log")
    status=$(echo "$line" | cut -d' ' -f3)
    detail=$(echo "$line" | cut -d' ' -f4-)
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

# rig_test_guest_timer SERIAL STDERR: test-guest-timer, the value the guest
# read back from the boot timer is the one mercury logs on its exit line.
rig_test_guest_timer() {
    local logged
    logged=$(rig_field "$2" 'exit="' boot_timer_us)
    if rig_is_int "$logged" && [ "$logged" -gt 0 ]; then
        rig_test_guest_check "$1" timer "boot_timer_us=$logged"
    else
        rig_fail test-guest-timer "mercury logged boot_timer_us='$logged', want a number > 0"
        rig_show "$2" 15 "mercury stderr"
    fi
}
