#!/bin/sh
# A mercury cluster inside L1 (a real KVM): `mercury cluster up` on the
# Debian node image (systemd, cloud-init, containerd, etcd; no kubeadm in
# the offline image) with 1 control-plane node and a pool of 2 workers on a
# bridge mercury makes through netlink, then what an operator does to it:
#   invalid:    a spec with an overlapping CIDR is refused naming the field,
#               and nothing is created (no state, no bridge)
#   up:         up exits 0; status lists 3 nodes, all ready
#   identity:   each node's console shows the hostname and address its seed
#               gave it; L1 pings each node over the bridge; the workers
#               ping the control-plane node (node to node)
#   idempotent: up again does nothing (same pids)
#   drift:      SIGKILL one worker's VMM: status says crashed (exit 2), up
#               restarts it with the same IP and MAC, one VMM per node
#   scale:      2 -> 3 workers (a new node, its own IP/MAC/TAP), 3 -> 1
#               (the two highest-numbered go, with their TAPs)
#   down:       both remaining nodes power off through the ACPI power
#               button (logind) before down's timeout, and everything
#               mercury made is gone: L1's links, processes and state
#               directory are as they were before the first up
# L1 gets one vCPU: with two, L1 itself reset in most multi-node runs
# (docs/RIG.md, "The cluster scenarios").
# rig-images: guest-tool
# rig-disk-images: node-rootfs linux-kernel
# rig-disk-mib: 6144
# rig-modules: tun bridge veth
# rig-memory: 5120
# rig-smp: 1
# rig-timeout: 3000
# rig-expect: invalid up identity-console identity-ping node-ping status
# rig-expect: idempotent drift-status drift-repair scale-up scale-down down-poweroff down-clean
. /rig/lib.sh

STATE=/disk/state
SPEC=/tmp/cluster.yaml
UP_TIMEOUT=1500
mkdir -p /disk
mount /dev/vda /disk || { rig_fail up "cannot mount the scratch disk"; exit 1; }
rig_trace_on

# spec WORKERS [CIDR]: the cluster spec, with WORKERS nodes in pool `general`.
spec() {
    cat >$SPEC <<EOF
apiVersion: mercury.dev/v1alpha1
kind: Cluster
metadata:
  name: rig
spec:
  network:
    cidr: ${2:-10.77.0.0/24}
    bridge: mbr-rig
    gateway: 10.77.0.1
    dns: [10.77.0.1]
  kubernetes:
    version: v1.31.2
    podCidr: 10.244.0.0/16
    serviceCidr: 10.96.0.0/12
  controlPlane:
    count: 1
    vcpus: 1
    memoryMib: 768
    kernel: /disk/images/linux-kernel
    image: /disk/images/node-rootfs
  workers:
    - name: general
      kind: microvm
      count: $1
      vcpus: 1
      memoryMib: 512
      kernel: /disk/images/linux-kernel
      image: /disk/images/node-rootfs
EOF
}

listing() { rig_cluster_listing $STATE; }

# up LABEL: `mercury cluster up` as one boot span; sets rc and secs.
up() { rig_cluster_up "$1" $SPEC $STATE $UP_TIMEOUT; }

field() { rig_node_field /tmp/status.json "$1" "$2"; }

status() {
    mercury cluster status -f $SPEC --state-dir $STATE -o json >/tmp/status.json 2>/tmp/status.err
    status_rc=$?
}

node_pid() { sed -n 's/.*"pid": \([0-9]*\).*/\1/p' $STATE/rig/$1/node.json; }
node_console() { echo $STATE/rig/$1/console.log; }

evidence() {
    for n in rig-cp-0 rig-general-0 rig-general-1 rig-general-2; do
        [ -f "$(node_console $n)" ] && rig_show "$(node_console $n)" 15 "$n console"
        [ -f $STATE/rig/$n/mercury.log ] && rig_show $STATE/rig/$n/mercury.log 5 "$n mercury.log"
    done
    rig_show_kvm_trace
}

listing >/tmp/before.txt

# --- invalid -----------------------------------------------------------
spec 2 10.244.0.0/24
mercury cluster up -f $SPEC --state-dir $STATE >/tmp/invalid.out 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q 'spec.network.cidr' /tmp/invalid.out && [ ! -e $STATE/rig ] &&
    ! ip link show mbr-rig >/dev/null 2>&1; then
    rig_pass invalid "exit 1: $(grep -m1 'spec.network.cidr' /tmp/invalid.out)"
else
    rig_fail invalid "exit $rc, state $(ls $STATE 2>&1), output: $(head -3 /tmp/invalid.out)"
fi

# --- up ----------------------------------------------------------------
spec 2
up first
status
ready=$(grep -c '"state": "ready"' /tmp/status.json)
if [ $rc -eq 0 ] && [ $status_rc -eq 0 ] && [ "$ready" -eq 3 ]; then
    rig_pass up "3 nodes ready in $secs s:$(for n in rig-cp-0 rig-general-0 rig-general-1; do
        printf ' %s ready after %ss (guest %ss)' $n "$(field $n readyAfter | cut -c1-5)" \
            "$(field $n guestUptimeAtReady | cut -c1-5)"; done)"
else
    rig_fail up "up exit $rc, status exit $status_rc, $ready ready: $(cat /tmp/status.err)"
    evidence
fi

