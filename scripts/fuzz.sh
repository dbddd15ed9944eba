#!/usr/bin/env bash
# Run every fuzz target for FUZZ_SECONDS (default 60) each, starting from
# its committed seed corpus (fuzz/seeds/<target>/). cargo-fuzz is installed
# if missing; the stable toolchain accepts its sanitizer flags with
# RUSTC_BOOTSTRAP=1 (these machines have no nightly). A crash, leak or
# timeout fails the run and leaves the input under fuzz/artifacts/.
#
#   scripts/fuzz.sh                 all targets, 60 s each
#   scripts/fuzz.sh virtio_mmio     one target
#   FUZZ_SECONDS=3600 scripts/fuzz.sh virtio_blk_request   a long campaign
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo/fuzz"
seconds=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo fuzz list)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  corpus=$work/$target
  mkdir -p "$corpus"
  if [ -d "seeds/$target" ]; then cp -r "seeds/$target/." "$corpus/"; fi
  echo "fuzz: $target for $seconds s (seeds: $(ls "$corpus" | wc -l))"
  cargo fuzz run "$target" "$corpus" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | grep -E 'DONE +cov|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|==[0-9]+==|SUMMARY|Test unit written|panicked' || true
  # cargo fuzz's own exit status is lost in the pipe above: check for a crash artifact.
  if compgen -G "artifacts/$target/*" >/dev/null; then
    echo "fuzz: $target FAILED: $(ls artifacts/"$target"/)" >&2
    exit 1
  fi
  echo "fuzz: $target ok"
done
