#!/usr/bin/env bash
# Build the Kubernetes node root image and print its path; chatter goes to
# stderr.
#
#   build.sh                          -> .../node-rootfs.ext4
#   build.sh --with-kubernetes v1.31.2 -> .../node-rootfs.ext4 with kubeadm,
#                                        kubelet and kubectl v1.31.2 in
#                                        /usr/local/bin and a kubelet unit
#   build.sh node-rootfs-arm64 [...]   -> the same image for arm64 nodes
#
# An arm64 image built on an amd64 host runs arm64 maintainer scripts (and
# customize.sh's chroot commands) under qemu-user: qemu-user-static is
# installed when missing and its binfmt_misc handler registered from its
# /usr/lib/binfmt.d file when the kernel has none (what systemd-binfmt does
# at boot); on an arm64 host nothing is emulated.
#
# A Debian root file system made by mmdebstrap from this machine's Debian
# apt sources (packages: ./packages; configuration: ./files, customize.sh),
# written into a sparse 2 GiB ext4 image with `mke2fs -d` (nothing is
# mounted). Cached under $MERCURY_CACHE/node-rootfs/<key>/; the key hashes
# this directory, ../lib.sh, the guest-tool binary, the apt sources used and
# the mmdebstrap version (and, with Kubernetes, the version and the
# binaries' sha256 sums). The Kubernetes binaries are not in Debian: they
# come from dl.k8s.io, checked against the sha256 files published beside
# them, and are kept in $MERCURY_CACHE/kubernetes/<version>/ (put them
# there by hand where dl.k8s.io is unreachable).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root_cache=${MERCURY_CACHE:-$HOME/.cache/mercury}
cache=$root_cache/node-rootfs
log() { echo "node-rootfs: $*" >&2; }
# shellcheck source=../lib.sh
. "$here/../lib.sh"
exec 3>&1 1>&2