# --- identity ----------------------------------------------------------
ok=0 detail=
for n in rig-cp-0 rig-general-0 rig-general-1; do
    ip=$(field $n ip)
    seen=$(grep -a -o "mercury-node name=[^ ]* addr=[^ ]*" "$(node_console $n)" | tr -d '\r' | tail -n 1)
    detail="$detail $n: '$seen';"
    [ "$seen" = "mercury-node name=$n addr=$ip/24" ] && ok=$((ok + 1))
done
if [ $ok -eq 3 ]; then rig_pass identity-console "$detail"; else rig_fail identity-console "$detail"; fi
ok=0 detail=
for n in rig-cp-0 rig-general-0 rig-general-1; do
    ip=$(field $n ip)
    if ping -c 2 -W 5 "$ip" >/dev/null 2>&1; then ok=$((ok + 1)); detail="$detail $ip ok"; else detail="$detail $ip lost"; fi
done
if [ $ok -eq 3 ]; then rig_pass identity-ping "L1 to each node:$detail"; else rig_fail identity-ping "$detail"; fi
cp_ip=$(field rig-cp-0 ip)
ok=0 detail=
for n in rig-general-0 rig-general-1; do
    line=$(grep -a -o "mercury-node ping $cp_ip [a-z]*" "$(node_console $n)" | tr -d '\r' | tail -n 1)
    detail="$detail $n: '$line';"
    [ "$line" = "mercury-node ping $cp_ip ok" ] && ok=$((ok + 1))
done
if [ $ok -eq 2 ]; then rig_pass node-ping "$detail"; else rig_fail node-ping "$detail"; fi
if [ $status_rc -eq 0 ] && [ "$(grep -c '"kind": "microvm"' /tmp/status.json)" -eq 3 ]; then
    rig_pass status "$(mercury cluster status -f $SPEC --state-dir $STATE 2>&1 | tr '\n' ';')"
else
    rig_fail status "exit $status_rc"
fi

# --- idempotent --------------------------------------------------------
pids_before=$(for n in rig-cp-0 rig-general-0 rig-general-1; do node_pid $n; done | tr '\n' ' ')
up again
pids_after=$(for n in rig-cp-0 rig-general-0 rig-general-1; do node_pid $n; done | tr '\n' ' ')
if [ $rc -eq 0 ] && [ "$pids_before" = "$pids_after" ] && grep -q 'nothing to do' /tmp/up.err; then
    rig_pass idempotent "pids $pids_after unchanged"
else
    rig_fail idempotent "exit $rc, pids '$pids_before' -> '$pids_after'"
fi

# --- drift -------------------------------------------------------------
victim=rig-general-1
mac_before=$(field $victim mac)
ip_before=$(field $victim ip)
kill -9 "$(node_pid $victim)"
sleep 1
status
if [ $status_rc -eq 2 ] && [ "$(field $victim state)" = crashed ]; then
    rig_pass drift-status "status exit 2, $victim crashed"
else
    rig_fail drift-status "status exit $status_rc, $victim $(field $victim state)"
fi
up repair
status
count=$(ps -o args | grep -c "[m]ercury run --config $STATE/rig/$victim/vm.toml")
if [ $rc -eq 0 ] && [ "$(field $victim state)" = ready ] && [ "$(field $victim ip)" = "$ip_before" ] &&
    [ "$(field $victim mac)" = "$mac_before" ] && [ "$count" -eq 1 ]; then
    rig_pass drift-repair "$victim back: ip $ip_before mac $mac_before, $count VMM, in $secs s"
else
    rig_fail drift-repair "exit $rc, state $(field $victim state), ip $(field $victim ip), mac $(field $victim mac), $count VMMs"
    evidence
fi

# --- scale -------------------------------------------------------------
spec 3
up scale-up
status
ready=$(grep -c '"state": "ready"' /tmp/status.json)
ip2=$(field rig-general-2 ip)
if [ $rc -eq 0 ] && [ "$ready" -eq 4 ] && [ -n "$ip2" ] &&
    [ "$(grep -o '"ip": "[^"]*"' /tmp/status.json | sort | uniq -d)" = "" ] &&
    [ "$(grep -o '"mac": "[^"]*"' /tmp/status.json | sort | uniq -d)" = "" ]; then
    rig_pass scale-up "4 nodes ready, rig-general-2 at $ip2, no duplicate IP or MAC, in $secs s"
else
    rig_fail scale-up "exit $rc, $ready ready"
    evidence
fi
tap1=$(sed -n 's/.*"tap": "\([^"]*\)".*/\1/p' $STATE/rig/rig-general-1/node.json)
tap2=$(sed -n 's/.*"tap": "\([^"]*\)".*/\1/p' $STATE/rig/rig-general-2/node.json)
spec 1
up scale-down
status
if [ $rc -eq 0 ] && [ $status_rc -eq 0 ] && [ "$(grep -c '"name"' /tmp/status.json)" -eq 2 ] &&
    [ ! -e $STATE/rig/rig-general-1 ] && [ ! -e $STATE/rig/rig-general-2 ] &&
    ! ip link show "$tap1" >/dev/null 2>&1 && ! ip link show "$tap2" >/dev/null 2>&1; then
    rig_pass scale-down "rig-general-2 and rig-general-1 gone with TAPs $tap2 $tap1: $(grep '^mercury: delete' /tmp/up.err | tr '\n' ';')"
else
    rig_fail scale-down "exit $rc, status $status_rc, $(grep -c '"name"' /tmp/status.json) nodes"
fi

# --- down --------------------------------------------------------------
rig_boots_done
# The ACPI power button must do it: logind powers each node off.
rig_cluster_down $SPEC $STATE 60 rig-cp-0 rig-general-0
umount /disk
