#!/usr/bin/env bash
# One-time (idempotent) host set-up for building and testing mercury:
# Debian packages and Rust targets. Safe to run again; installs only what is
# missing or not at the pinned version. Needs root for apt (CI and the dev
# machines run as root). Expects Debian 12 (bookworm).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# The L1 rig's QEMU, pinned: QEMU 10.0 from bookworm-backports (docs/RIG.md,
# "The emulated host", has the measurements that chose it). The packages
# that must come from the same build are pinned with it.
BACKPORTS=bookworm-backports
BACKPORTS_SOURCES=/etc/apt/sources.list.d/mercury-bookworm-backports.sources
QEMU_VERSION='1:10.0.2+ds-2+deb13u1~bpo12+1'
SEABIOS_VERSION='1.16.3-2~bpo12+1'
pinned=(
  "qemu-system-x86=$QEMU_VERSION"
  "qemu-system-arm=$QEMU_VERSION"
  "qemu-system-common=$QEMU_VERSION"
  "qemu-system-data=$QEMU_VERSION"
  "seabios=$SEABIOS_VERSION"
)

# Other Debian packages: kernel build tools for the guest kernel, busybox
# for initramfs images, util-linux for setpriv (a test drops privileges),
# iproute2 for netns tests, xz-utils for the L1 kernel's .ko.xz modules,
# libssl-dev and pkg-config for git2's https (`mercury cluster reconcile
# --git`), musl-tools for the C in the static musl mercury (libgit2, zlib),
# mmdebstrap and e2fsprogs (mke2fs -d) for the node root image and the
# rig's scratch disks; dosfstools (fsck.vfat), openssl,
# iputils-ping and shellcheck for the cluster seed, secrets and join-bundle
# tests; acpica-tools for iasl (a vmm-core test disassembles the DSDT).
# The arm64 cross compiler and C library (for the arm64 guest kernel and the
# arm64 rig's static KVM probe) are installed further down.
# The python3-* libraries are the ones cloud-init's modules (below) import.
packages=(flex bison libelf-dev bc cpio xz-utils busybox-static util-linux iproute2 python3
  libssl-dev pkg-config musl-tools mmdebstrap e2fsprogs
  dosfstools openssl iputils-ping shellcheck acpica-tools
  python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema python3-netifaces
  python3-oauthlib python3-requests python3-serial python3-yaml)
# The aarch64 toolchain: a cross compiler on other hosts; on an arm64 host
# Debian's own gcc is aarch64-linux-gnu-gcc and its C library is native.
# (Tested on amd64 hosts; arm64 hosts are untested: docs/ARM64.md.)
host_arch=$(dpkg --print-architecture)
if [[ "$host_arch" == arm64 ]]; then
  aarch64_toolchain=(gcc libc6-dev libssl-dev)
else
  aarch64_toolchain=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross libc6:arm64 libssl-dev:arm64)
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [[ "$codename" != bookworm ]]; then
  echo "setup: this is Debian '${codename:-unknown}', not bookworm: the pinned packages may not exist" >&2
fi

updated=
apt_update() {
  [[ -n "$updated" ]] && return 0
  apt-get update -qq >&2
  updated=1
}

# bookworm-backports, on the same mirror as the machine's bookworm suites.
if ! grep -rqs --include='*.list' --include='*.sources' -E "^[^#]*\b$BACKPORTS\b" \
  /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "setup: adding $BACKPORTS ($BACKPORTS_SOURCES)" >&2
  cat >"$BACKPORTS_SOURCES" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $BACKPORTS
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_update
fi

# arm64 packages for the arm64 rig (its L1 kernel, busybox-static:arm64) are
# fetched with `apt-get download PKG:arm64`, which needs the architecture.
if [[ "$host_arch" != arm64 ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "setup: adding the dpkg architecture arm64" >&2
  dpkg --add-architecture arm64
  updated=
  apt_update
fi

# install_missing PACKAGE...: apt-get installs those not installed yet.
install_missing() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    apt_update
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}
install_missing "${packages[@]}"

stale=()
for spec in "${pinned[@]}"; do
  name=${spec%%=*} want=${spec#*=}
  have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  [[ "$have" == "install ok installed $want" ]] || stale+=("$spec")
done
if ((${#stale[@]})); then
  echo "setup: installing ${stale[*]} from $BACKPORTS" >&2
  apt_update
  if ! apt-get install -y -qq --no-install-recommends --allow-downgrades -t "$BACKPORTS" \
    "${pinned[@]}" >&2; then
    echo "setup: the pinned QEMU ($QEMU_VERSION) is not installable from $BACKPORTS;" \
      "see 'apt-cache policy qemu-system-x86' and update the pin in scripts/setup.sh" \
      "and docs/RIG.md together" >&2
    exit 1
  fi
fi

# Rust targets: the no_std test guest (x86_64 and aarch64) and the static
# mercury used in the rig.
for t in x86_64-unknown-none aarch64-unknown-none x86_64-unknown-linux-musl; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
done

# cloud-init's own Python modules, the version bookworm's node images run,
# unpacked (not installed: the service would run on this machine's next
# boot) for the cluster document tests, which check user-data against
# cloud-init's schema and render network-config with its networkd renderer.
CLOUD_INIT_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/mercury/cloud-init
cloud_init_version=$(apt-cache policy cloud-init 2>/dev/null | awk '/Candidate:/ {print $2}')
if [[ -n "$cloud_init_version" && "$cloud_init_version" != "(none)" &&
  "$(cat "$CLOUD_INIT_CACHE/VERSION" 2>/dev/null)" != "$cloud_init_version" ]]; then
  echo "setup: unpacking cloud-init $cloud_init_version into $CLOUD_INIT_CACHE" >&2
  download=$(mktemp -d)
  chmod 755 "$download" # apt downloads as _apt
  (cd "$download" && apt-get download -qq "cloud-init=$cloud_init_version" >&2)
  rm -rf "$CLOUD_INIT_CACHE"
  mkdir -p "$CLOUD_INIT_CACHE"
  dpkg -x "$download"/cloud-init_*.deb "$CLOUD_INIT_CACHE"
  echo "$cloud_init_version" >"$CLOUD_INIT_CACHE/VERSION"
  rm -rf "$download"
fi

# arm64 cross builds (docs/ARM64.md): gcc-aarch64-linux-gnu (with
# libc6-dev-arm64-cross) links both aarch64 targets, qemu-user-static runs
# their unit tests (the runner in .cargo/config.toml) on libc6:arm64, and
# libssl-dev:arm64 is the OpenSSL an aarch64 glibc build links (git2's
# https, when the launcher has it; .cargo/config.toml points pkg-config at
# it).
# (the arm64 dpkg architecture was added above)
install_missing "${aarch64_toolchain[@]}" qemu-user-static
for t in aarch64-unknown-linux-gnu aarch64-unknown-linux-musl; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
done
