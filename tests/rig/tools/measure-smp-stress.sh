#!/usr/bin/env bash
# Repeats `rig run smp-stress` until at least MIN_BOOTS mercury boots have
# run (an L1 failure ends an L1 run early), then prints the totals that
# docs/RIG.md's table records. Arguments after the name go to `rig run`:
#   tests/rig/tools/measure-smp-stress.sh 10.0-6.12 --l1-kernel linux-image-6.12.117+deb12-cloud-amd64-unsigned
# Environment: MIN_BOOTS (default 120), RIG (the rig binary; default: cargo
# run), OUT (directory for the per-run outputs; default
# $MERCURY_CACHE/rig/measure, MERCURY_CACHE defaulting to ~/.cache/mercury).
set -uo pipefail
name=${1:?usage: measure-smp-stress.sh NAME [rig run options...]}
shift
min=${MIN_BOOTS:-120}
out=${OUT:-${MERCURY_CACHE:-$HOME/.cache/mercury}/rig/measure}
mkdir -p "$out"
if [[ -n "${RIG:-}" ]]; then rig=("$RIG"); else rig=(cargo run -q -p mercury-rig --bin rig --); fi
mercury=0 mercury_failed=0 control=0 control_failed=0 l1_runs=0 l1_failures=0
while ((mercury < min)); do
  l1_runs=$((l1_runs + 1))
  log="$out/$name-$l1_runs.txt"
  "${rig[@]}" run smp-stress --quiet "$@" >"$log" 2>&1
  line=$(grep -m 1 '^boots: ' "$log") || { echo "measure: run $l1_runs printed no boots line: $log" >&2; exit 1; }
  # boots: mercury F failed of N, control-vmm F failed of N
  read -r mf mn cf cn < <(echo "$line" | awk '{
    for (i = 1; i <= NF; i++) {
      if ($i == "mercury") { m = $(i+1); mn = $(i+4) }
      if ($i == "control-vmm") { c = $(i+1); cn = $(i+4) }
    }
    gsub(",", "", mn); gsub(",", "", cn)
    print m+0, mn+0, c+0, cn+0 }')
  mercury=$((mercury + mn)) mercury_failed=$((mercury_failed + mf))
  control=$((control + cn)) control_failed=$((control_failed + cf))
  if grep -q 'the rig stopped L1 early' "$log"; then l1_failures=$((l1_failures + 1)); fi
  echo "measure: $name run $l1_runs: $line" | head -1
  grep -E '^  boot [0-9]+ |the rig stopped L1 early' "$log" | sed 's/^/    /'
done
echo "measure: $name: mercury $mercury_failed failed of $mercury boots, control-vmm $control_failed failed of $control, L1 runs $l1_runs, L1 stopped early $l1_failures"
