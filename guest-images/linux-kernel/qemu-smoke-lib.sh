# The harness qemu-smoke.sh and qemu-smoke-arm64.sh share (sourced, not
# run): each case boots QEMU once with its console in $logs/<case>.log, and
# passes when its exit status and console are as expected. The caller sets
# $logs (an existing directory) and loops over its cases with $case set.
# shellcheck shell=bash
# shellcheck disable=SC2154 # $logs and $case are the caller's

passed=0
failed=0

# smoke_boot NAME WANT_RC QEMU-COMMAND...: runs the command (console and
# errors to NAME's log, bounded by 300 s) and records its exit status and
# start time for smoke_verdict.
smoke_boot() {
  local name=$1
  smoke_want_rc=$2
  shift 2
  smoke_start=$(date +%s.%N)
  timeout 300 "$@" >"$logs/$name.log" 2>&1 && smoke_rc=0 || smoke_rc=$?
}

# smoke_verdict NAME PATTERN...: after smoke_boot, the case passes if QEMU
# exited as wanted and each PATTERN (an extended regex) matches a line of
# the console log. Prints "ok NAME SECS" or "FAIL NAME log: PATH" and
# counts it in $passed or $failed.
smoke_verdict() {
  local name=$1 pat ok=1
  shift
  local log=$logs/$name.log
  for pat in "$@"; do
    grep -Eq -- "$pat" <(tr -d '\r' <"$log") || { echo "  $name: no line matches /$pat/" >&2; ok=0; }
  done
  [ "$smoke_rc" = "$smoke_want_rc" ] || { echo "  $name: QEMU exit status $smoke_rc, want $smoke_want_rc" >&2; ok=0; }
  if [ "$ok" = 1 ]; then
    passed=$((passed + 1))
    printf 'ok   %-22s %5.1f s\n' "$name" "$(echo "$(date +%s.%N) - $smoke_start" | bc)"
  else
    failed=$((failed + 1))
    printf 'FAIL %-22s log: %s\n' "$name" "$log"
  fi
}

# type_into_shell COMMAND: once the guest's shell is up (the case's log
# shows "ACTION shell"), type COMMAND, then exit. Feed a case's stdin from
# it: `< <(type_into_shell '...')`.
type_into_shell() {
  until grep -qs 'ACTION shell' "$logs/$case.log"; do sleep 1; done
  # One line at a time: typed ahead, the rest of the input can reach the
  # shell before it has run the first line.
  sleep 2; printf '%s\n' "$1"
  sleep 3; printf 'exit\n'
}

# selected [CASE...]: whether $case is among the cases named on the command
# line (all are when none is).
selected() { [ $# -eq 0 ] || [[ " $* " == *" $case "* ]]; }

# The line /init prints with the memory and CPUs it found; append nproc.
# shellcheck disable=SC2034 # used by the scripts that source this
info='MERCURY-GUEST INFO memtotal_kb=2[0-9]{5} nproc='
