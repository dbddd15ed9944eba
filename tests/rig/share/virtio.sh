# mercury's virtio devices under real Linux drivers, inside L1 (a real KVM),
# on either architecture; L1's /rig/virtio.sh, sourced by the scenarios
# virtio (x86_64) and arm64-virtio after /rig/lib.sh. The microVM kernel
# with the busybox initramfs runs guest-test.sh (mercury.action=test) and
# L1 checks what it finds on its side afterwards:
#   blk:      the guest mounts an ext4 disk, reads its token, writes a file;
#             L1 loop-mounts the image after mercury exits and reads the file
#   durable:  the guest writes and fsyncs, says so, L1 SIGKILLs mercury at
#             once and finds the data in the image
#   ro:       a read-only disk refuses a raw write inside the guest, mounts
#             read-only, and its image is unchanged
#   net:      two guests on one bridge (TAPs made by L1): ping, then
#             $NET_BYTES over TCP with the checksums compared
#   vsock:    guest to host (L1 echoes on <uds>_52) and host to guest (L1
#             connects through the Firecracker-style handshake)
# The scenario sets, before sourcing it:
#   KERNEL      the guest kernel          INITRD      the busybox initramfs
#   GUEST_TOOL  L1's guest-tool           CMDLINE     the command line's start
#   NET_BYTES   bytes sent over TCP       RIG_BOOTS   the scenario's boots
# and gets guest() and evidence() for checks of its own.
# The check names it reports: blk-guest blk-host durable-host ro-guest
# ro-host net-ping net-tcp vsock-guest-to-host vsock-host-to-guest.
TOKEN=mercury-test-disk-token-7f3a
BASE="$CMDLINE mercury.action=test"
BOOT_TIMEOUT=180
chmod 0755 "$GUEST_TOOL"
mkdir -p /mnt/check
# L1's KVM trace, emptied before each boot and shown after a failed one:
# the rig tells a guest the emulated host derailed from one mercury broke
# only from evidence in that boot's own span (docs/RIG.md).
rig_trace_on

# guest NAME TEST EXTRA_CMDLINE MERCURY_ARGS...: one guest to its end; sets
# rc, log and err.
guest() {
    local name=$1 test=$2 extra=$3
    shift 3
    log=/tmp/$name.serial
    err=/tmp/$name.stderr
    rm -f "$log" "$err"
    RIG_BOOT_LABEL=$name
    rig_trace_clear
    rig_vm $BOOT_TIMEOUT "$log" "$err" mercury run --kernel "${KERNEL_OVERRIDE:-$KERNEL}" \
        --initrd "$INITRD" --memory 256 \
        --cmdline "$BASE mercury.test=$test $extra" --serial "$log" "$@"
    rc=$rig_rc
    echo "rig: $name: mercury exited $rc after $rig_secs s${rig_why:+ ($rig_why)}"
}

# image_holds CHECK IMAGE OPTS FILE WANT WHAT: loop-mounts IMAGE (with
# `-o loop$OPTS`) and PASSes CHECK when its /FILE reads WANT.
image_holds() {
    local check=$1 image=$2 opts=$3 file=$4 want=$5 what=$6 found
    if mount -o "loop$opts" "$image" /mnt/check 2>/tmp/mount.err; then
        found=$(cat "/mnt/check/$file" 2>/dev/null)
        umount /mnt/check
        if [ "$found" = "$want" ]; then
            rig_pass "$check" "$what holds /$file='$found'"
        else
            rig_fail "$check" "$what: /$file is '$found', want '$want'"
        fi
    else
        rig_fail "$check" "cannot loop-mount the image: $(cat /tmp/mount.err)"
    fi
}

evidence() {
    rig_show "$log" 20 "guest console"
    rig_show "$err" 10 "mercury stderr"
    rig_show_kvm_trace
}

# --- blk ---------------------------------------------------------------
cp /images/test-disk /tmp/blk.img
guest blk blk "" --disk /tmp/blk.img
line=$(grep -a 'MERCURY-GUEST BLK' "$log" | tail -n 1)
if [ "$rc" -eq 0 ] && [ "$(rig_field "$log" 'MERCURY-GUEST BLK' token)" = "$TOKEN" ] &&
    [ "$(rig_field "$log" 'MERCURY-GUEST BLK' written)" = 1 ]; then
    rig_pass blk-guest "rc=0 ${line#*BLK }"
else
    rig_fail blk-guest "rc=$rc line='$line'"
    evidence
fi
image_holds blk-host /tmp/blk.img ,ro written "written-by-guest $TOKEN" "the image"

