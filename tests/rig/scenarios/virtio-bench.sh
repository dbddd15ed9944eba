#!/bin/sh
# virtio device benchmarks from a Linux guest inside L1 (run by hand, not
# in CI: timings are never verdicts). The microVM kernel and the busybox
# initramfs's guest-test.sh (mercury.action=test):
#   bench-blk: sequential direct write and read of 128 MiB on a raw image
#              (dd, 1 MiB blocks) and 2000 random 4 KiB direct reads
#   bench-net: two guests on one bridge: ping round trip (20 pings) and
#              64 MiB over TCP guest to guest
#   boot:      boot-timer values of 3 boots without devices and 3 with a
#              disk, a NIC and rng (what the devices add to boot)
# With RIG_COMPARE_WITH=<static firecracker>, the same guests, kernel and
# images also run under it (its config file: drives, network-interfaces),
# interleaved with mercury's. Each check PASSes when its numbers were
# measured; the numbers are in the details and on the console.
# rig-images: linux-kernel initramfs guest-tool
# rig-modules: tun bridge
# rig-tools: compare-vmm
# rig-timeout: 2400
# rig-expect: bench-blk-mercury bench-net-mercury bench-boot-mercury
. /rig/lib.sh

KERNEL=/images/linux-kernel
BASE="console=ttyS0 reboot=k panic=1 quiet mercury.action=test mercury.end=reboot"
LIMIT=600
RIG_BOOTS=14
chmod 0755 /images/guest-tool
VMMS=mercury
[ -x /bin/compare-vmm ] && VMMS="mercury compare-vmm"

# fc_config FILE CMDLINE [DRIVE [TAP MAC]]: a Firecracker config file.
fc_config() {
    local file=$1 cmdline=$2 drive=$3 tap=$4 mac=$5 drives="" nets=""
    [ -n "$drive" ] && drives="{\"drive_id\":\"vda\",\"path_on_host\":\"$drive\",\"is_root_device\":false,\"is_read_only\":false}"
    [ -n "$tap" ] && nets="{\"iface_id\":\"eth0\",\"host_dev_name\":\"$tap\",\"guest_mac\":\"$mac\"}"
    cat >"$file" <<JSON
{"boot-source":{"kernel_image_path":"$KERNEL","initrd_path":"/images/initramfs","boot_args":"$cmdline"},
 "machine-config":{"vcpu_count":1,"mem_size_mib":256},
 "drives":[$drives],"network-interfaces":[$nets]}
JSON
}

# start VMM LABEL CMDLINE SERIAL [DISK [TAP MAC]]: one guest in the
# background; sets pid.
start() {
    local vmm=$1 label=$2 cmdline=$3 serial=$4 disk=$5 tap=$6 mac=$7
    rm -f "$serial"
    if [ "$vmm" = mercury ]; then
        set -- mercury run --kernel $KERNEL --initrd /images/initramfs --memory 256 \
            --cmdline "$cmdline" --serial "$serial"
        [ -n "$disk" ] && set -- "$@" --disk "$disk"
        [ -n "$tap" ] && set -- "$@" --net "tap=$tap,mac=$mac"
        "$@" 2>"$serial.stderr" &
    else
        fc_config "/tmp/$label.json" "$cmdline" "$disk" "$tap" "$mac"
        compare-vmm --no-api --no-seccomp --config-file "/tmp/$label.json" >"$serial" 2>&1 &
    fi
    pid=$!
}

# finish PID...: waits up to LIMIT s for them, then kills what is left.
finish() {
    local i=0
    while [ $i -lt $((LIMIT * 2)) ]; do
        local alive=
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.5
        i=$((i + 1))
    done
    for p in "$@"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
}

bench_line() { grep -a "MERCURY-GUEST BENCH $2" "$1" | tail -n 1 | tr -d '\r' | sed "s/.*BENCH $2 //"; }