SIZE=2G
K8S_BASE_URL=${MERCURY_K8S_URL:-https://dl.k8s.io/release}
K8S_BINARIES=(kubeadm kubelet kubectl)

usage() { echo "usage: guest-images/build node-rootfs|node-rootfs-arm64 [--with-kubernetes vX.Y.Z]" >&2; exit 2; }
k8s_version=
# debarch: the Debian architecture; suffix: the image names' ("" or -arm64).
debarch=amd64 suffix=
while [ $# -gt 0 ]; do
  case "$1" in
    node-rootfs) shift ;;
    node-rootfs-arm64) debarch=arm64 suffix=-arm64; shift ;;
    --with-kubernetes)
      [ $# -ge 2 ] || usage
      k8s_version=$2; shift 2
      [[ "$k8s_version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
        { log "error: --with-kubernetes '$k8s_version' is not a release version such as v1.31.2"; exit 2; }
      ;;
    *) log "error: unknown argument '$1'"; usage ;;
  esac
done

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
if [ -n "$k8s_version" ]; then command -v curl >/dev/null || need+=(curl ca-certificates); fi
host_arch=$(dpkg --print-architecture)
if [ "$debarch" != "$host_arch" ]; then
  if [ "$debarch" != arm64 ] || [ "$host_arch" != amd64 ]; then
    die "cannot build a $debarch node image on a $host_arch host"
  fi
  [ -x /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || need+=(qemu-user-static)
  # mmdebstrap checks with it that the foreign architecture's programs run.
  command -v arch-test >/dev/null || need+=(arch-test)
fi
[ ${#need[@]} -eq 0 ] || { log "installing ${need[*]}"; apt_install "${need[@]}"; }

# ensure_binfmt: the kernel runs arm64 ELF files through qemu-user.
ensure_binfmt() {
  local dir=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir" ||
    die "no binfmt_misc at $dir (and it cannot be mounted): arm64 programs cannot run on this $host_arch host"
  [ -e "$dir/qemu-aarch64" ] && return 0
  [ -f "$conf" ] || die "$conf is missing (qemu-user-static installs it)"
  log "registering qemu-aarch64 with binfmt_misc ($conf)"
  cat "$conf" >"$dir/register" || die "cannot register $conf in $dir/register"
}
[ "$debarch" = "$host_arch" ] || ensure_binfmt

# The Debian suites this machine installs from (main, updates, security):
# one `deb URI SUITE main` line each. Backports and other vendors' sources
# are left out, so the image is plain bookworm.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || die "cannot tell the Debian release from /etc/os-release"
apt_lists_empty && apt_update_once
sources=$(apt-get indextargets --format '$(SITE) $(RELEASE)' 'Identifier: Packages' |
  awk -v c="$codename" '$2 == c || $2 == c "-updates" || $2 == c "-security" { print "deb " $1 " " $2 " main" }' |
  sort -u)
[ -n "$sources" ] || die "no apt source for $codename (main) on this machine (see /etc/apt/sources.list*)"
mapfile -t mirrors <<<"$sources"

guest_tool=$("$here/../build" "guest-tool$suffix")
mmdebstrap_version=$(mmdebstrap --version)
packages=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/packages" | tr -s ' \n' ',' | sed 's/,$//')
inputs_hash=$( { (cd "$here" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
                 sha256sum "$here/../lib.sh" "$guest_tool" | cut -d' ' -f1
                 echo "$sources"; echo "$mmdebstrap_version"; echo "size=$SIZE"
                 [ "$debarch" = amd64 ] || echo "arch=$debarch"; } | sha256sum | cut -c1-16)

# --- Kubernetes binaries (opt-in, online) ----------------------------------
k8s_dir=
if [ -n "$k8s_version" ]; then
  k8s_dir=$root_cache/kubernetes/$k8s_version$suffix
  fetch_k8s() {
    local bin=$1 url=$K8S_BASE_URL/$k8s_version/bin/linux/$debarch/$1 tmpf
    if [ -x "$k8s_dir/$bin" ] && [ -f "$k8s_dir/$bin.sha256" ]; then return 0; fi
    mkdir -p "$k8s_dir"
    tmpf=$(mktemp "$k8s_dir/.download.XXXXXX")
    log "downloading $url"
    if ! curl -fsSL --connect-timeout 5 --retry 2 -o "$tmpf.sha256" "$url.sha256" ||
       ! curl -fSL --connect-timeout 5 --retry 2 --progress-bar -o "$tmpf" "$url"; then
      rm -f "$tmpf" "$tmpf.sha256"
      rmdir "$k8s_dir" 2>/dev/null || true
      die "cannot download $url (no route to dl.k8s.io here?).
  The image without Kubernetes still works: guest-images/build node-rootfs.
  To add the binaries without dl.k8s.io, copy ${K8S_BINARIES[*]} for $k8s_version
  (linux/$debarch) and their .sha256 files (the hex digest) into $k8s_dir/
  and run this again."
    fi
    echo "$(tr -d ' \n' <"$tmpf.sha256")  $tmpf" | sha256sum -c --quiet - ||
      { rm -f "$tmpf" "$tmpf.sha256"; die "$url does not match its published sha256"; }
    chmod 0755 "$tmpf"
    mv "$tmpf.sha256" "$k8s_dir/$bin.sha256"
    mv "$tmpf" "$k8s_dir/$bin"
  }
  for bin in "${K8S_BINARIES[@]}"; do fetch_k8s "$bin"; done
  # Binaries put there by hand are checked too.
  for bin in "${K8S_BINARIES[@]}"; do
    echo "$(tr -d ' \n' <"$k8s_dir/$bin.sha256")  $k8s_dir/$bin" | sha256sum -c --quiet - ||
      die "$k8s_dir/$bin does not match $k8s_dir/$bin.sha256"
  done
  inputs_hash=$( { echo "$inputs_hash"; echo "kubernetes=$k8s_version"; cat "$k8s_dir"/*.sha256; } |
                 sha256sum | cut -c1-16)
fi

key=$inputs_hash
artifact=$cache/$key/node-rootfs.ext4
if [ -f "$artifact" ]; then
  log "cached (key $key)"
  echo "$artifact" >&3
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
if [ -f "$artifact" ]; then echo "$artifact" >&3; exit 0; fi
tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
log "mmdebstrap $codename $debarch (key $key): ${mirrors[*]}"
mmdebstrap --variant=minbase --mode=root --format=directory --architectures="$debarch" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --include="$packages" "$codename" "$tmp/root" "${mirrors[@]}" >&2
"$here/customize.sh" "$tmp/root" "$guest_tool" ${k8s_dir:+"$k8s_dir"}
chroot "$tmp/root" dpkg-query -W -f='${Package} ${Version}\n' >"$tmp/packages.txt"
mkdir "$tmp/out"
# Sparse: mke2fs writes only metadata and the files; the rest stays holes.
log "mke2fs -d ($SIZE, $(du -sm "$tmp/root" | cut -f1) MiB of files)"
mke2fs -q -F -t ext4 -L node-root -m 1 -d "$tmp/root" "$tmp/out/node-rootfs.ext4" "$SIZE"
mv "$tmp/packages.txt" "$tmp/out/packages.txt"
rm -rf "${cache:?}/$key"
mv -T "$tmp/out" "$cache/$key"
log "built in $(( $(date +%s) - start )) s: $artifact ($(du -m "$artifact" | cut -f1) MiB allocated of $SIZE)"
echo "$artifact" >&3
