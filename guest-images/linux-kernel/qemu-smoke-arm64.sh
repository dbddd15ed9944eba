#!/usr/bin/env bash
# Boot the arm64 guest kernel (Image) + the arm64 initramfs, and the aarch64
# test guest, under qemu-system-aarch64 -M virt (TCG, no KVM needed) once per
# case and check what the guest reported on its console (the virt board's
# PL011, ttyAMA0).
# Not a mercury test: it checks the images themselves, as qemu-smoke.sh does
# for x86_64. Ends with "N passed, N failed"; exit status 1 if any failed.
#
#   guest-images/linux-kernel/qemu-smoke-arm64.sh [case ...]     (default: all)
#
# Logs: $MERCURY_CACHE/qemu-smoke-arm64/<case>.log
# shellcheck disable=SC2016 # commands typed into the guest are meant literally
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
images=$here/..
export MERCURY_CACHE=${MERCURY_CACHE:-$HOME/.cache/mercury}
logs=$MERCURY_CACHE/qemu-smoke-arm64
mkdir -p "$logs"
# shellcheck source=qemu-smoke-lib.sh
. "$here/qemu-smoke-lib.sh"

if ! command -v qemu-system-aarch64 >/dev/null; then
  echo "qemu-system-aarch64 missing: run scripts/setup.sh (it installs the pinned qemu-system-arm)" >&2
  exit 1
fi

image=$("$images/build" linux-kernel-arm64)
initramfs=$("$images/build" initramfs-arm64)
test_guest=$("$images/build" test-guest-arm64)
disk=$logs/disk.img
truncate -s 8M "$disk"

# run NAME EXPECTED_EXIT "QEMU ARGS" "CMDLINE EXTRA" PATTERN... [< stdin]
# Each PATTERN is an extended regex that must match a line of the console log.
# $kernel, if set, replaces the Linux Image.
run() {
  local name=$1 want_rc=$2 qargs=$3 extra=$4
  shift 4
  # shellcheck disable=SC2086 # qargs is a word list on purpose
  smoke_boot "$name" "$want_rc" qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -m 256 -nographic -no-reboot $qargs \
    -kernel "${kernel:-$image}" -initrd "$initramfs" \
    -append "console=ttyAMA0 panic=1 $extra"
  smoke_verdict "$name" "$@"
}

cases="poweroff-smp2 reboot devices test-guest"
for case in $cases; do
  selected "$@" || continue
  rm -f "$logs/$case.log"
  case $case in
    poweroff-smp2)  # PSCI CPU_ON for the second CPU, PSCI SYSTEM_OFF ends QEMU
      run "$case" 0 "-smp 2" "quiet mercury.action=poweroff" \
        '^MERCURY-GUEST INIT' "${info}2\$" '^MERCURY-GUEST ACTION poweroff' 'reboot: Power down' ;;
    reboot)         # PSCI SYSTEM_RESET; -no-reboot turns it into exit 0
      run "$case" 0 "-smp 1" "quiet mercury.action=reboot" \
        "${info}1\$" '^MERCURY-GUEST ACTION reboot' 'reboot: Restarting system' ;;
    devices)        # not quiet: the drivers' probe lines. GICv3, the arch timer,
      # PL031, and virtio-mmio blk + rng found through the FDT.
      run "$case" 0 \
        "-M virt,gic-version=3 -smp 2 -device virtio-rng-device -drive if=none,id=d0,format=raw,file=$disk -device virtio-blk-device,drive=d0" \
        "mercury.action=shell" \
        'GICv3: ' 'arch_timer: cp15 timer' 'rtc-pl031 [0-9a-f]+\.pl031: registered as rtc0' \
        'virtio_blk virtio[0-9]+: \[vda\]' '^RNG virtio_rng\.[0-9]+$' 'reboot: Power down' \
        < <(type_into_shell 'echo RNG $(cat /sys/class/misc/hw_random/rng_current)') ;;
    test-guest)     # the aarch64 no_std test guest (not Linux; the initrd is
      # ignored): its checks against what the virt board's FDT describes; no
      # boot timer there, so no timer check. SYSTEM_OFF ends QEMU.
      kernel=$test_guest run "$case" 0 "-smp 4" "checks=serial,memory,cpu,smp,compute expect_mib=256" \
        '^CHECK serial PASS uart=pl011 ' '^CHECK memory PASS mib=256 ' '^CHECK cpu PASS .* fdt_cpus=4 in_fdt=1 ' \
        '^CHECK smp PASS cpus=4 expected=4 ' '^CHECK compute PASS ' '^TEST-GUEST END' ;;
  esac
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
