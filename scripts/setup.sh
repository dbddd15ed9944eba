#!/usr/bin/env bash
# One-time (idempotent) host set-up for building and testing mercury:
# Debian packages and Rust targets. Safe to run again; installs only what is
# missing. Needs root for apt (CI and the dev machines run as root).
set -euo pipefail

# Debian packages: QEMU for the L1 rig (real KVM under emulated SVM),
# kernel build tools for the guest kernel, busybox for initramfs images,
# util-linux for setpriv (a test drops privileges), iproute2 for netns tests.
packages=(qemu-system-x86 flex bison libelf-dev bc cpio xz-utils busybox-static util-linux iproute2 python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Rust targets: the no_std test guest and the static mercury used in the rig.
for t in x86_64-unknown-none x86_64-unknown-linux-musl; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
done
