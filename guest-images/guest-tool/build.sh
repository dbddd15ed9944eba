#!/usr/bin/env bash
# Build the static guest-tool when its sources changed and print its path;
# chatter goes to stderr.
#
#   build.sh guest-tool        x86_64-unknown-linux-musl
#   build.sh guest-tool-arm64  aarch64-unknown-linux-musl, linked by
#                              gcc-aarch64-linux-gnu (scripts/setup.sh)
#
# Cached under $MERCURY_CACHE/guest-tool/<key>/ (key: a hash of this crate's
# files and the target).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MERCURY_CACHE:-$HOME/.cache/mercury}/guest-tool
log() { echo "guest-tool: $*" >&2; }
exec 3>&1 1>&2
case "${1:-guest-tool}" in
  guest-tool) target=x86_64-unknown-linux-musl ;;
  guest-tool-arm64)
    target=aarch64-unknown-linux-musl
    # This crate is built from outside the repository's .cargo/config.toml,
    # so the cross linker is named here.
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc ;;
  *) echo "usage: $0 guest-tool|guest-tool-arm64" >&2; exit 2 ;;
esac
key=$( { cd "$here" && sha256sum build.sh Cargo.toml Cargo.lock src/main.rs
         [ "$target" = x86_64-unknown-linux-musl ] || echo "$target"; } | sha256sum | cut -c1-16)
artifact=$cache/$key/guest-tool
if [ -x "$artifact" ]; then
  log "cached ($target, key $key)"
  echo "$artifact" >&3
  exit 0
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
mkdir -p "$cache"
CARGO_TARGET_DIR=$cache/target cargo build --release --locked \
  --manifest-path "$here/Cargo.toml" --target "$target"
tmp=$(mktemp -d "$cache/.build.XXXXXX")
cp "$cache/target/$target/release/mercury-guest-tool" "$tmp/guest-tool"
rm -rf "${cache:?}/$key"
mv -T "$tmp" "$cache/$key"
log "built $artifact ($(stat -c %s "$artifact") bytes)"
echo "$artifact" >&3
