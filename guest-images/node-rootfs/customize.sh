#!/usr/bin/env bash
# Configure the node root file system that mmdebstrap made, from the host:
#
#   customize.sh ROOT GUEST_TOOL [KUBERNETES_DIR]
#
# ROOT is the unpacked root directory, GUEST_TOOL the static guest-tool
# binary, KUBERNETES_DIR (optional) a directory holding kubeadm, kubelet and
# kubectl. Unit changes run `systemctl` inside the chroot, which edits the
# symlinks offline.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$1 guest_tool=$2 k8s_dir=${3:-}
log() { echo "node-rootfs: $*" >&2; }
in_root() { chroot "$root" "$@"; }
# Units that exist in this image only (a package may not ship a timer).
has_unit() { [ -e "$root/lib/systemd/system/$1" ] || [ -e "$root/etc/systemd/system/$1" ]; }

cp -a "$here/files/." "$root/"
install -m 0755 "$guest_tool" "$root/usr/local/bin/guest-tool"

# systemd-networkd renders cloud-init's network-config (netplan and
# ifupdown are absent, so cloud-init picks its networkd renderer) and
# resolved takes the name servers from it. The serial console gets a getty.
in_root systemctl enable systemd-networkd.service systemd-resolved.service serial-getty@ttyS0.service >&2
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# etcd runs only on control-plane nodes with an external etcd; their
# cloud-init runcmd enables it.
in_root systemctl disable etcd.service >&2
# Periodic maintenance and first-boot prompts a short-lived node does not
# want: apt has no reachable mirror, scrubbing needs LVM, trimming a sparse
# image is the host's job, and systemd-firstboot would ask on the console.
# cloud-config.service runs no module here (90-mercury.cfg moves them to
# the init stage). The kernel has no modules: the modprobe@ units (fuse, loop, dm_mod, ...)
# and systemd-modules-load only cost start-up time (~0.5 s each, measured).
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer systemd-firstboot.service \
    modprobe@.service systemd-modules-load.service cloud-config.service; do
  if has_unit "$unit"; then in_root systemctl mask "$unit" >&2; fi
done

# Identity comes at first boot: cloud-init sets the host name, systemd makes
# a machine ID (empty file = first boot), cloud-init's ssh module makes the
# host keys.
: >"$root/etc/hostname"
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
# No root password (locked: '*'); logins are by the SSH keys the seed gives.
in_root usermod -p '*' root
rm -rf "$root"/var/lib/cloud/* "$root"/var/log/*.log "$root"/var/cache/apt/*.bin

if [ -n "$k8s_dir" ]; then
  for bin in kubeadm kubelet kubectl; do
    install -m 0755 "$k8s_dir/$bin" "$root/usr/local/bin/$bin"
  done
  cp -a "$here/kubernetes/." "$root/"
  in_root systemctl enable kubelet.service >&2
  log "installed $(in_root /usr/local/bin/kubeadm version -o short) (kubeadm, kubelet, kubectl)"
fi
