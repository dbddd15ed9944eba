#!/usr/bin/env bash
# Build the static guest-tool (x86_64-unknown-linux-musl) when its sources
# changed and print its path; chatter goes to stderr. Cached under
# $MERCURY_CACHE/guest-tool/<key>/ (key: a hash of this crate's files).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MERCURY_CACHE:-$HOME/.cache/mercury}/guest-tool
log() { echo "guest-tool: $*" >&2; }
exec 3>&1 1>&2
key=$(cd "$here" && sha256sum build.sh Cargo.toml Cargo.lock src/main.rs | sha256sum | cut -c1-16)
artifact=$cache/$key/guest-tool
if [ -x "$artifact" ]; then
  log "cached (key $key)"
  echo "$artifact" >&3
  exit 0
fi
rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
  || rustup target add x86_64-unknown-linux-musl
mkdir -p "$cache"
CARGO_TARGET_DIR=$cache/target cargo build --release --locked \
  --manifest-path "$here/Cargo.toml" --target x86_64-unknown-linux-musl
tmp=$(mktemp -d "$cache/.build.XXXXXX")
cp "$cache/target/x86_64-unknown-linux-musl/release/mercury-guest-tool" "$tmp/guest-tool"
rm -rf "${cache:?}/$key"
mv -T "$tmp" "$cache/$key"
log "built $artifact ($(stat -c %s "$artifact") bytes)"
echo "$artifact" >&3
