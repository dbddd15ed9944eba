#!/usr/bin/env bash
# Boot a mercury microVM on the default embedded images.
#
#   scripts/demo.sh          the no_std test guest, 2 vCPUs: checks SMP, ACPI,
#                            CPUID, memory and the boot timer, then powers off
#   scripts/demo.sh linux    the minimal Linux guest kernel + busybox
#                            initramfs, interactive shell on the console
#                            (needs hardware virtualization: real VT-x/SVM)
#   scripts/demo.sh cluster  examples/cluster.yaml brought up on this host:
#                            builds the Debian node image and the microVM
#                            kernel of this host's architecture, installs
#                            them under
#                            /var/lib/mercury/images, runs `mercury cluster
#                            up` and prints the node table (needs root and
#                            hardware virtualization; `mercury cluster down
#                            -f examples/cluster.yaml` removes it all)
#
# The same three on an arm64 host use the arm64 builds: test-guest-arm64
# (its checks: serial, cpu, smp, memory, timer, PSCI power-off),
# linux-kernel-arm64 with initramfs-arm64, and node-rootfs-arm64.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
case "$(uname -m)" in
  x86_64) arch= ;;
  aarch64) arch=-arm64 ;;
  *) echo "demo: mercury runs on x86_64 and aarch64 hosts, not $(uname -m)" >&2; exit 1 ;;
esac

# Can this host's KVM run a Linux kernel? Hardware virtualization loads
# kvm_intel or kvm_amd. A paravirtual KVM such as kvm_pvm (this project's
# own CI hosts) interprets guest kernel code and lacks instructions Linux
# uses, so a Linux guest dies early there: say so before building a kernel.
# arm64 KVM is built into the kernel and always uses the hardware's EL2.
linux_capable_kvm() {
  [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd || ( -n "$arch" && -c /dev/kvm ) ]]
}
if [[ "${1:-}" == linux || "${1:-}" == cluster ]] && ! linux_capable_kvm && [[ -z "${MERCURY_DEMO_FORCE:-}" ]]; then
  provider=$(ls -d /sys/module/kvm_* 2>/dev/null | xargs -r -n1 basename | paste -sd, -)
  cat >&2 <<EOF
demo: this host's /dev/kvm cannot boot a Linux guest: no hardware
demo: virtualization module (kvm_intel, kvm_amd) is loaded${provider:+; KVM comes from $provider}.
demo: Boot Linux guests in the L1 rig instead (a QEMU VM with a real KVM inside):
demo:   cargo run -p mercury-rig -- run linux-boot     (or: run cluster)
demo: (docs/RIG.md). MERCURY_DEMO_FORCE=1 tries anyway.
EOF
  exit 1
fi

bash scripts/setup.sh
cargo build --release -p launcher >&2
mercury=target/release/mercury
case "${1:-test-guest}" in
  test-guest)
    if [[ -z "$arch" ]]; then
      checks="console=ttyS0 checks=serial,cpuid,memory,smp,acpi,compute,timer,poweroff"
    else
      checks="checks=serial,cpu,smp,memory,timer"
    fi
    exec "$mercury" run --kernel "$(guest-images/build test-guest$arch)" --vcpus 2 --memory 128 \
      --cmdline "$checks expect_mib=128" ;;
  linux)
    # arm64: no console= (the kernel takes /chosen/stdout-path from the FDT).
    cmdline="panic=1 mercury.action=shell"
    [[ -n "$arch" ]] || cmdline="console=ttyS0 reboot=k $cmdline"
    exec "$mercury" run --kernel "$(guest-images/build linux-kernel$arch)" \
      --initrd "$(guest-images/build initramfs$arch)" --vcpus 2 --memory 256 \
      --cmdline "$cmdline" ;;
  cluster)
    images=/var/lib/mercury/images
    install -D -m 0644 "$(guest-images/build linux-kernel$arch)" "$images/node-kernel"
    node=$(guest-images/build node-rootfs$arch)
    # A sparse copy: the image is mostly holes.
    [[ "$images/node.ext4" -nt "$node" ]] || cp --sparse=always "$node" "$images/node.ext4"
    exec "$mercury" cluster up -f examples/cluster.yaml ;;
  *) echo "usage: scripts/demo.sh [test-guest|linux|cluster]" >&2; exit 2 ;;
esac