# --- durable: SIGKILL right after the guest's fsync ---------------------
cp /images/test-disk /tmp/durable.img
log=/tmp/durable.serial
err=/tmp/durable.stderr
rm -f "$log" "$err"
rig_trace_clear
rig_boot_begin mercury durable
mercury run --kernel "$KERNEL" --initrd "$INITRD" --memory 256 \
    --cmdline "$BASE mercury.test=durable" --serial "$log" --disk /tmp/durable.img 2>"$err" &
pid=$!
content=
i=0
while [ $i -lt $((BOOT_TIMEOUT * 5)) ] && kill -0 $pid 2>/dev/null; do
    if grep -a -q 'MERCURY-GUEST DURABLE synced=1 .* done=1' "$log" 2>/dev/null; then
        content=$(rig_field "$log" 'MERCURY-GUEST DURABLE synced=1' content)
        break
    fi
    sleep 0.2
    i=$((i + 1))
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
rig_boot_end killed
if [ -z "$content" ]; then
    rig_fail durable-host "the guest never reported its fsync"
    evidence
else
    # Read-write: the journal of a file system whose VMM was killed needs
    # replaying, as after any crash; what was fsynced must survive that.
    image_holds durable-host /tmp/durable.img "" durable "$content" "after SIGKILL the image"
fi

# --- ro -----------------------------------------------------------------
cp /images/test-disk /tmp/ro.img
before=$(md5sum </tmp/ro.img)
guest ro ro "" --disk /tmp/ro.img,ro
sys_ro=$(rig_field "$log" 'MERCURY-GUEST RO' sys_ro)
write_rc=$(rig_field "$log" 'MERCURY-GUEST RO' write_rc)
token=$(rig_field "$log" 'MERCURY-GUEST RO' token)
if [ "$rc" -eq 0 ] && [ "$sys_ro" = 1 ] && [ -n "$write_rc" ] && [ "$write_rc" != 0 ] && [ "$token" = "$TOKEN" ]; then
    rig_pass ro-guest "sys_ro=1 write_rc=$write_rc token read"
else
    rig_fail ro-guest "rc=$rc sys_ro=$sys_ro write_rc=$write_rc token=$token"
    evidence
fi
after=$(md5sum </tmp/ro.img)
if [ "$before" = "$after" ]; then
    rig_pass ro-host "image unchanged"
else
    rig_fail ro-host "the read-only image changed"
fi

# --- net: two guests on a bridge ----------------------------------------
brctl addbr mbr0 && ip link set mbr0 up
for tap in mtap0 mtap1; do
    tunctl -t $tap >/dev/null && brctl addif mbr0 $tap && ip link set $tap up
done
NET_A="mercury.ip=10.77.0.1/24 mercury.peer=10.77.0.2 mercury.role=recv"
NET_B="mercury.ip=10.77.0.2/24 mercury.peer=10.77.0.1 mercury.role=send mercury.bytes=$NET_BYTES"
rm -f /tmp/net-a.serial /tmp/net-b.serial
rig_trace_clear
rig_boot_begin mercury net-a+b
mercury run --kernel "$KERNEL" --initrd "$INITRD" --memory 256 \
    --cmdline "$BASE mercury.test=net $NET_A" --serial /tmp/net-a.serial \
    --net tap=mtap0,mac=52:54:00:77:00:01 2>/tmp/net-a.stderr &
pid_a=$!
mercury run --kernel "$KERNEL" --initrd "$INITRD" --memory 256 \
    --cmdline "$BASE mercury.test=net $NET_B" --serial /tmp/net-b.serial \
    --net tap=mtap1,mac=52:54:00:77:00:02 2>/tmp/net-b.stderr &
pid_b=$!
i=0
while [ $i -lt $((BOOT_TIMEOUT * 2)) ] && { kill -0 $pid_a 2>/dev/null || kill -0 $pid_b 2>/dev/null; }; do
    sleep 0.5
    i=$((i + 1))
done
kill -9 $pid_a $pid_b 2>/dev/null
wait $pid_a; rc_a=$?
wait $pid_b; rc_b=$?
rig_boot_end "$rc_a,$rc_b"
ping_a=$(rig_field /tmp/net-a.serial 'MERCURY-GUEST NET ping' rc)
ping_b=$(rig_field /tmp/net-b.serial 'MERCURY-GUEST NET ping' rc)
if [ "$ping_a" = 0 ] && [ "$ping_b" = 0 ]; then
    rig_pass net-ping "both guests got replies ($(rig_field /tmp/net-a.serial 'MERCURY-GUEST NET ping' replies), $(rig_field /tmp/net-b.serial 'MERCURY-GUEST NET ping' replies))"
