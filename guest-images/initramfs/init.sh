#!/bin/busybox sh
# shellcheck shell=dash
# /init of the mercury test initramfs (busybox). Reports on the serial console
# with lines starting "MERCURY-GUEST ", then does what mercury.action= on the
# kernel command line asks: reboot (default), poweroff, shell, panic,
# powerbutton (busybox acpid powers off on the ACPI power button), or test
# (runs /guest-test.sh with mercury.test=<name>, then powers off, or reboots
# with mercury.end=reboot).

# Boot timer first, before anything else costs time: the VMM's boot-timer
# device at the start of the MMIO gap records the moment of this write.
# /dev/mem is a node in the cpio, so nothing has to be mounted before it.
# (x86_64 only; /etc/mercury-arch is written by build.sh, and `read` is a
# shell builtin, so this costs no process. aarch64: below, from the FDT.)
read -r arch </etc/mercury-arch
[ "$arch" = x86_64 ] && /bin/busybox devmem 0xd0000000 8 123

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
echo "MERCURY-GUEST INIT"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# aarch64: the boot timer is the device-tree node compatible
# "mercury,boot-timer" (its first reg cell pair is the address); without
# one there is nothing to write (an unmapped address would fault /init).
if [ "$arch" = aarch64 ]; then
  for node in /sys/firmware/devicetree/base/*; do
    if grep -qs 'mercury,boot-timer' "$node/compatible"; then
      addr=$(od -An -tx1 -N8 "$node/reg" | tr -d ' \n')
      [ -n "$addr" ] && devmem "0x$addr" 8 123
      break
    fi
  done
fi

memtotal_kb=unknown
while read -r key value _; do
  if [ "$key" = "MemTotal:" ]; then memtotal_kb=$value; break; fi
done </proc/meminfo

# Online CPUs from the kernel's list, e.g. "0-1,3" -> 3.
nproc=0
read -r online </sys/devices/system/cpu/online
IFS=,
for range in $online; do
  first=${range%-*}
  last=${range#*-}
  nproc=$((nproc + last - first + 1))
done
unset IFS
echo "MERCURY-GUEST INFO memtotal_kb=$memtotal_kb nproc=$nproc"

action=reboot
guest_test=none
test_end=poweroff
read -r cmdline </proc/cmdline
set -f  # split the command line into words, but never glob them
for word in $cmdline; do
  case "$word" in
    mercury.action=*) action=${word#mercury.action=} ;;
    mercury.test=*) guest_test=${word#mercury.test=} ;;
    mercury.end=*) test_end=${word#mercury.end=} ;;
  esac
done
set +f

echo "MERCURY-GUEST ACTION $action"
case "$action" in
  reboot)
    reboot -f ;;
  poweroff)
    poweroff -f ;;
  shell)
    # cttyhack puts the shell on the real console (ttyS0) so job control and
    # ^C work; setsid makes it a session leader with that controlling tty.
    setsid cttyhack sh
    poweroff -f ;;
  test)
    /bin/sh /guest-test.sh "$guest_test"
    echo "MERCURY-GUEST TEST-END $guest_test"
    # mercury.end=reboot for VMMs without ACPI power-off.
    if [ "$test_end" = reboot ]; then reboot -f; else poweroff -f; fi ;;
  powerbutton)
    # The guest side of the host's power button: the kernel's ACPI button
    # driver (CONFIG_ACPI_BUTTON, x86_64: input device "Power Button") or
    # gpio-keys on the PL061 line the FDT names (CONFIG_KEYBOARD_GPIO,
    # arm64: input device "gpio-keys") reports the press as KEY_POWER;
    # busybox acpid reads it from /dev/input/event* (CONFIG_INPUT_EVDEV)
    # and runs /etc/acpi/PWRF/00000080.
    mkdir -p /etc/acpi/PWRF
    printf '#!/bin/sh\necho "MERCURY-GUEST POWER-BUTTON pressed action=PWRF/00000080" >/dev/console\npoweroff -f\n' \
      >/etc/acpi/PWRF/00000080
    chmod 0755 /etc/acpi/PWRF/00000080
    button=none
    for name in /sys/class/input/input*/name; do
      [ -r "$name" ] || continue
      read -r device <"$name"
      case "$device" in "Power Button" | gpio-keys) button=${name%/name}; button=${button##*/} ;; esac
    done
    evdev=$(ls /dev/input 2>/dev/null | tr '\n' ',')
    evdev=${evdev%,}
    if [ "$button" = none ] || [ -z "$evdev" ]; then
      echo "MERCURY-GUEST ERROR no power button input device (button=$button evdev=$evdev)"
      poweroff -f
    fi
    # -d: in the foreground, its log on the console ("acpid: PWRF/00000080"
    # for each press it acts on).
    acpid -d -c /etc/acpi </dev/null &
    acpid=$!
    # Ready once acpid holds the input device open: from then on the guest
    # acts on a press.
    tries=0
    until ls -l /proc/$acpid/fd 2>/dev/null | grep -q /dev/input/event; do
      tries=$((tries + 1))
      if [ $tries -gt 100 ] || ! kill -0 $acpid 2>/dev/null; then
        echo "MERCURY-GUEST ERROR acpid did not open /dev/input/event*"
        poweroff -f
      fi
      sleep 0.1
    done
    echo "MERCURY-GUEST POWER-BUTTON ready input=$button evdev=$evdev acpid=$acpid"
    while :; do sleep 3600; done ;;
  panic)
    # A real panic ("sysrq triggered crash"); pvpanic tells the VMM.
    echo c >/proc/sysrq-trigger
    # Without sysrq: init exiting panics with "Attempted to kill init!".
    exit 1 ;;
  *)
    echo "MERCURY-GUEST ERROR unknown mercury.action=$action, rebooting"
    reboot -f ;;
esac
# reboot -f and poweroff -f do not return when they work.
echo "MERCURY-GUEST ERROR action $action did not end the VM"
exit 1
