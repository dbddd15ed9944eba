#!/usr/bin/env bash
# Boot the guest kernel + initramfs under QEMU (TCG, no KVM needed) once per
# mercury.action and check what the guest reported on its serial console.
# Not a mercury test: it checks the images themselves, independently of the
# VMM. Ends with "N passed, N failed"; exit status 1 if any case failed.
#
#   guest-images/linux-kernel/qemu-smoke.sh [case ...]     (default: all)
#
# Logs: $MERCURY_CACHE/qemu-smoke/<case>.log
# shellcheck disable=SC2016 # commands typed into the guest are meant literally
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
images=$here/..
export MERCURY_CACHE=${MERCURY_CACHE:-$HOME/.cache/mercury}
logs=$MERCURY_CACHE/qemu-smoke
mkdir -p "$logs"
# shellcheck source=qemu-smoke-lib.sh
. "$here/qemu-smoke-lib.sh"

if ! command -v qemu-system-x86_64 >/dev/null; then
  [ -n "$(ls /var/lib/apt/lists/*_Packages* 2>/dev/null)" ] || apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2
fi

vmlinux=$("$images/build" linux-kernel)
bzimage=$("$images/build" linux-bzimage)
initramfs=$("$images/build" initramfs)
disk=$logs/disk.img
truncate -s 8M "$disk"

# run NAME EXPECTED_EXIT KERNEL "QEMU ARGS" "CMDLINE EXTRA" PATTERN... [< stdin]
# Each PATTERN is an extended regex that must match a line of the console log.
run() {
  local name=$1 want_rc=$2 kernel=$3 qargs=$4 extra=$5
  shift 5
  # shellcheck disable=SC2086 # qargs is a word list on purpose
  smoke_boot "$name" "$want_rc" qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot $qargs \
    -kernel "$kernel" -initrd "$initramfs" \
    -append "console=ttyS0 reboot=k panic=1 $extra"
  smoke_verdict "$name" "$@"
}

cases="bzimage-reboot pvh-default smp3-poweroff panic-pvpanic panic-reboot shell microvm-acpi"
for case in $cases; do
  selected "$@" || continue
  rm -f "$logs/$case.log"
  case $case in
    bzimage-reboot)   # bzImage, PC machine: reboot=k resets, -no-reboot exits 0
      run "$case" 0 "$bzimage" "-smp 2" "mercury.action=reboot" \
        '^MERCURY-GUEST INIT' "${info}2\$" '^MERCURY-GUEST ACTION reboot' 'reboot: Restarting system' ;;
    pvh-default)      # ELF vmlinux through the PVH entry note; no action = reboot
      run "$case" 0 "$vmlinux" "-smp 2" "" \
        '^MERCURY-GUEST INIT' "${info}2\$" '^MERCURY-GUEST ACTION reboot' 'reboot: Restarting system' ;;
    smp3-poweroff)    # ACPI S5 power-off on the PC machine; 3 CPUs counted
      run "$case" 0 "$vmlinux" "-smp 3" "mercury.action=poweroff" \
        "${info}3\$" '^MERCURY-GUEST ACTION poweroff' 'reboot: Power down' ;;
    panic-pvpanic)    # sysrq crash, reported through pvpanic (ACPI QEMU0001)
      run "$case" 1 "$bzimage" "-smp 2 -device pvpanic -action panic=exit-failure" "mercury.action=panic" \
        '^MERCURY-GUEST ACTION panic' 'Kernel panic - not syncing: sysrq triggered crash' ;;
    panic-reboot)     # without pvpanic: panic=1 reboots, -no-reboot exits 0
      run "$case" 0 "$bzimage" "-smp 2" "mercury.action=panic" \
        'Kernel panic - not syncing' 'Rebooting in 1 seconds' ;;
    shell)            # interactive shell on ttyS0, power-off when it exits
      run "$case" 0 "$bzimage" "-smp 2" "mercury.action=shell" \
        '^MERCURY-GUEST ACTION shell' '^SHELL-SAYS 42' 'reboot: Power down' \
        < <(type_into_shell 'echo SHELL-SAYS $((6 * 7))') ;;
    microvm-acpi)     # QEMU microvm: hardware-reduced ACPI (S5 power-off, UART IRQ from
      # the DSDT), virtio-mmio devices from the DSDT: blk and rng.
      # Under TCG there is no kvmclock and microvm has no HPET/PM timer, so
      # the TSC has no calibration reference: tell the kernel its frequency.
      run "$case" 0 "$vmlinux" \
        "-M microvm,acpi=on -smp 2 -device virtio-rng-device -drive if=none,id=d0,format=raw,file=$disk -device virtio-blk-device,drive=d0" \
        "mercury.action=shell tsc_early_khz=2400000" \
        "${info}2\$" 'virtio_blk virtio[0-9]+: \[vda\]' '^MERCURY-GUEST ACTION shell' \
        '^RNG virtio_rng\.[0-9]+$' 'ACPI: PM: Preparing to enter system sleep state S5' 'reboot: Power down' \
        < <(type_into_shell 'echo RNG $(cat /sys/class/misc/hw_random/rng_current)') ;;
  esac
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