else
    rig_fail net-ping "ping rc: a=$ping_a b=$ping_b (mercury rc a=$rc_a b=$rc_b)"
    rig_show /tmp/net-a.serial 15 "guest a console"
    rig_show /tmp/net-b.serial 15 "guest b console"
    rig_show /tmp/net-a.stderr 8 "mercury a stderr"
    rig_show /tmp/net-b.stderr 8 "mercury b stderr"
    rig_show_kvm_trace
fi
recv=$(grep -a 'MERCURY-GUEST NET tcp RECEIVED' /tmp/net-a.serial | tr -d '\r' | sed 's/.*RECEIVED //')
sent=$(grep -a 'MERCURY-GUEST NET tcp SENT' /tmp/net-b.serial | tr -d '\r' | sed 's/.*SENT //')
# Compare bytes and checksum; the sender also reports its time.
sent_sum=$(echo "$sent" | cut -d' ' -f1,2)
if [ -n "$sent" ] && [ "$recv" = "$sent_sum" ] && [ "${sent%% *}" = "$NET_BYTES" ]; then
    rig_pass net-tcp "$((NET_BYTES / 1048576)) MiB guest to guest, checksums equal ($sent)"
else
    rig_fail net-tcp "sent='$sent' received='$recv'"
    rig_show /tmp/net-a.serial 10 "guest a console"
    rig_show /tmp/net-b.serial 10 "guest b console"
    rig_show_kvm_trace
fi

# --- vsock: guest to host -----------------------------------------------
rm -f /tmp/v.sock /tmp/v.sock_52 /tmp/echo.out
"$GUEST_TOOL" uds-echo /tmp/v.sock_52 >/tmp/echo.out 2>&1 &
echo_pid=$!
guest vsock-g2h vsock "mercury.port=52" --vsock cid=3,uds=/tmp/v.sock
reply=$(grep -a 'MERCURY-GUEST VSOCK REPLY' "$log" | tr -d '\r' | sed 's/.*REPLY //')
i=0
while [ $i -lt 50 ] && ! grep -q 'ECHOED 19' /tmp/echo.out; do sleep 0.2; i=$((i + 1)); done
kill $echo_pid 2>/dev/null
if [ "$reply" = mercury-guest-hello ] && grep -q 'ECHOED 19' /tmp/echo.out; then
    rig_pass vsock-guest-to-host "guest sent and got back '$reply'; L1 echoed 19 bytes"
else
    rig_fail vsock-guest-to-host "guest reply '$reply'; L1 side: $(tr '\n' ' ' </tmp/echo.out)"
    evidence
fi

# --- vsock: host to guest -----------------------------------------------
rm -f /tmp/v2.sock
log=/tmp/vsock-h2g.serial
err=/tmp/vsock-h2g.stderr
rm -f "$log" "$err"
rig_trace_clear
rig_boot_begin mercury vsock-h2g
mercury run --kernel "$KERNEL" --initrd "$INITRD" --memory 256 \
    --cmdline "$BASE mercury.test=vsock mercury.role=listen mercury.port=5000" --serial "$log" \
    --vsock cid=4,uds=/tmp/v2.sock 2>"$err" &
pid=$!
i=0
while [ $i -lt $((BOOT_TIMEOUT * 5)) ] && ! grep -a -q 'VSOCK listening' "$log" 2>/dev/null; do
    sleep 0.2
    i=$((i + 1))
done
host_out=$("$GUEST_TOOL" uds-connect /tmp/v2.sock 5000 hello-from-l1 2>&1 | tr '\n' ' ')
i=0
while [ $i -lt 300 ] && kill -0 $pid 2>/dev/null; do sleep 0.2; i=$((i + 1)); done
kill -9 $pid 2>/dev/null
wait $pid
rig_boot_end $?
case "$host_out" in
    *"REPLY hello-from-l1"*)
        if grep -a -q 'MERCURY-GUEST VSOCK ECHOED 13' "$log"; then
            rig_pass vsock-host-to-guest "L1 connected (${host_out%%REPLY*}), the guest echoed 13 bytes"
        else
            rig_fail vsock-host-to-guest "L1 got its reply but the guest did not report the echo"
            evidence
        fi ;;
    *)
        rig_fail vsock-host-to-guest "L1 side: $host_out"
        evidence ;;
esac
