#!/bin/sh
# A mixed cluster inside L1 (a real KVM), by hand: three control-plane
# microVMs running an external etcd, a bare-metal worker, and a GitOps
# watcher adding a microVM worker pool.
#   mixed-up:      up exits 0 with the 3 control-plane nodes ready; status
#                  lists the bare-metal machine as pending (no kubelet)
#   etcd-cluster:  etcd formed across the microVMs: L1 writes a key through
#                  one node's client endpoint and reads it through another's,
#                  and the member list names the 3 nodes (etcdctl from the
#                  node image's etcd-client)
#   bundle:        the machine's join bundle holds its address, the gateway
#                  and a JoinConfiguration for the endpoint
#   baremetal-join: a network namespace on the bridge stands in for the
#                  machine: the bundle's apply.sh --network-only gives it
#                  its address and route, it reaches the control-plane
#                  endpoint, and L1 reaches it
#   watch-scale:   `reconcile -f FILE --watch` sees the file gain a worker
#                  pool and starts its node (ready, on its planned address)
#   watch-invalid: it refuses a spec that fails validation and keeps the
#                  cluster; SIGINT stops the watcher, not the nodes
#   mixed-down:    down leaves L1 as it was
# The node image doubles as L1's Debian userland (iproute2 with netns,
# etcdctl, ping): it is mounted read-only under an overlay at /debian.
# L1 gets one vCPU: with two, L1 itself reset in most multi-node runs
# (docs/RIG.md, "The cluster scenarios").
# rig-images: guest-tool
# rig-disk-images: node-rootfs linux-kernel
# rig-disk-mib: 6144
# rig-modules: tun bridge veth loop overlay
# rig-memory: 4608
# rig-smp: 1
# rig-timeout: 3000
# rig-expect: mixed-up etcd-cluster bundle baremetal-join watch-scale watch-invalid mixed-down
. /rig/lib.sh

STATE=/disk/state
SPEC=/tmp/mixed.yaml
UP_TIMEOUT=1500
CIDR_PREFIX=10.79.0
MACHINE=metal-a
MACHINE_IP=$CIDR_PREFIX.200
mkdir -p /disk
mount /dev/vda /disk || { rig_fail mixed-up "cannot mount the scratch disk"; exit 1; }
rig_trace_on

# Debian's tools, from the node image (lib.sh).
if ! rig_debian_userland /disk/images/node-rootfs; then
    rig_fail mixed-up "cannot mount the node image as L1's Debian userland"
    exit 1
fi

# spec WORKERS [POOL-NAME]: the spec; WORKERS microVM workers in pool
# POOL-NAME (default general; 0: no microVM pool).
spec() {
    cat >$SPEC.new <<EOF
apiVersion: mercury.dev/v1alpha1
kind: Cluster
metadata:
  name: mix
spec:
  network: { cidr: $CIDR_PREFIX.0/24, bridge: mbr-mix, gateway: $CIDR_PREFIX.1, dns: [$CIDR_PREFIX.1] }
  kubernetes: { version: v1.31.2, podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12 }
  etcd: { mode: external }
  controlPlane: { count: 3, vcpus: 1, memoryMib: 640, kernel: /disk/images/linux-kernel, image: /disk/images/node-rootfs }
  workers:
    - name: metal
      kind: baremetal
      machines:
        - { name: $MACHINE, ip: $MACHINE_IP }
EOF
    if [ "$1" -gt 0 ]; then
        cat >>$SPEC.new <<EOF
    - { name: ${2:-general}, kind: microvm, count: $1, vcpus: 1, memoryMib: 512, kernel: /disk/images/linux-kernel, image: /disk/images/node-rootfs }
EOF
    fi
    mv $SPEC.new $SPEC
}

listing() { rig_cluster_listing $STATE; }

field() { rig_node_field /tmp/status.json "$1" "$2"; }

evidence() {
    for d in $STATE/mix/*/; do
        n=$(basename "$d")
        [ -f "$d/console.log" ] && rig_show "$d/console.log" 15 "$n console"
        [ -f "$d/mercury.log" ] && rig_show "$d/mercury.log" 5 "$n mercury.log"
    done
    rig_show_kvm_trace
}

listing >/tmp/before.txt

# --- up ------------------------------------------------------------------
spec 0
rig_cluster_up mixed-up $SPEC $STATE $UP_TIMEOUT
rig_cluster_status
ready=$(grep -c '"state": "ready"' /tmp/status.json)
if [ $rc -eq 0 ] && [ "$ready" -eq 3 ] && [ "$(field $MACHINE state)" = pending ] &&
    [ "$(field $MACHINE kind)" = baremetal ]; then
    rig_pass mixed-up "3 control-plane nodes ready in $secs s, $MACHINE pending (status exit $status_rc)$(grep 'starting it again' /tmp/up.err | sed 's/^/; /' | tr '\n' ' ')"
else
    rig_fail mixed-up "up exit $rc, $ready ready, $MACHINE '$(field $MACHINE state)': $(cat /tmp/status.err)"
    evidence
fi

# --- etcd ----------------------------------------------------------------
ip0=$(field mix-cp-0 ip)
ip2=$(field mix-cp-2 ip)
rig_etcd_check $ip0 $ip2 mix-cp-0 mix-cp-1 mix-cp-2 || evidence

# --- bundle --------------------------------------------------------------
bundle=$STATE/mix/bundles/$MACHINE
rig_bundle_check $bundle $MACHINE_IP $CIDR_PREFIX.1 $ip0

# --- bare-metal worker ---------------------------------------------------
rig_baremetal_join_check $bundle mbr-mix $MACHINE_IP $ip0

# --- GitOps watcher (file source) ---------------------------------------
rig_watch_start
spec 1
rig_watch_until_ready watch-scale mix-general-0 $UP_TIMEOUT
new_ip=$(field mix-general-0 ip)
if [ "$state" = ready ] && [ "${new_ip%.*}" = $CIDR_PREFIX ] &&
    [ "$(grep -o '"ip": "[^"]*"' /tmp/status.json | sort | uniq -d)" = "" ]; then
    rig_pass watch-scale "mix-general-0 ready at $new_ip after $secs s: $(grep -m2 'create\|converg' /tmp/watch.log | tr '\n' ';')"
else
    rig_fail watch-scale "mix-general-0 '$state' ip '$new_ip' after $secs s"
    rig_show /tmp/watch.log 20 "watcher"
    evidence
fi
# Invalid: a second pool named metal.
invalid_spec() { spec 1 metal; }
rig_watch_invalid_check invalid_spec 'spec.workers\[1\].name' 4

# --- down ----------------------------------------------------------------
rig_boots_done
spec 1
mercury cluster down -f $SPEC --state-dir $STATE --timeout 60 >/tmp/down.out 2>&1
rc=$?
listing >/tmp/after.txt
if [ $rc -eq 0 ] && cmp -s /tmp/before.txt /tmp/after.txt; then
    rig_pass mixed-down "$(head -1 /tmp/down.out)"
else
    rig_fail mixed-down "exit $rc; left over: $(diff /tmp/before.txt /tmp/after.txt | tr '\n' ';')"
fi
rig_debian_release
umount /disk 2>/dev/null
exit 0
