#!/usr/bin/env bash
# Boot a mercury microVM on the default embedded images.
#
#   scripts/demo.sh          the no_std test guest, 2 vCPUs: checks SMP, ACPI,
#                            CPUID, memory and the boot timer, then powers off
#   scripts/demo.sh linux    the minimal Linux guest kernel + busybox
#                            initramfs, interactive shell on the console
#                            (needs hardware virtualization: real VT-x/SVM)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/setup.sh
cargo build --release -p launcher >&2
mercury=target/release/mercury
case "${1:-test-guest}" in
  test-guest)
    exec "$mercury" run --kernel "$(guest-images/build test-guest)" --vcpus 2 --memory 128 \
      --cmdline "console=ttyS0 checks=serial,cpuid,memory,smp,acpi,compute,timer,poweroff" ;;
  linux)
    exec "$mercury" run --kernel "$(guest-images/build linux-kernel)" \
      --initrd "$(guest-images/build initramfs)" --vcpus 2 --memory 256 \
      --cmdline "console=ttyS0 reboot=k panic=1 mercury.action=shell" ;;
  *) echo "usage: scripts/demo.sh [test-guest|linux]" >&2; exit 2 ;;
esac
