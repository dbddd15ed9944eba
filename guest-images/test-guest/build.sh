#!/usr/bin/env bash
# Build the no_std test guest (only when its inputs changed) and print the
# absolute path of the requested artifact on stdout; everything else goes to
# stderr.
#
#   build.sh test-guest          ELF with the PVH note (PVH entry)
#   build.sh test-guest-elf64    the same ELF without the PVH note (Linux 64-bit entry)
#   build.sh test-guest-bzimage  the same image wrapped as a bzImage (Linux 64-bit entry)
#   build.sh test-guest-arm64    the aarch64 guest as an arm64 Image (arm64 Linux boot
#                                protocol), built for aarch64-unknown-none
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
  test-guest-arm64) artifact=test-guest-arm64.Image target=aarch64-unknown-none ;;
  *) echo "usage: $0 test-guest|test-guest-elf64|test-guest-bzimage|test-guest-arm64" >&2; exit 2 ;;
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
if [ "$target" = aarch64-unknown-none ]; then
  # The Image is the ELF's loaded bytes from address 0 (the header) on.
  objcopy=aarch64-linux-gnu-objcopy
  command -v "$objcopy" >/dev/null || {
    echo "test-guest: $objcopy missing (Debian binutils-aarch64-linux-gnu; scripts/setup.sh installs it)" >&2
    exit 1
  }
  tmp=$(mktemp "$cache/.$artifact.XXXXXX")
  "$objcopy" -O binary "$elf" "$tmp"
  [ "$(od -An -tx1 -j56 -N4 "$tmp" | tr -d ' ')" = 41524d64 ] ||
    { rm -f "$tmp"; echo "test-guest: $tmp has no arm64 Image magic" >&2; exit 1; }
  if cmp -s "$tmp" "$cache/$artifact"; then rm -f "$tmp"; else mv "$tmp" "$cache/$artifact"; fi
else
  python3 "$here/tools/mkimage.py" "$1" "$elf" "$cache/$artifact"
fi
echo "$cache/$artifact" >&3
