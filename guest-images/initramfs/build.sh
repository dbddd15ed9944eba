#!/usr/bin/env bash
# Build the busybox test initramfs and print its path on stdout (chatter goes
# to stderr).
#
#   build.sh initramfs   -> .../initramfs.cpio  (uncompressed newc)
#   build.sh initramfs-arm64 -> .../initramfs.cpio  the same for arm64 guests:
#                           busybox-static:arm64 and the aarch64 guest-tool
#
# Contents: Debian's busybox-static, /init = init.sh, /guest-test.sh (device
# tests), /bin/guest-tool (../guest-tool: vsock and TCP test peer), the
# device nodes and directories of initramfs.list and one symlink per busybox
# applet, written by mkcpio.py (deterministic, no root needed for the device
# nodes). Inputs hashed into the cache key: this script, init.sh,
# guest-test.sh, initramfs.list, mkcpio.py, the guest-tool binary and the
# busybox-static package version. Layout under
# $MERCURY_CACHE/initramfs/ (default ~/.cache/mercury):
#   src/busybox-static_<ver>_{amd64,arm64}.deb   the downloaded packages
#   <key>/initramfs.cpio                 present only when complete
set -euo pipefail

target=${1:-initramfs}
case "$target" in
  initramfs) debarch=amd64 arch=x86_64 ;;
  initramfs-arm64) debarch=arm64 arch=aarch64 ;;
  *) echo "usage: $0 initramfs|initramfs-arm64" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pkg=busybox-static
cache=${MERCURY_CACHE:-$HOME/.cache/mercury}/initramfs
log() { echo "initramfs: $*" >&2; }
# shellcheck source=../lib.sh
. "$here/../lib.sh"

ensure_tools() {
  local need=()
  command -v python3 >/dev/null || need+=(python3)
  command -v dpkg-deb >/dev/null || need+=(dpkg)
  command -v sha256sum >/dev/null || need+=(coreutils)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_install "${need[@]}"
  fi
}

tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

ensure_tools
ver=$(apt_candidate "$pkg")
# guest-tool or guest-tool-arm64, as the target is initramfs[-arm64].
guest_tool=$("$here/../guest-tool/build.sh" "guest-tool${target#initramfs}")
key=$( { sha256sum "$0" "$here/../lib.sh" "$here/init.sh" "$here/guest-test.sh" "$here/initramfs.list" "$here/mkcpio.py" "$guest_tool" | cut -d' ' -f1
         echo "$pkg=$ver"; [ "$arch" = x86_64 ] || echo "$arch"; } | sha256sum | cut -c1-16)
out=$cache/$key
artifact=$out/initramfs.cpio
if [ -f "$artifact" ]; then
  log "cached ($pkg $ver, key $key)"
  echo "$artifact"
  exit 0
fi

mkdir -p "$cache/src"
# The epoch ("1:") is not part of Debian's file names.
deb=$cache/src/${pkg}_${ver#*:}_amd64.deb
apt_fetch "$pkg" "$ver" "$deb"
# The host runs only the amd64 busybox, which lists the applets (the same
# Debian version has the same applets on every architecture).
lister_deb=$deb
if [ "$debarch" != amd64 ]; then
  deb=$cache/src/${pkg}_${ver#*:}_$debarch.deb
  apt_fetch "$pkg:$debarch" "$ver" "$deb"
fi

tmp=$(mktemp -d "$cache/.build.XXXXXX")
stage=$tmp/stage
mkdir -p "$stage/bin"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./bin/busybox >"$stage/bin/busybox"
chmod 0755 "$stage/bin/busybox"
mkdir "$tmp/lister"
dpkg-deb --fsys-tarfile "$lister_deb" | tar -xO ./bin/busybox >"$tmp/lister/busybox"
chmod 0755 "$tmp/lister/busybox"
cp "$here/init.sh" "$stage/init.sh"
cp "$here/guest-test.sh" "$stage/guest-test.sh"
# init.sh reads the architecture (the boot timer is found differently).
mkdir -p "$stage/etc"
echo "$arch" >"$stage/etc/mercury-arch"

list=$tmp/initramfs.list
cp "$guest_tool" "$stage/bin/guest-tool"
cp "$here/initramfs.list" "$list"
printf 'dir /etc 0755 0 0\nfile /etc/mercury-arch etc/mercury-arch 0644 0 0\n' >>"$list"
# One symlink per applet, to the absolute /bin/busybox (valid from any dir).
# (Debian's list names bin/busybox itself, which is the file, not a link.)
"$tmp/lister/busybox" --list-full | LC_ALL=C sort | while read -r applet; do
  [ "$applet" = bin/busybox ] || echo "slink /$applet /bin/busybox 0777 0 0"
done >>"$list"
grep -q '^slink /bin/sh ' "$list" || die "busybox lists no sh applet"

mkdir -p "$tmp/out"
python3 "$here/mkcpio.py" "$list" "$stage" "$tmp/out/initramfs.cpio"
cp "$list" "$tmp/out/initramfs.list"
echo "$pkg $ver" >"$tmp/out/source-version"
rm -rf "$out"
mv -T "$tmp/out" "$out"
log "built $artifact: $(stat -c %s "$artifact") bytes, $(grep -c '^slink' "$list") applet links"
echo "$artifact"
