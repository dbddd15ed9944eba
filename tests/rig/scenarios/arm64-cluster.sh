#!/bin/sh
# A mercury cluster inside the arm64 L1 (QEMU virt with EL2, a real KVM in
# VHE mode): the same kind of spec as the x86_64 `cluster` scenario, with
# the arm64 builds of the node image (guest-images/build node-rootfs-arm64:
# Debian bookworm arm64, systemd, cloud-init, containerd, etcd) and of the
# microVM kernel (linux-kernel-arm64, an Image), 1 control-plane node and
# 1 worker on a bridge mercury makes through netlink:
#   up:         up exits 0; status lists 2 nodes, both ready (cloud-init
#               finished, reported over vsock)
#   identity:   each node's console shows the hostname and address its seed
#               gave it; L1 pings each node over the bridge; the worker
#               pings the control-plane node (node to node)
#   status:     both nodes microvm, ready
#   down:       both nodes power off through their power button (a PL061
#               GPIO key; systemd-logind acts on it) before down's timeout,
#               and everything mercury made is gone: L1's links, processes
#               and state directory are as they were before up
# By hand (`cargo test -p mercury-rig -- --ignored arm64_cluster`, about 3
# minutes of L1; docs/RIG.md).
# rig-arch: aarch64
# rig-disk-images: node-rootfs-arm64 linux-kernel-arm64
# rig-disk-mib: 6144
# rig-modules: tun bridge veth
# rig-memory: 3072
# rig-timeout: 3600
# rig-expect: mercury-present up identity-console identity-ping node-ping status
# rig-expect: down-poweroff down-clean
. /rig/lib.sh

rig_check_mercury_present || exit 0

STATE=/disk/state
SPEC=/tmp/cluster.yaml
UP_TIMEOUT=2400
mkdir -p /disk
mount /dev/vda /disk || { rig_fail up "cannot mount the scratch disk"; exit 1; }
NODES="arm-cp-0 arm-general-0"

cat >$SPEC <<SPEC
apiVersion: mercury.dev/v1alpha1
kind: Cluster
metadata:
  name: arm
spec:
  network: { cidr: 10.79.0.0/24, bridge: mbr-arm, gateway: 10.79.0.1, dns: [10.79.0.1] }
  kubernetes: { version: v1.31.2, podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12 }
  controlPlane: { count: 1, vcpus: 1, memoryMib: 768, kernel: /disk/images/linux-kernel-arm64, image: /disk/images/node-rootfs-arm64 }
  workers:
    - { name: general, kind: microvm, count: 1, vcpus: 1, memoryMib: 512, kernel: /disk/images/linux-kernel-arm64, image: /disk/images/node-rootfs-arm64 }
SPEC

field() { rig_node_field /tmp/status.json "$1" "$2"; }
node_console() { echo $STATE/arm/$1/console.log; }
evidence() {
    for n in $NODES; do
        [ -f "$(node_console $n)" ] && rig_show "$(node_console $n)" 20 "$n console"
        [ -f $STATE/arm/$n/mercury.log ] && rig_show $STATE/arm/$n/mercury.log 5 "$n mercury.log"
    done
}

rig_cluster_listing $STATE >/tmp/before.txt

# --- up ----------------------------------------------------------------
rig_cluster_up arm64-cluster $SPEC $STATE $UP_TIMEOUT
mercury cluster status -f $SPEC --state-dir $STATE -o json >/tmp/status.json 2>/tmp/status.err
status_rc=$?
ready=$(grep -c '"state": "ready"' /tmp/status.json)
if [ $rc -eq 0 ] && [ $status_rc -eq 0 ] && [ "$ready" -eq 2 ]; then
    rig_pass up "2 nodes ready in $secs s:$(for n in $NODES; do
        printf ' %s ready after %ss (guest %ss)' $n "$(field $n readyAfter | cut -c1-6)" \
            "$(field $n guestUptimeAtReady | cut -c1-6)"; done)"
else
    rig_fail up "up exit $rc after $secs s, status exit $status_rc, $ready ready: $(cat /tmp/status.err)"
    evidence
fi

# --- identity ----------------------------------------------------------
ok=0 detail=
for n in $NODES; do
    ip=$(field $n ip)
    seen=$(grep -a -o "mercury-node name=[^ ]* addr=[^ ]*" "$(node_console $n)" | tr -d '\r' | tail -n 1)
    detail="$detail $n: '$seen';"
    [ -n "$ip" ] && [ "$seen" = "mercury-node name=$n addr=$ip/24" ] && ok=$((ok + 1))
done
if [ $ok -eq 2 ]; then rig_pass identity-console "$detail"; else rig_fail identity-console "$detail"; fi
ok=0 detail=
for n in $NODES; do
    ip=$(field $n ip)
    if [ -n "$ip" ] && ping -c 2 -W 5 "$ip" >/dev/null 2>&1; then
        ok=$((ok + 1)); detail="$detail $ip ok"
    else
        detail="$detail $n '$ip' lost"
    fi
done
if [ $ok -eq 2 ]; then rig_pass identity-ping "L1 to each node:$detail"; else rig_fail identity-ping "$detail"; fi
cp_ip=$(field arm-cp-0 ip)
line=$(grep -a -o "mercury-node ping $cp_ip [a-z]*" "$(node_console arm-general-0)" | tr -d '\r' | tail -n 1)
if [ -n "$cp_ip" ] && [ "$line" = "mercury-node ping $cp_ip ok" ]; then
    rig_pass node-ping "arm-general-0: '$line'"
else
    rig_fail node-ping "arm-general-0: '$line'"
fi
if [ $status_rc -eq 0 ] && [ "$(grep -c '"kind": "microvm"' /tmp/status.json)" -eq 2 ]; then
    rig_pass status "$(mercury cluster status -f $SPEC --state-dir $STATE 2>&1 | tr '\n' ';')"
else
    rig_fail status "exit $status_rc"
fi

# --- down --------------------------------------------------------------
rig_boots_done
# The power button (a PL061 GPIO key) must do it: logind powers each off.
rig_cluster_down $SPEC $STATE 30 $NODES
umount /disk
exit 0
