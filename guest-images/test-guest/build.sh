#!/usr/bin/env bash
# Build the no_std test guest (only when its inputs changed) and print the
# absolute path of the requested artifact on stdout; everything else goes to
# stderr.
#
#   build.sh test-guest          ELF with the PVH note (PVH entry)
#   build.sh test-guest-elf64    the same ELF without the PVH note (Linux 64-bit entry)
#   build.sh test-guest-bzimage  the same image wrapped as a bzImage (Linux 64-bit entry)
#
# One cargo build produces the ELF; tools/mkimage.py derives the other two
# from it, so all three share one binary layout. Cargo's target dir and the
# artifacts live under $MERCURY_CACHE/test-guest (default ~/.cache/mercury).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
target=x86_64-unknown-none

case "${1:-}" in
  test-guest) artifact=test-guest.elf ;;
  test-guest-elf64) artifact=test-guest-elf64.elf ;;
  test-guest-bzimage) artifact=test-guest.bzImage ;;
  *) echo "usage: $0 test-guest|test-guest-elf64|test-guest-bzimage" >&2; exit 2 ;;
esac

cache=${MERCURY_CACHE:-$HOME/.cache/mercury}/test-guest
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# Build chatter must not reach stdout, whatever the tools do.
exec 3>&1 1>&2

cd "$here"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi

# The guest's flags come from .cargo/config.toml (static relocation model);
# flags meant for host builds (e.g. when called from a build script or CI
# with RUSTFLAGS set) must not leak into it.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR
cargo build --release --locked --target "$target" --target-dir "$cache/target"

elf="$cache/target/$target/release/mercury-test-guest"
python3 "$here/tools/mkimage.py" "$1" "$elf" "$cache/$artifact"
echo "$cache/$artifact" >&3
