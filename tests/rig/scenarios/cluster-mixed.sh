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

# Debian's tools, from the node image: a writable overlay on a read-only
# loop mount, with L1's /proc, /sys and /dev.
mkdir -p /debian-ro /debian-rw /debian
mount -t tmpfs tmpfs /debian-rw
mkdir -p /debian-rw/upper /debian-rw/work
if ! mount -o loop,ro /disk/images/node-rootfs /debian-ro ||
    ! mount -t overlay overlay -o lowerdir=/debian-ro,upperdir=/debian-rw/upper,workdir=/debian-rw/work /debian; then
    rig_fail mixed-up "cannot mount the node image as L1's Debian userland"
    exit 1
fi
mount -t proc proc /debian/proc
mount -t sysfs sysfs /debian/sys
mount --bind /dev /debian/dev
mkdir -p /debian/run/netns /debian/run/systemd/resolve
# Through Debian's env: busybox's chroot would run its own applet for a bare
# command name (its shell prefers applets), not Debian's program.
debian() { chroot /debian /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

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

status() {
    mercury cluster status -f $SPEC --state-dir $STATE -o json >/tmp/status.json 2>/tmp/status.err
    status_rc=$?
}

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
status
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
value="written-through-$ip0"
debian etcdctl --endpoints "http://$ip0:2379" put mercury-rig "$value" >/tmp/etcd.out 2>&1
put_rc=$?
got=$(debian etcdctl --endpoints "http://$ip2:2379" get mercury-rig --print-value-only 2>>/tmp/etcd.out)
members=$(debian etcdctl --endpoints "http://$ip2:2379" member list 2>>/tmp/etcd.out |
    awk -F', ' '{print $3}' | sort | tr '\n' ' ')
if [ $put_rc -eq 0 ] && [ "$got" = "$value" ] && [ "$members" = "mix-cp-0 mix-cp-1 mix-cp-2 " ]; then
    rig_pass etcd-cluster "put via $ip0, read back via $ip2: '$got'; members: $members"
else
    rig_fail etcd-cluster "put exit $put_rc, read '$got', members '$members': $(head -5 /tmp/etcd.out | tr '\n' ';')"
    evidence
fi

# --- bundle --------------------------------------------------------------
bundle=$STATE/mix/bundles/$MACHINE
if grep -q "$MACHINE_IP/24" $bundle/network-config && grep -q "\"$CIDR_PREFIX.1\"" $bundle/network-config &&
    grep -q 'kind: JoinConfiguration' $bundle/user-data && grep -q "apiServerEndpoint: $ip0:6443" $bundle/user-data &&
    [ -x $bundle/apply.sh ]; then
    rig_pass bundle "$(ls $bundle | tr '\n' ' '); command: $(grep -m1 'tar ' /tmp/up.err)"
else
    rig_fail bundle "$(ls $bundle 2>&1 | tr '\n' ' ')"
    rig_show $bundle/network-config 20 "network-config"
fi

# --- bare-metal worker ---------------------------------------------------
# The machine: a network namespace whose veth peer is on the cluster's
# bridge, running its bundle's apply.sh with Debian's iproute2.
debian ip netns add bm
debian ip link add bm-host type veth peer name bm-eth0
debian ip link set bm-eth0 netns bm
debian ip link set bm-host master mbr-mix
debian ip link set bm-host up
cp -r $bundle /debian/tmp/bundle
debian ip netns exec bm sh /tmp/bundle/apply.sh --network-only --iface bm-eth0 >/tmp/apply.out 2>&1
apply_rc=$?
addr=$(debian ip netns exec bm ip -4 -o addr show dev bm-eth0 | awk '{print $4}')
route=$(debian ip netns exec bm ip -4 route show default)
if [ $apply_rc -eq 0 ] && grep -q "reaches the control-plane endpoint $ip0" /tmp/apply.out &&
    [ "$addr" = "$MACHINE_IP/24" ] && ping -c 2 -W 5 $MACHINE_IP >/dev/null 2>&1; then
    rig_pass baremetal-join "apply.sh exit 0, $addr, '$route'; $(grep -c . /tmp/apply.out) lines: $(tr '\n' ';' </tmp/apply.out)"
else
    rig_fail baremetal-join "apply.sh exit $apply_rc, addr '$addr', route '$route': $(tr '\n' ';' </tmp/apply.out)"
fi
debian ip link del bm-host
debian ip netns del bm

# --- GitOps watcher (file source) ---------------------------------------
mercury cluster reconcile -f $SPEC --watch --interval 2s --state-dir $STATE >/tmp/watch.log 2>&1 &
watcher=$!
sleep 5
spec 1
RIG_BOOT_LABEL=watch-scale
rig_boot_begin mercury watch-scale
t0=$(rig_now)
state=
while [ "$(rig_since "$t0" | cut -d. -f1)" -lt $UP_TIMEOUT ]; do
    status
    state=$(field mix-general-0 state)
    [ "$state" = ready ] && break
    kill -0 $watcher 2>/dev/null || break
    sleep 5
done
secs=$(rig_since "$t0")
rig_boot_end "$([ "$state" = ready ] && echo 0 || echo 1)" "$secs"
new_ip=$(field mix-general-0 ip)
if [ "$state" = ready ] && [ "${new_ip%.*}" = $CIDR_PREFIX ] &&
    [ "$(grep -o '"ip": "[^"]*"' /tmp/status.json | sort | uniq -d)" = "" ]; then
    rig_pass watch-scale "mix-general-0 ready at $(field mix-general-0 ip) after $secs s: $(grep -m2 'create\|converg' /tmp/watch.log | tr '\n' ';')"
else
    rig_fail watch-scale "mix-general-0 '$state' ip '$(field mix-general-0 ip)' after $secs s"
    rig_show /tmp/watch.log 20 "watcher"
    evidence
fi
pids_before=$(ps -o pid,args | grep '[m]ercury run' | awk '{print $1}' | sort | tr '\n' ' ')
# Invalid: a second pool named metal.
spec 1 metal
sleep 8
status
pids_after=$(ps -o pid,args | grep '[m]ercury run' | awk '{print $1}' | sort | tr '\n' ' ')
kill -INT $watcher
sleep 3
if grep -q 'not applied' /tmp/watch.log && grep -q 'spec.workers\[1\].name' /tmp/watch.log &&
    [ "$pids_before" = "$pids_after" ] && ! kill -0 $watcher 2>/dev/null &&
    [ "$(ps -o args | grep -c '[m]ercury run')" -eq 4 ]; then
    rig_pass watch-invalid "$(grep -m1 'invalid' /tmp/watch.log); VMMs $pids_after kept; watcher gone after SIGINT"
else
    rig_fail watch-invalid "VMMs '$pids_before' -> '$pids_after', watcher $(kill -0 $watcher 2>/dev/null && echo alive || echo gone)"
    rig_show /tmp/watch.log 20 "watcher"
fi

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
# Best effort (L1 powers off next); -d frees the loop device, which
# otherwise keeps /disk busy.
umount /debian/dev /debian/sys /debian/proc /debian 2>/dev/null
umount -d /debian-ro 2>/dev/null
umount /debian-rw /disk 2>/dev/null
exit 0
