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
# as their own step rather than inside a test's timeout.
for image in test-guest test-guest-elf64 test-guest-bzimage; do
  echo "test: guest image $image: $(guest-images/build "$image")"
done
cargo test --workspace --exclude mercury-rig
cargo test -p mercury-rig -- --test-threads=1
