#!/bin/sh
# mercury join bundle: makes this machine a worker node of a mercury cluster
# (the node, cluster and addresses are set just below these lines).
#
#   sh apply.sh [--network-only] [--iface NAME]
#
# 1. Finds the node-network interface: --iface NAME, else the one with the
#    node's MAC, else the one already holding the node's address, else the
#    default route's.
# 2. Applies the node's static address, default route (replacing the
#    current one) and DNS servers with `ip` (resolvectl when
#    systemd-resolved runs, /etc/resolv.conf otherwise).
# 3. Says whether the control-plane endpoint answers ping.
# 4. Unless --network-only, and when cloud-init is installed: puts the
#    meta-data, network-config and user-data beside this script into
#    /var/lib/cloud/seed/nocloud/, makes NoCloud cloud-init's datasource and
#    runs cloud-init (clean, init, modules), which writes the kubeadm config
#    and runs `kubeadm join` (kubeadm, kubelet and containerd must be
#    installed; without kubeadm it notes that in /var/lib/mercury/).
#
# Exit status: 0 done, 1 error, 2 the endpoint does not answer (then
# cloud-init is not run).
set -eu

# @MERCURY_VARIABLES@

say() { printf 'mercury-join: %s\n' "$*"; }
die() {
  printf 'mercury-join: error: %s\n' "$*" >&2
  exit 1
}
usage() { sed -n '2,/^set -eu$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

network_only=0
iface=
while [ $# -gt 0 ]; do
  case $1 in
  --network-only) network_only=1 ;;
  --iface)
    [ $# -ge 2 ] || die "--iface needs an interface name"
    iface=$2
    shift
    ;;
  --iface=*) iface=${1#--iface=} ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

[ "$(id -u)" = 0 ] || die "run me as root"
command -v ip >/dev/null 2>&1 || die "ip (iproute2) is not installed"
here=$(cd "$(dirname "$0")" && pwd)
# Tests put cloud-init's directories under a scratch root; empty: /.
root=${MERCURY_JOIN_ROOT:-}

find_iface() {
  if [ -n "$iface" ]; then
    ip link show dev "$iface" >/dev/null 2>&1 || die "--iface $iface: no such interface"
    return 0
  fi
  if [ -n "$MAC" ]; then
    iface=$(ip -o link show | awk -v mac="$MAC" '
      tolower($0) ~ ("link/ether " mac " ") { sub(/:$/, "", $2); sub(/@.*/, "", $2); print $2; exit }')
    [ -n "$iface" ] || die "no interface has MAC $MAC (pass --iface NAME)"
    return 0
  fi
  iface=$(ip -o -4 addr show | awk -v ip="${ADDRESS%/*}" '
    { split($4, a, "/"); if (a[1] == ip) { print $2; exit } }')
  [ -n "$iface" ] && return 0
  iface=$(ip -4 route show default | awk '
    { for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
  [ -n "$iface" ] || die "cannot tell which interface is on the node network: pass --iface NAME"
}

apply_network() {
  ip link set dev "$iface" up
  ip -4 addr replace "$ADDRESS" dev "$iface"
  ip -4 route replace default via "$GATEWAY" dev "$iface"
  say "$iface: address $ADDRESS, default route via $GATEWAY"
  [ -n "$DNS" ] || return 0
  if command -v resolvectl >/dev/null 2>&1 && resolvectl status >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # one argument per server
    resolvectl dns "$iface" $DNS
  else
    for ns in $DNS; do
      grep -qs "^nameserver $ns\$" /etc/resolv.conf || echo "nameserver $ns" >>/etc/resolv.conf
    done
  fi
  say "DNS servers: $DNS"
}

reaches_endpoint() {
  if ! command -v ping >/dev/null 2>&1; then
    say "cannot check the control-plane endpoint $ENDPOINT: ping is not installed"
    return 0
  fi
  for _ in 1 2 3; do
    if ping -c 1 -W 2 "$ENDPOINT" >/dev/null 2>&1; then
      say "$NODE reaches the control-plane endpoint $ENDPOINT"
      return 0
    fi
  done
  say "$NODE does not reach the control-plane endpoint $ENDPOINT"
  return 1
}

run_cloud_init() {
  seed=$root/var/lib/cloud/seed/nocloud
  mkdir -p "$seed"
  (
    umask 077
    cp "$here/meta-data" "$here/user-data" "$seed/"
    sed "s/$PLACEHOLDER/$iface/" "$here/network-config" >"$seed/network-config"
  )
  mkdir -p "$root/etc/cloud/cloud.cfg.d"
  echo 'datasource_list: [ NoCloud, None ]' >"$root/etc/cloud/cloud.cfg.d/90-mercury-nocloud.cfg"
  say "running cloud-init for node $NODE of cluster $CLUSTER (seed in $seed)"
  cloud-init clean --logs
  cloud-init init --local
  cloud-init init
  cloud-init modules --mode config
  cloud-init modules --mode final
  if [ -f "$root/var/lib/mercury/kubeadm-result" ]; then
    cat "$root/var/lib/mercury/kubeadm-result"
  fi
}

find_iface
case $iface in
*[!A-Za-z0-9_.-]*) die "interface name '$iface' has characters this script does not handle" ;;
esac
apply_network
reached=1
reaches_endpoint || reached=0
if [ "$network_only" = 1 ]; then
  say "--network-only: cloud-init not run"
elif ! command -v cloud-init >/dev/null 2>&1; then
  say "cloud-init is not installed: applied the network only"
elif [ "$reached" = 1 ]; then
  run_cloud_init
else
  say "not running cloud-init: kubeadm join would not reach $ENDPOINT"
fi
[ "$reached" = 1 ] || exit 2
