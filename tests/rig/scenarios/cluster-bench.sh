#!/bin/sh
# A benchmark, by hand (`cargo test -p mercury-rig -- --ignored cluster_bench`
# or `rig run cluster-bench`): `mercury cluster up` to all nodes ready for
# clusters of 1, 3 and 5 nodes (1 control-plane node + 0, 2, 4 workers) on
# the Debian node image, each node's time to ready (host) and guest uptime
# at ready, the VMM's resident memory per node once ready, and the cost of
# making each node's root disk; `down` between sizes. L1 gets one vCPU:
# with two, L1 itself reset in most multi-node runs (docs/RIG.md).
# rig-images: guest-tool
# rig-disk-images: node-rootfs linux-kernel
# rig-disk-mib: 8192
# rig-modules: tun bridge veth
# rig-memory: 6144
# rig-smp: 1
# rig-timeout: 5400
# rig-expect: bench-cluster-1 bench-cluster-3 bench-cluster-5
. /rig/lib.sh

STATE=/disk/state
SPEC=/tmp/cluster.yaml
mkdir -p /disk
mount /dev/vda /disk || { rig_fail bench-cluster-1 "cannot mount the scratch disk"; exit 1; }

spec() {
    cat >$SPEC <<EOF
apiVersion: mercury.dev/v1alpha1
kind: Cluster
metadata:
  name: bench
spec:
  network: { cidr: 10.78.0.0/24, bridge: mbr-bench, gateway: 10.78.0.1, dns: [10.78.0.1] }
  kubernetes: { version: v1.31.2, podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12 }
  controlPlane: { count: 1, vcpus: 1, memoryMib: 768, kernel: /disk/images/linux-kernel, image: /disk/images/node-rootfs }
  workers:
    - { name: general, kind: microvm, count: $1, vcpus: 1, memoryMib: 512, kernel: /disk/images/linux-kernel, image: /disk/images/node-rootfs }
EOF
}

for size in 1 3 5; do
    spec $((size - 1))
    rig_cluster_up cluster-$size $SPEC $STATE 2400
    rss=
    for pid in $(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' $STATE/bench/*/node.json); do
        rss="$rss $(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
    done
    ready=$(tr -d ' \n' </tmp/up.json | sed 's/},{/}\n{/g' |
        sed -n 's/.*"name":"\([^"]*\)".*"readyAfter":\([0-9.]*\).*"guestUptimeAtReady":\([0-9.]*\).*/\1:\2s(guest\3s)/p' | tr '\n' ' ')
    disks=$(grep -o 'root disk [^ ]* ([^)]*)' /tmp/up.err | sed 's/.*(//; s/)//' | tr '\n' ';')
    if [ $rc -eq 0 ]; then
        rig_pass bench-cluster-$size "up to all ready ${secs}s; nodes: $ready; VMM RSS KiB:$rss; root disks: $disks; boot restarts: $(grep -c 'starting it again' /tmp/up.err)"
    else
        rig_fail bench-cluster-$size "up exit $rc after ${secs}s"
        rig_show /tmp/up.err 20 "up stderr"
    fi
    mercury cluster down -f $SPEC --state-dir $STATE --timeout 60 >/dev/null 2>&1
done
rig_boots_done
umount /disk
