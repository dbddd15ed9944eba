#!/bin/sh
# A mercury cluster inside L1 (a real KVM): `mercury cluster up` on the
# Debian node image (systemd, cloud-init, containerd, etcd; no kubeadm in
# the offline image) with 1 control-plane node and a pool of 2 workers on a
# bridge mercury makes through netlink, and a bare-metal machine (mixed
# mode), then what an operator does to it:
#   invalid:    a spec with an overlapping CIDR is refused naming the field,
#               and nothing is created (no state, no bridge)
#   up:         up exits 0; status lists 3 nodes, all ready, and the
#               bare-metal machine as pending (no kubelet)
#   identity:   each node's console shows the hostname and address its seed
#               gave it; L1 pings each node over the bridge; the workers
#               ping the control-plane node (node to node)
#   etcd-cluster: the external etcd (Debian's etcd-server) on the
#               control-plane node serves L1's etcdctl on the node's address:
#               a key put is read back, the member list is rig-cp-0
#   ssh-login:  L1 logs in with the key the spec lists: as root on the
#               control-plane node, as Debian's default user `debian` (with
#               passwordless sudo) on a worker; each says its own hostname
#   bundle:     the machine's join bundle holds its address, the gateway
#               and a JoinConfiguration for the control-plane endpoint
#   baremetal-join: a network namespace on the bridge stands in for the
#               machine: the bundle's apply.sh --network-only gives it its
#               address and route, it reaches the endpoint, L1 reaches it
#   idempotent: up again does nothing (same pids)
#   drift:      SIGKILL one worker's VMM: status says crashed (exit 2), up
#               restarts it with the same IP and MAC, one VMM per node
#   scale-up:   `reconcile -f FILE --watch` sees the file ask for 3 workers
#               and starts a new node (its own IP/MAC/TAP)
#   watch-invalid: the watcher refuses a spec that fails validation and
#               keeps the cluster; SIGINT stops the watcher, not the nodes
#   scale-down: up with 1 worker: the two highest-numbered go, with TAPs
#   down:       both remaining nodes power off through the ACPI power
#               button (logind) before down's timeout, and everything
#               mercury made is gone: L1's links, processes and state
#               directory are as they were before the first up
# The node image doubles as L1's Debian userland (iproute2 with netns,
# ssh and ssh-keygen, etcdctl):
# it is mounted read-only under an overlay at /debian.
# L1 gets one vCPU: with two, L1 itself reset in most multi-node runs
# (docs/RIG.md, "The cluster scenarios").
# rig-images: guest-tool
# rig-disk-images: node-rootfs linux-kernel
# rig-disk-mib: 6144
# rig-modules: tun bridge veth loop overlay
# rig-memory: 5120
# rig-smp: 1
# rig-timeout: 3000
# rig-expect: invalid up identity-console identity-ping node-ping status etcd-cluster ssh-login bundle baremetal-join
# rig-expect: idempotent drift-status drift-repair scale-up watch-invalid scale-down down-poweroff down-clean
. /rig/lib.sh

STATE=/disk/state
SPEC=/tmp/cluster.yaml
UP_TIMEOUT=1500
mkdir -p /disk
mount /dev/vda /disk || { rig_fail up "cannot mount the scratch disk"; exit 1; }
rig_trace_on
MACHINE=rig-metal-a
if ! rig_debian_userland /disk/images/node-rootfs; then
    rig_fail up "cannot mount the node image as L1's Debian userland"
    exit 1
fi
rig_debian ssh-keygen -q -t ed25519 -N '' -C rig@l1 -f /tmp/rig-key

# spec WORKERS [CIDR [POOL]]: the cluster spec, with WORKERS nodes in
# microVM pool POOL (default general) and bare-metal machine $MACHINE at
# .200 of CIDR in pool metal; the gateway and DNS server at .1.
spec() {
    local cidr=${2:-10.77.0.0/24}
    local prefix=${cidr%.0/24}
    cat >$SPEC.new <<EOF
apiVersion: mercury.dev/v1alpha1
kind: Cluster
metadata:
  name: rig
spec:
  network:
    cidr: $cidr
    bridge: mbr-rig
    gateway: $prefix.1
    dns: [$prefix.1]
  kubernetes:
    version: v1.31.2
    podCidr: 10.244.0.0/16
    serviceCidr: 10.96.0.0/12
  etcd:
    mode: external
  ssh:
    authorizedKeys: [ "$(cat /debian/tmp/rig-key.pub)" ]
  controlPlane:
    count: 1
    vcpus: 1
    memoryMib: 768
    kernel: /disk/images/linux-kernel
    image: /disk/images/node-rootfs
  workers:
    - name: metal
      kind: baremetal
      machines:
        - { name: $MACHINE, ip: $prefix.200 }
    - name: ${3:-general}
      kind: microvm
      count: $1
      vcpus: 1
      memoryMib: 512
      kernel: /disk/images/linux-kernel
      image: /disk/images/node-rootfs
EOF
    mv $SPEC.new $SPEC
}

listing() { rig_cluster_listing $STATE; }

# up LABEL: `mercury cluster up` as one boot span; sets rc and secs.
up() { rig_cluster_up "$1" $SPEC $STATE $UP_TIMEOUT; }

field() { rig_node_field /tmp/status.json "$1" "$2"; }

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
if [ $rc -eq 1 ] && grep -q 'spec.kubernetes.podCidr: 10.244.0.0/16 overlaps spec.network.cidr 10.244.0.0/24' /tmp/invalid.out &&
    [ ! -e $STATE/rig ] &&
    ! ip link show mbr-rig >/dev/null 2>&1; then
    rig_pass invalid "exit 1: $(grep -m1 'spec.network.cidr' /tmp/invalid.out)"
