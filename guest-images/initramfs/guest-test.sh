#!/bin/busybox sh
# shellcheck shell=dash
# Guest side of mercury's device tests, run by /init for
# mercury.action=test with mercury.test=<name>. Parameters come from the
# kernel command line (mercury.ip=, mercury.peer=, mercury.role=,
# mercury.port=, mercury.bytes=). Every result is one line
# "MERCURY-GUEST <TEST> key=value ..." on the console; the host side of the
# test (a rig scenario) checks the values and what it finds on the host.
#
#   blk      mount /dev/vda (ext4), read /token, write /written, sync, unmount
#   durable  mount /dev/vda, write /durable, fsync, report, then wait to be killed
#   ro       /dev/vda is read-only: a raw write must fail, a read-only mount works
#   net      address eth0, ping the peer, then send or receive mercury.bytes over TCP
#   vsock    connect to host port mercury.port and exchange a message; or, with
#            mercury.role=listen, accept one connection on mercury.port and echo it
#   bench-blk  /dev/vda: sequential direct write and read (dd, 1 MiB blocks,
#            mercury.bytes), then 2000 random 4 KiB direct reads
#   bench-net  as net, then 20 pings for the round trip and mercury.bytes over TCP

test=$1
ip="" peer="" role="" port=52 bytes=16777216
read -r cmdline </proc/cmdline
set -f
for word in $cmdline; do
  case "$word" in
    mercury.ip=*) ip=${word#mercury.ip=} ;;
    mercury.peer=*) peer=${word#mercury.peer=} ;;
    mercury.role=*) role=${word#mercury.role=} ;;
    mercury.port=*) port=${word#mercury.port=} ;;
    mercury.bytes=*) bytes=${word#mercury.bytes=} ;;
  esac
done
set +f
mkdir -p /mnt

# report PREFIX COMMAND...: COMMAND's output, each line after PREFIX.
report() {
  local prefix=$1
  shift
  "$@" 2>&1 | while IFS= read -r line; do echo "$prefix $line"; done
}

case "$test" in
  blk)
    if mount -t ext4 /dev/vda /mnt; then
      token=$(cat /mnt/token)
      echo "written-by-guest $token" >/mnt/written
      sync
      umount /mnt
      echo "MERCURY-GUEST BLK mounted=1 token=$token written=1"
    else
      echo "MERCURY-GUEST BLK mounted=0"
    fi ;;
  durable)
    mount -t ext4 /dev/vda /mnt || { echo "MERCURY-GUEST DURABLE mounted=0"; exit 0; }
    # dd's fsync: the data and the file's metadata reach the disk before
    # the line below says so.
    echo "durable-data-$$" | dd of=/mnt/durable conv=fsync 2>/dev/null
    sync
    # done=1 last: the host reads the line only once it is complete.
    echo "MERCURY-GUEST DURABLE synced=1 content=durable-data-$$ done=1"
    sleep 3600 ;;
  ro)
    sys_ro=$(cat /sys/block/vda/ro)
    dd if=/dev/zero of=/dev/vda bs=512 count=1 oflag=direct 2>/dev/null
    write_rc=$?
    token=none
    if mount -t ext4 -o ro /dev/vda /mnt; then token=$(cat /mnt/token); umount /mnt; fi
    echo "MERCURY-GUEST RO sys_ro=$sys_ro write_rc=$write_rc token=$token" ;;
  net)
    ip addr add "$ip" dev eth0 && ip link set eth0 up
    mac=$(cat /sys/class/net/eth0/address)
    echo "MERCURY-GUEST NET up ip=$ip mac=$mac"
    if ping -c 3 -W 10 "$peer" >/tmp/ping 2>&1; then ping_rc=0; else ping_rc=1; fi
    received=$(grep -c 'bytes from' /tmp/ping)
    echo "MERCURY-GUEST NET ping peer=$peer rc=$ping_rc replies=$received"
    case "$role" in
      recv) report "MERCURY-GUEST NET tcp" guest-tool tcp-recv 5000 ;;
      send) report "MERCURY-GUEST NET tcp" guest-tool tcp-send "$peer:5000" "$bytes" ;;
    esac ;;
  vsock)
    if [ "$role" = listen ]; then
      echo "MERCURY-GUEST VSOCK listening port=$port"
      report "MERCURY-GUEST VSOCK" guest-tool listen "$port"
    else
      report "MERCURY-GUEST VSOCK" guest-tool connect 2 "$port" mercury-guest-hello
    fi ;;
  bench-blk)
    mib=$((bytes / 1048576))
    # busybox dd prints no rate: time it with /proc/uptime (10 ms).
    timed() {
      local t0 t1
      t0=$(cut -d' ' -f1 /proc/uptime)
      "$@" 2>/dev/null
      t1=$(cut -d' ' -f1 /proc/uptime)
      awk -v a="$t0" -v b="$t1" -v m="$mib" 'BEGIN { s = b - a; if (s <= 0) s = 0.01; printf "mib=%d secs=%.2f mib_per_s=%.1f", m, s, m / s }'
    }
    echo "MERCURY-GUEST BENCH blk-seq-write $(timed dd if=/dev/zero of=/dev/vda bs=1M count=$mib oflag=direct)"
    echo "MERCURY-GUEST BENCH blk-seq-read $(timed dd if=/dev/vda of=/dev/null bs=1M count=$mib iflag=direct)"
    report "MERCURY-GUEST BENCH blk-rand-read" guest-tool randread /dev/vda 2000 ;;
  bench-net)
    ip addr add "$ip" dev eth0 && ip link set eth0 up
    ping -c 3 -W 10 "$peer" >/dev/null 2>&1
    ping -c 20 -i 0.2 "$peer" 2>&1 | tail -n 1 | sed 's/^/MERCURY-GUEST BENCH net-rtt /'
    case "$role" in
      recv) report "MERCURY-GUEST BENCH net-tcp" guest-tool tcp-recv 5000 ;;
      send) report "MERCURY-GUEST BENCH net-tcp" guest-tool tcp-send "$peer:5000" "$bytes" ;;
    esac ;;
  *)
    echo "MERCURY-GUEST ERROR unknown mercury.test=$test" ;;
esac