for vmm in $VMMS; do
    # --- block -------------------------------------------------------------
    dd if=/dev/zero of=/tmp/bench.img bs=1M count=256 2>/dev/null
    rig_boot_begin $vmm bench-blk
    start $vmm blk-$vmm "$BASE mercury.test=bench-blk mercury.bytes=134217728" /tmp/blk-$vmm.serial /tmp/bench.img
    finish $pid
    rig_boot_end -
    w=$(bench_line /tmp/blk-$vmm.serial blk-seq-write)
    r=$(bench_line /tmp/blk-$vmm.serial blk-seq-read)
    rr=$(bench_line /tmp/blk-$vmm.serial blk-rand-read)
    echo "rig: bench $vmm blk: write: $w | read: $r | random: $rr"
    if [ -n "$w" ] && [ -n "$r" ] && [ -n "$rr" ]; then
        rig_pass bench-blk-$vmm "write: $w; read: $r; 4k random: $rr"
    else
        rig_fail bench-blk-$vmm "missing numbers: write='$w' read='$r' random='$rr'"
        rig_show /tmp/blk-$vmm.serial 20 "guest console"
    fi

    # --- network -------------------------------------------------------------
    brctl addbr bbr0 2>/dev/null; ip link set bbr0 up
    for tap in btap0 btap1; do
        tunctl -t $tap >/dev/null 2>&1; brctl addif bbr0 $tap 2>/dev/null; ip link set $tap up
    done
    rig_boot_begin $vmm bench-net
    start $vmm neta-$vmm "$BASE mercury.test=bench-net mercury.ip=10.79.0.1/24 mercury.peer=10.79.0.2 mercury.role=recv" \
        /tmp/neta-$vmm.serial "" btap0 52:54:00:79:00:01
    pa=$pid
    start $vmm netb-$vmm "$BASE mercury.test=bench-net mercury.ip=10.79.0.2/24 mercury.peer=10.79.0.1 mercury.role=send mercury.bytes=67108864" \
        /tmp/netb-$vmm.serial "" btap1 52:54:00:79:00:02
    finish $pa $pid
    rig_boot_end -
    rtt=$(bench_line /tmp/netb-$vmm.serial net-rtt)
    tcp=$(bench_line /tmp/netb-$vmm.serial "net-tcp SENT")
    echo "rig: bench $vmm net: rtt: $rtt | tcp: $tcp"
    if [ -n "$rtt" ] && [ -n "$tcp" ]; then
        rig_pass bench-net-$vmm "rtt: $rtt; tcp: SENT $tcp"
    else
        rig_fail bench-net-$vmm "missing numbers: rtt='$rtt' tcp='$tcp'"
        rig_show /tmp/neta-$vmm.serial 15 "guest a console"
        rig_show /tmp/netb-$vmm.serial 15 "guest b console"
    fi
done

# --- boot time with and without devices (mercury's boot timer) --------------
dd if=/dev/zero of=/tmp/boot.img bs=1M count=16 2>/dev/null
plain="" devices=""
for round in 1 2 3; do
    for kind in plain devices; do
        rig_boot_begin mercury boot-$kind
        if [ $kind = plain ]; then
            start mercury boot-$kind "console=ttyS0 reboot=k panic=1 quiet" /tmp/boot.serial
        else
            start mercury boot-$kind "console=ttyS0 reboot=k panic=1 quiet" /tmp/boot.serial /tmp/boot.img btap0 52:54:00:79:00:05
        fi
        finish $pid
        rig_boot_end -
        us=$(grep -a -o 'boot_timer_us=[0-9]*' /tmp/boot.serial.stderr | tail -n 1 | cut -d= -f2)
        eval "$kind=\"\$$kind ${us:-none}\""
    done
done
echo "rig: bench boot timer (us): plain:$plain devices:$devices"
case "$plain$devices" in
    *none*) rig_fail bench-boot-mercury "a boot did not write the boot timer: plain:$plain devices:$devices" ;;
    *) rig_pass bench-boot-mercury "boot timer us, 3 boots each: no devices:$plain; disk+nic:$devices" ;;
esac
rig_boots_done
exit 0
