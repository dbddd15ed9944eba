#!/usr/bin/env bash
# Run every test: unit tests, the test-guest suite on this host's /dev/kvm,
# the CLI tests, and the Linux guest scenarios in the L1 rig (real KVM under
# emulated SVM). Set-up included; guest images are cached under
# $MERCURY_CACHE (default ~/.cache/mercury).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/setup.sh
# Build the guest images first so their (long, first-time) builds show up
# as their own step rather than inside a test's timeout. The Linux kernel
# takes ~4-5 min on 2 cores the first time (then it is cached by a hash of
# its inputs); its build prints its progress on stderr. The node root image
# (mmdebstrap from the Debian mirror) takes ~3 min the first time, the
# cross-built arm64 kernel about as long as the x86 one.
for image in test-guest test-guest-elf64 test-guest-bzimage test-guest-arm64 \
    linux-kernel linux-elf64 linux-bzimage linux-kernel-acpi initramfs guest-tool test-disk node-rootfs \
    linux-kernel-arm64 initramfs-arm64 guest-tool-arm64; do
  started=$SECONDS
  echo "test: guest image $image: building (or checking the cache)..."
  path=$(guest-images/build "$image")
  echo "test: guest image $image: $path ($((SECONDS - started)) s)"
done
cargo test --workspace --exclude mercury-rig
# arm64 (docs/ARM64.md): the workspace cross-builds, vmm-core's and the
# devices' unit tests run under qemu-user (.cargo/config.toml's runner),
# and the static aarch64 mercury the arm64 rig boots links.
cargo test --target aarch64-unknown-linux-gnu -p vmm-core -p devices
cargo build --target aarch64-unknown-linux-gnu -p launcher
cargo build --release --target aarch64-unknown-linux-musl -p launcher
cargo test -p mercury-rig -- --test-threads=1
# Every fuzz target for FUZZ_SECONDS (60) from its committed seeds.
bash scripts/fuzz.sh
