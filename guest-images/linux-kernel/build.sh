#!/usr/bin/env bash
# Build the microVM guest kernel (x86_64, or arm64 cross-built) from Debian's
# linux-source-6.1 and print the path of one artifact on stdout (all chatter
# goes to stderr).
#
#   build.sh linux-kernel    -> .../vmlinux  (ELF, with the PVH entry note)
#   build.sh linux-bzimage   -> .../bzImage  (made by the same build)
#   build.sh linux-elf64     -> .../vmlinux-elf64  (vmlinux with its PVH note
#                               disabled by drop-pvh-note.py, so a VMM enters
#                               it through the Linux 64-bit boot protocol)
#   build.sh linux-kernel-acpi -> .../vmlinux of the same config without
#                               CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, as a
#                               distribution kernel may be: it finds its
#                               virtio devices through ACPI only
#   build.sh linux-kernel-config -> .../config: the .config the vmlinux above
#                               was built from (tests check node options in it)
#   build.sh linux-kernel-arm64 -> .../Image  (arm64 Image of
#                               microvm-aarch64.config, cross-built with
#                               gcc-aarch64-linux-gnu: ARCH=arm64
#                               CROSS_COMPILE=aarch64-linux-gnu-)
#   build.sh linux-kernel-arm64-config -> .../config of that Image
#
# The config fragment is microvm-x86_64.config or microvm-aarch64.config
# followed by kubernetes.config (what a node needs, the same on both).
# Inputs hashed into the cache key: this script, ../lib.sh, drop-pvh-note.py,
# the config fragment, the
# linux-source-6.1 package version and the compiler version. Layout under
# $MERCURY_CACHE/linux-kernel/ (default ~/.cache/mercury), for x86_64; arm64
# has the same layout under $MERCURY_CACHE/linux-kernel-arm64/ but for src/,
# which it shares with x86_64 (each architecture's clean-up below touches
# only its own kbuild trees):
#   src/linux-source-6.1_<ver>_all.deb   the downloaded package
#   src/linux-source-6.1_<ver>/          its unpacked tree (read-only; builds use O=)
#   obj-<ver>/                           kbuild output tree, reused between builds
# (src and obj of other versions are removed after a successful build)
#   <key>/{vmlinux,vmlinux-elf64,bzImage,config,...}   finished artifacts; present only when complete
#   <key>/{Image,config,System.map,...}                 the same for arm64
# Every step writes to a temporary name and renames, so an interrupted build
# never leaves something that looks finished. A lock (per architecture)
# serialises builds.
set -euo pipefail

target=${1:-linux-kernel}
case "$target" in
  linux-kernel|linux-bzimage|linux-elf64|linux-kernel-config) variant=default ;;
  linux-kernel-acpi) variant=acpi ;;
  linux-kernel-arm64|linux-kernel-arm64-config) variant=arm64 ;;
  *) echo "usage: $0 linux-kernel|linux-bzimage|linux-elf64|linux-kernel-config|linux-kernel-acpi|linux-kernel-arm64|linux-kernel-arm64-config" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
arch_fragment=$here/microvm-x86_64.config
# kbuild's ARCH and the cross-compiler prefix per variant.
arch=x86_64 cross=""
if [ "$variant" = arm64 ]; then
  arch_fragment=$here/microvm-aarch64.config
  arch=arm64 cross=aarch64-linux-gnu-
fi
pkg=linux-source-6.1
src_cache=${MERCURY_CACHE:-$HOME/.cache/mercury}/linux-kernel
cache=$src_cache
[ "$variant" = arm64 ] && cache=$src_cache-arm64
log() { echo "linux-kernel: $*" >&2; }
# shellcheck source=../lib.sh
. "$here/../lib.sh"

ensure_tools() {
  local need=()
  command -v make >/dev/null || need+=(make)
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  command -v flex >/dev/null || need+=(flex)
  command -v bison >/dev/null || need+=(bison)
  command -v bc >/dev/null || need+=(bc)
  command -v xz >/dev/null || need+=(xz-utils)
  command -v readelf >/dev/null || need+=(binutils)
  command -v perl >/dev/null || need+=(perl)
  command -v python3 >/dev/null || need+=(python3)
  command -v flock >/dev/null || need+=(util-linux)
  command -v sha256sum >/dev/null || need+=(coreutils)
  [ -e /usr/include/libelf.h ] || need+=(libelf-dev)     # objtool (ORC unwinder)
  [ -z "$cross" ] || command -v "${cross}gcc" >/dev/null || need+=(gcc-aarch64-linux-gnu)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_install "${need[@]}"
  fi
}

# Download (once) and unpack (once) the source tree of version $1 into $src.
fetch_source() {
  local ver=$1 deb tree
  deb=$src_cache/src/${pkg}_${ver}_all.deb
  tree=$src_cache/src/${pkg}_${ver}
  mkdir -p "$src_cache/src"
  apt_fetch "$pkg" "$ver" "$deb"
  if [ ! -f "$tree/Makefile" ]; then
    tmp=$(mktemp -d "$src_cache/src/.unpack.XXXXXX")
    log "unpacking $(basename "$deb")"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$pkg.tar.xz" | tar -xJ -C "$tmp" ||
      { rm -rf "$tmp"; die "cannot unpack $deb"; }
    rm -rf "$tree"
    mv "$tmp/$pkg" "$tree"
    rm -rf "$tmp"
  fi
  tmp=""
  src=$tree
}