else
    rig_fail invalid "exit $rc, state $(ls $STATE 2>&1), output: $(head -3 /tmp/invalid.out)"
fi

# --- up ----------------------------------------------------------------
spec 2
up first
rig_cluster_status
ready=$(grep -c '"state": "ready"' /tmp/status.json)
if [ $rc -eq 0 ] && [ $status_rc -eq 0 ] && [ "$ready" -eq 3 ] && [ "$(field $MACHINE state)" = pending ]; then
    rig_pass up "3 nodes ready in $secs s, $MACHINE pending:$(for n in rig-cp-0 rig-general-0 rig-general-1; do
        printf ' %s ready after %ss (guest %ss)' $n "$(field $n readyAfter | cut -c1-5)" \
            "$(field $n guestUptimeAtReady | cut -c1-5)"; done)"
else
    rig_fail up "up exit $rc, status exit $status_rc, $ready ready, $MACHINE '$(field $MACHINE state)': $(cat /tmp/status.err)"
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
if [ $status_rc -eq 0 ] && [ "$(grep -c '"kind": "microvm"' /tmp/status.json)" -eq 3 ] &&
    [ "$(field $MACHINE kind)" = baremetal ]; then
    rig_pass status "$(mercury cluster status -f $SPEC --state-dir $STATE 2>&1 | tr '\n' ';')"
else
    rig_fail status "exit $status_rc"
fi

# ssh_as USER IP COMMAND: COMMAND on the node at IP, logged in as USER with
# the spec's key (Debian's ssh client, from the node image).
ssh_as() {
    rig_debian ssh -i /tmp/rig-key -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o ConnectTimeout=30 -o LogLevel=ERROR "$1@$2" "$3"
}
root_says=$(ssh_as root $cp_ip 'echo "$(id -un)@$(hostname)"' 2>/tmp/ssh.err | tr -d '\r')
w_ip=$(field rig-general-0 ip)
debian_says=$(ssh_as debian $w_ip 'echo "$(id -un)@$(hostname) $(sudo -n id -un)"' 2>>/tmp/ssh.err | tr -d '\r')
if [ "$root_says" = root@rig-cp-0 ] && [ "$debian_says" = "debian@rig-general-0 root" ]; then
    rig_pass ssh-login "$cp_ip: '$root_says'; $w_ip: '$debian_says' (sudo -n)"
else
    rig_fail ssh-login "$cp_ip: '$root_says'; $w_ip: '$debian_says': $(tr '\n' ';' </tmp/ssh.err)"
fi

# --- etcd: external, from the node image, on the control-plane node -----
rig_etcd_check $cp_ip $cp_ip rig-cp-0 || evidence

# --- mixed mode: the bare-metal machine's bundle, applied -------------
bundle=$STATE/rig/bundles/$MACHINE
rig_bundle_check $bundle 10.77.0.200 10.77.0.1 $cp_ip
rig_baremetal_join_check $bundle mbr-rig 10.77.0.200 $cp_ip

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
rig_cluster_status
if [ $status_rc -eq 2 ] && [ "$(field $victim state)" = crashed ]; then
    rig_pass drift-status "status exit 2, $victim crashed"
else
    rig_fail drift-status "status exit $status_rc, $victim $(field $victim state)"
fi
up repair
rig_cluster_status
count=$(ps -o args | grep -c "[m]ercury run --config $STATE/rig/$victim/vm.toml")
if [ $rc -eq 0 ] && [ "$(field $victim state)" = ready ] && [ "$(field $victim ip)" = "$ip_before" ] &&
    [ "$(field $victim mac)" = "$mac_before" ] && [ "$count" -eq 1 ]; then
    rig_pass drift-repair "$victim back: ip $ip_before mac $mac_before, $count VMM, in $secs s"
else
    rig_fail drift-repair "exit $rc, state $(field $victim state), ip $(field $victim ip), mac $(field $victim mac), $count VMMs"
    evidence
fi

# --- scale, through the GitOps watcher, then up ------------------------
rig_watch_start
spec 3
rig_watch_until_ready scale-up rig-general-2 $UP_TIMEOUT
ready=$(grep -c '"state": "ready"' /tmp/status.json)
ip2=$(field rig-general-2 ip)
if [ "$state" = ready ] && [ "$ready" -eq 4 ] && [ -n "$ip2" ] &&
    [ "$(grep -o '"ip": "[^"]*"' /tmp/status.json | sort | uniq -d)" = "" ] &&
    [ "$(grep -o '"mac": "[^"]*"' /tmp/status.json | sort | uniq -d)" = "" ]; then
    rig_pass scale-up "the watcher made 4 nodes ready, rig-general-2 at $ip2, no duplicate IP or MAC, in $secs s: $(grep -m2 'create\|converg' /tmp/watch.log | tr '\n' ';')"
else
    rig_fail scale-up "rig-general-2 '$state', $ready ready"
    rig_show /tmp/watch.log 20 "watcher"
    evidence
fi
# Invalid: a second pool named metal.
invalid_spec() { spec 3 10.77.0.0/24 metal; }
rig_watch_invalid_check invalid_spec 'spec.workers\[1\].name' 4
tap1=$(sed -n 's/.*"tap": "\([^"]*\)".*/\1/p' $STATE/rig/rig-general-1/node.json)
tap2=$(sed -n 's/.*"tap": "\([^"]*\)".*/\1/p' $STATE/rig/rig-general-2/node.json)
spec 1
up scale-down
rig_cluster_status
if [ $rc -eq 0 ] && [ $status_rc -eq 0 ] && [ "$(grep -c '"name"' /tmp/status.json)" -eq 3 ] &&
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
rig_debian_release
# Best effort, as the verdicts are in: L1 powers off next.
umount /disk 2>/dev/null
exit 0