# Fail unless every line of the fragment landed in .config ($1).
verify_config() {
  local config=$1 line sym bad=0
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=*)
        grep -qxF -- "$line" "$config" || {
          log "fragment option did not land: $line (.config: $(grep -E "^(# )?${line%%=*}[= ]" "$config" || echo absent))"
          bad=1; } ;;
      "# CONFIG_"*" is not set")
        sym=${line#\# }; sym=${sym%% *}
        if grep -q "^$sym=" "$config"; then
          log "fragment option did not land: $line (.config: $(grep "^$sym=" "$config"))"; bad=1
        fi ;;
    esac
  done < "$fragment"
  [ "$bad" -eq 0 ] || die "the config fragment does not apply cleanly to $pkg (see above)"
}

# Temporary directories live next to their final place (same file system, so
# the final rename is atomic); whatever is left of one on exit is removed.
tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

ensure_tools
fragment=$(mktemp)
trap '[ -z "$tmp" ] || rm -rf "$tmp"; rm -f "$fragment"' EXIT
cat "$arch_fragment" "$here/kubernetes.config" >"$fragment"
if [ "$variant" = acpi ]; then
  # The same fragment with the command-line device option turned off.
  grep -qx 'CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y' "$fragment" ||
    die "the fragment has no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y to turn off"
  sed -i 's/^CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y$/# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set/' \
    "$fragment"
fi
ver=$(apt_candidate "$pkg")
compiler=$("${cross}gcc" --version | head -n1)
key=$( { sha256sum "$0" "$here/../lib.sh" "$here/drop-pvh-note.py" "$fragment" | cut -d' ' -f1; echo "$pkg=$ver"; echo "$compiler"; } |
       sha256sum | cut -c1-16)
out=$cache/$key
case "$target" in
  linux-kernel|linux-kernel-acpi) artifact=$out/vmlinux ;;
  linux-bzimage) artifact=$out/bzImage ;;
  linux-elf64) artifact=$out/vmlinux-elf64 ;;
  linux-kernel-arm64) artifact=$out/Image ;;
  linux-kernel-config|linux-kernel-arm64-config) artifact=$out/config ;;
esac
if [ "$variant" = arm64 ]; then
  complete() { [ -f "$out/Image" ] && [ -f "$out/config" ]; }
else
  complete() { [ -f "$out/vmlinux" ] && [ -f "$out/vmlinux-elf64" ] && [ -f "$out/bzImage" ] && [ -f "$out/config" ]; }
fi

if complete; then
  log "cached ($pkg $ver, key $key)"
  echo "$artifact"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
# Another build may have finished this key while we waited for the lock.
if complete; then echo "$artifact"; exit 0; fi

start=$(date +%s)
fetch_source "$ver"
obj=$cache/obj-$ver
mkdir -p "$obj"
buildlog=$cache/build-$key.log
kmake() {
  # Reproducible version string; no host name or date baked in.
  nice -n 10 make -C "$src" O="$obj" ARCH="$arch" ${cross:+CROSS_COMPILE="$cross"} \
    KBUILD_BUILD_USER=mercury KBUILD_BUILD_HOST=mercury \
    KBUILD_BUILD_TIMESTAMP="$pkg $ver" "$@" >>"$buildlog" 2>&1 ||
    { tail -n 40 "$buildlog" >&2; die "make $* failed; full log: $buildlog"; }
}
: >"$buildlog"
log "configuring ($pkg $ver, key $key)"
kmake allnoconfig KCONFIG_ALLCONFIG="$fragment"
kmake olddefconfig
verify_config "$obj/.config"
log "building with $(nproc) jobs, log: $buildlog"
if [ "$variant" = arm64 ]; then
  kmake -j"$(nproc)" Image
  # The arm64 boot protocol's header: "ARM\x64" at offset 56.
  [ "$(dd if="$obj/arch/arm64/boot/Image" bs=1 skip=56 count=4 2>/dev/null | od -An -tx1 | tr -d ' ')" = 41524d64 ] ||
    die "arch/arm64/boot/Image has no arm64 Image header (magic ARM\\x64 at 56)"
else
  kmake -j"$(nproc)" vmlinux bzImage
  grep -q 'Xen.*0x00000012' <(readelf -n "$obj/vmlinux") ||
    die "vmlinux lacks the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"
fi

tmp=$(mktemp -d "$cache/.out.XXXXXX")
chmod 0755 "$tmp"
if [ "$variant" = arm64 ]; then
  cp "$obj/arch/arm64/boot/Image" "$tmp/Image"
else
  cp "$obj/vmlinux" "$tmp/vmlinux"
  python3 "$here/drop-pvh-note.py" "$tmp/vmlinux" "$tmp/vmlinux-elf64" ||
    die "cannot derive vmlinux-elf64"
  cp "$obj/arch/x86/boot/bzImage" "$tmp/bzImage"
fi
cp "$obj/.config" "$tmp/config"
cp "$obj/System.map" "$tmp/System.map"
echo "$pkg $ver" >"$tmp/source-version"
rm -rf "$out"
mv -T "$tmp" "$out"
tmp=""
# Source trees and kbuild trees of other versions are ~2 GB of dead weight.
for old in "$src_cache"/src/"${pkg}"_* "$cache"/obj-*; do
  case "$old" in
    "$src_cache/src/${pkg}_${ver}"|"$src_cache/src/${pkg}_${ver}_all.deb"|"$obj") ;;
    *) [ -e "$old" ] && { log "removing $old (not $pkg $ver)"; rm -rf "$old"; } ;;
  esac
done
if [ "$variant" = arm64 ]; then
  log "built in $(( $(date +%s) - start )) s: Image $(stat -c %s "$out/Image") bytes"
else
  log "built in $(( $(date +%s) - start )) s: vmlinux $(stat -c %s "$out/vmlinux") bytes, bzImage $(stat -c %s "$out/bzImage") bytes"
fi
echo "$artifact"
